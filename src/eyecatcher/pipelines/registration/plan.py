"""What registration will do, decided without touching MLflow: the pure half of ``register_model``.

:func:`plan_registration` takes what was read (the verified candidate, the champion, the floor,
the champion comparison, the shadow evidence) and returns a :class:`RegistrationPlan`: the
report so far, the gate's decision, and, when a version is to be created, its tags and served
configuration. The node then runs one MLflow step on it (create, stage, promote).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.pipelines.registration.gate import (
    ChampionComparison,
    Floor,
    GateDecision,
    Served,
    decide,
)
from eyecatcher.pipelines.registration.lineage import model_fingerprint
from eyecatcher.pipelines.registration.report import FINGERPRINT_TAG, lineage_tags
from eyecatcher.pipelines.registration.settings import RegistrationSettings
from eyecatcher.pipelines.registration.shadow_period import shadow_status
from eyecatcher.serving_model.decision import DecisionThresholds


@dataclass(frozen=True)
class SelectedCandidate:
    """The candidate to register, its inputs verified (``verify_chain``)."""

    name: str
    evaluation: dict[str, Any]
    bundle: ClassifierBundle
    training_run: dict[str, Any] | None
    entry: dict[str, Any]
    fingerprints: dict[str, Any]
    served: Served
    thresholds: DecisionThresholds
    onnx_path: str | None


@dataclass
class RegistrationPlan:
    """The decision: the report so far and, when ``register``, what the new version gets.

    Attributes:
        report: The registration report (outcome set unless a version is to be made).
        gate: The gate's decision (its warnings are logged at the end).
        register: Whether a version is created (then staged and maybe promoted).
        tags: The new version's tags.
        config: ``ServingConfig`` arguments, all but the version number.
        fp32_onnx_path: The fp32 ONNX graph an fp32 model may serve through.
        floor: The floor the gate used (raised on promotion).
    """

    report: dict[str, Any]
    gate: GateDecision
    register: bool
    tags: dict[str, str]
    config: dict[str, Any]
    fp32_onnx_path: str | None
    floor: Floor | None


def served_config(settings: RegistrationSettings, candidate: SelectedCandidate) -> dict[str, Any]:
    """The served model's configuration (``ServingConfig`` arguments but the version)."""
    return {
        "model_name": settings.model_name,
        "candidate": candidate.name,
        "precision": candidate.served.precision,
        "classes": list(candidate.bundle.classes),
        "safe_class": candidate.bundle.safe_class,
        "thresholds": candidate.thresholds,
        "operating_threshold": candidate.thresholds.review,
        **vars(settings.serving),
    }


def plan_registration(
    settings: RegistrationSettings,
    candidate: SelectedCandidate,
    *,
    run_id: str,
    champion: ModelVersion | None,
    floor: Floor | None,
    comparison: ChampionComparison,
    shadow_evidence: Mapping[str, Any] | None,
    version_fingerprint: Callable[[str], str | None],
    split_manifest: pd.DataFrame,
    candidate_selection: Mapping[str, Any],
) -> RegistrationPlan:
    """Gate the candidate and decide: refuse, keep the unchanged champion, or register.

    Reads nothing itself but through ``version_fingerprint`` (a version's fingerprint tag,
    asked only when the shadow period needs it).
    """
    config = served_config(settings, candidate)
    gate = decide(candidate.served, settings.gate, comparison, floor)
    gate.warnings.extend(candidate.entry["calibration"].get("warnings") or [])
    fingerprint = model_fingerprint(
        {**vars(candidate.bundle), "metadata": None},
        {**config, "thresholds": candidate.thresholds.to_dict()},
        candidate.onnx_path,
    )
    report: dict[str, Any] = {
        "model_name": settings.model_name,
        "candidate": candidate.name,
        "precision": candidate.served.precision,
        "gate": gate.to_dict(),
        "previous_champion": str(champion.version) if champion else None,
        "version": None,
        "aliases": {},
        "thresholds": candidate.thresholds.to_dict(),
        "calibration": candidate.entry["calibration"],
        "fingerprints": candidate.fingerprints,
        "run_id": run_id,
        "shadow": shadow_status(
            settings.shadow.period(),
            shadow_evidence,
            fingerprint=fingerprint,
            champion=champion,
            version_fingerprint=version_fingerprint,
        ),
    }
    plan = RegistrationPlan(report, gate, False, {}, config, None, floor)
    if not gate.passed:
        report["outcome"] = (
            "not_comparable" if comparison.method == "not_comparable" else "rejected"
        )
        return plan
    if champion is not None and champion.tags.get(FINGERPRINT_TAG) == fingerprint:
        report["outcome"] = "unchanged"
        report["aliases"] = {"champion": str(champion.version)}
        return plan
    plan.register = True
    plan.tags = lineage_tags(
        candidate=candidate.name,
        bundle=candidate.bundle,
        entry=candidate.entry,
        fingerprints=candidate.fingerprints,
        split_manifest=split_manifest,
        gate=gate,
        settings=settings.gate,
        run_id=run_id,
        training_run=candidate.training_run,
        selection=candidate_selection,
    )
    plan.tags[FINGERPRINT_TAG] = fingerprint
    if gate.warnings and comparison.method == "not_comparable":
        plan.tags["class_change_approved"] = "true"
    # An fp32 champion serves through the fp32 ONNX graph quantization exported, if packaging
    # finds it agrees with PyTorch (else PyTorch, said and recorded).
    fp32 = candidate.entry.get("fp32") or {}
    plan.fp32_onnx_path = fp32.get("path") if fp32.get("format") == "onnx" else None
    return plan
