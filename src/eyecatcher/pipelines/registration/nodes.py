"""Registration nodes: verify the chain, gate the selected candidate, register, promote.

``register_model`` reads as a recipe: verify the selected candidate (``chain``), read the
registry (the champion, its floor, ``comparison`` on the same unseen images), decide
(``plan``: the pure half, with ``gate``'s rules), then one MLflow step (create the version,
``staging``'s inference test, promotion under the lock); ``report`` words it. Every registry
call goes through :mod:`eyecatcher.registry`. See ``docs/registry.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import mlflow
import pandas as pd

from eyecatcher.fingerprints import seen_images
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.monitoring.baseline import record_monitoring_baseline
from eyecatcher.pipelines.registration.chain import verify_chain
from eyecatcher.pipelines.registration.comparison import compare_with_champion
from eyecatcher.pipelines.registration.gate import (
    Floor,
    GateFailedError,
    Served,
    floor_after_promotion,
)
from eyecatcher.pipelines.registration.plan import (
    RegistrationPlan,
    SelectedCandidate,
    plan_registration,
)
from eyecatcher.pipelines.registration.report import (
    explain,
    log_run_outcome,
    metrics,
)
from eyecatcher.pipelines.registration.settings import RegistrationSettings
from eyecatcher.pipelines.registration.shadow_period import fingerprint_of
from eyecatcher.pipelines.registration.staging import smoke_test
from eyecatcher.registry.lock import LockLostError
from eyecatcher.registry.versions import ChampionMovedError, Registry
from eyecatcher.serving_model.contract import ServingConfig
from eyecatcher.serving_model.decision import DecisionThresholds
from eyecatcher.serving_model.packaging import log_served_model

logger = logging.getLogger(__name__)

#: Outcomes that mean "this candidate did not become the champion" (CI fails on them).
REFUSED = {
    "rejected",
    "not_comparable",
    "smoke_test_failed",
    "champion_changed",
    "shadow_pending",
}


class RegistrationInputError(ValueError):
    """The upstream reports do not say what registration needs (candidate, threshold, ...)."""


def select_candidate(
    candidate_selection: Mapping[str, Any],
    quantization_decision: Mapping[str, Any],
    candidate_outputs: Mapping[str, Any],
    *,
    split_manifest: pd.DataFrame,
    quantization_params: Mapping[str, Any],
) -> SelectedCandidate:
    """The selected candidate's inputs, verified to come from one model, manifest and setting.

    Raises:
        RegistrationInputError: If the upstream reports are incomplete.
        StaleArtefactError: If an input was made from another model, manifest or settings.
    """
    name = candidate_selection.get("selected")
    if not name:
        raise RegistrationInputError(
            f"candidate_selection has no 'selected' candidate: {dict(candidate_selection)}"
        )
    evaluation = candidate_outputs.get(f"evaluation__{name}")
    bundle = candidate_outputs.get(f"bundle__{name}")
    if evaluation is None or bundle is None:
        known = sorted({k.split("__", 1)[1] for k in candidate_outputs})
        raise RegistrationInputError(
            f"selected candidate '{name}' is not among the pipeline's candidates {known}"
        )
    entry = quantization_decision.get("candidates", {}).get(name)
    if entry is None:
        raise RegistrationInputError(
            f"quantization_decision has no entry for the selected candidate '{name}'; "
            "rebuild it with: kedro run --pipelines quantization"
        )
    fingerprints = verify_chain(
        candidate=name,
        bundle=bundle,
        evaluation=evaluation,
        entry=entry,
        split_manifest=split_manifest,
        quantization_params=quantization_params,
    )
    served, thresholds, onnx_path = served_numbers(entry)
    return SelectedCandidate(
        name=name,
        evaluation=dict(evaluation),
        bundle=bundle,
        training_run=candidate_outputs.get(f"mlflow_run__{name}"),
        entry=entry,
        fingerprints=fingerprints,
        served=served,
        thresholds=thresholds,
        onnx_path=onnx_path,
    )


def served_numbers(entry: Mapping[str, Any]) -> tuple[Served, DecisionThresholds, str | None]:
    """The served model's test numbers, its calibrated thresholds and its ONNX file."""
    calibration = entry["calibration"]
    test = calibration["test"]
    served = Served(
        accuracy=float(test["accuracy"]),
        recall=float(test["recall"]),
        fpr=float(test["fpr"]),
        target_fpr=float(calibration["target_fpr"]),
        precision=entry["precision"],
        accuracy_ci=tuple(test["accuracy_ci"]),
        recall_ci=tuple(test["recall_ci"]),
        fpr_ci=tuple(test["fpr_ci"]),
    )
    thresholds = DecisionThresholds(
        review=float(calibration["operating_threshold"]),
        block={name: float(v["threshold"]) for name, v in calibration["block"].items()},
        calibrated_precision=calibration["precision"],
    )
    onnx_path = entry["int8"]["path"] if entry["precision"] == "int8" else None
    return served, thresholds, onnx_path


@contextmanager
def _registration_run() -> Iterator[mlflow.ActiveRun]:
    started = mlflow.active_run() is None
    run = mlflow.start_run(run_name="registration") if started else mlflow.active_run()
    try:
        yield run
    finally:
        if started:
            mlflow.end_run()


def register_model(
    candidate_selection: dict[str, Any],
    quantization_decision: dict[str, Any],
    split_manifest: pd.DataFrame,
    params: dict[str, Any],
    quantization_params: dict[str, Any],
    *,
    shadow_evidence: dict[str, Any] | None = None,
    image_phashes: pd.DataFrame | None = None,
    split_summary: dict[str, Any] | None = None,
    **candidate_outputs: Any,
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Verify, gate and register the selected candidate; promote it if nothing moved meanwhile.

    Args:
        candidate_selection: Training's ``candidate_selection``.
        quantization_decision: Quantization's decision (precision, calibration, test
            predictions and input fingerprints per candidate).
        split_manifest: The split manifest.
        params: The ``registration`` parameters.
        quantization_params: The ``quantization`` parameters (their hash must match the
            decision's: thresholds calibrated under other settings are stale).
        shadow_evidence: The shadow report batch scoring wrote (``None``: none yet); it
            matters only when ``registration.shadow.required``.
        image_phashes: Splitting's pHashes and ``split_summary`` its near-duplicate distance:
            seen images are recognised by them (``None``: exact copies only, said).
        **candidate_outputs: ``evaluation__<c>``, ``bundle__<c>``, ``mlflow_run__<c>``.

    Returns:
        The registration report (also logged to MLflow) and metrics for the run.

    Raises:
        RegistrationInputError: If the upstream reports are incomplete.
        StaleArtefactError: If an input was made from another model, manifest or settings.
    """
    settings = RegistrationSettings.from_params(params)
    candidate = select_candidate(
        candidate_selection,
        quantization_decision,
        candidate_outputs,
        split_manifest=split_manifest,
        quantization_params=quantization_params,
    )
    with _registration_run() as run:
        registry = Registry(settings.model_name)
        champion = registry.champion()
        recorded = registry.floor()
        plan = plan_registration(
            settings,
            candidate,
            run_id=run.info.run_id,
            champion=champion,
            floor=None if recorded is None else Floor(*recorded),
            comparison=_compare(champion, settings, candidate, split_manifest, image_phashes),
            shadow_evidence=shadow_evidence,
            version_fingerprint=fingerprint_of(registry.client, settings.model_name),
            split_manifest=split_manifest,
            candidate_selection=candidate_selection,
        )
        if plan.register:
            plan.report.update(
                _register_version(
                    registry,
                    settings,
                    plan,
                    candidate,
                    run_id=run.info.run_id,
                    split_manifest=split_manifest,
                    image_phashes=image_phashes,
                    split_summary=split_summary,
                )
            )
        report = _finish(plan)
        return report, metrics(report)


def _compare(
    champion: Any,
    settings: RegistrationSettings,
    candidate: SelectedCandidate,
    split_manifest: pd.DataFrame,
    image_phashes: pd.DataFrame | None,
) -> Any:
    """The champion re-scored on the candidate's unseen test images (see ``comparison``)."""
    return compare_with_champion(
        champion,
        model_name=settings.model_name,
        classes=candidate.bundle.classes,
        candidate_predictions=candidate.entry["test_predictions"],
        split_manifest=split_manifest,
        batch_size=settings.batch_size,
        storage_options=settings.storage_options,
        image_phashes=image_phashes,
    )


def _register_version(
    registry: Registry,
    settings: RegistrationSettings,
    plan: RegistrationPlan,
    candidate: SelectedCandidate,
    *,
    run_id: str,
    split_manifest: pd.DataFrame,
    image_phashes: pd.DataFrame | None,
    split_summary: dict[str, Any] | None,
) -> dict[str, Any]:
    """The MLflow step: create the version (the model logged into it), then stage and promote."""

    def log(model_id: str, version: str) -> None:
        log_served_model(
            bundle=candidate.bundle,
            config=ServingConfig(model_version=version, **plan.config),
            onnx_path=candidate.onnx_path,
            fp32_onnx_path=plan.fp32_onnx_path,
            model_id=model_id,
        )

    version = str(registry.create_version(run_id=run_id, tags=plan.tags, log=log).version)
    baseline = record_monitoring_baseline(
        registry.client,
        settings.model_name,
        version,
        split_manifest,
        image_phashes=image_phashes,
        split_summary=split_summary,
        batch_size=settings.batch_size,
        storage_options=settings.storage_options,
    )
    staged = _stage_and_promote(
        registry,
        settings,
        version=version,
        bundle=candidate.bundle,
        onnx_path=candidate.onnx_path,
        split_manifest=split_manifest,
        expected_champion=plan.report["previous_champion"],
        floor=plan.floor,
        accuracy=candidate.served.accuracy,
        shadow=plan.report["shadow"],
    )
    return {"monitoring_baseline": baseline, **staged}


def _finish(plan: RegistrationPlan) -> dict[str, Any]:
    """Explain the outcome, log it, record it on the run; return the report."""
    report = plan.report
    if report["outcome"] == "smoke_test_failed":
        problems = "; ".join(report["smoke_test"]["problems"])
        report["gate"]["passed"] = False
        report["gate"]["reasons"].append(f"staging inference test failed: {problems}")
        report["gate"]["summary"] = "failed: " + "; ".join(report["gate"]["reasons"])
    report["explanation"] = explain(report)
    (logger.info if report["outcome"] in {"registered", "unchanged"} else logger.warning)(
        "Registration: %s", report["explanation"]
    )
    for warning in plan.gate.warnings:
        logger.warning("Registration gate: %s", warning)
    log_run_outcome(report)
    return report


def _stage_and_promote(
    registry: Registry,
    settings: RegistrationSettings,
    *,
    version: str,
    bundle: ClassifierBundle,
    onnx_path: str | None,
    split_manifest: pd.DataFrame,
    expected_champion: str | None,
    floor: Floor | None,
    accuracy: float,
    shadow: dict[str, Any],
) -> dict[str, Any]:
    """Record the seen images, run the staging test, check the shadow period, then promote."""
    registry.record_seen_images(version, seen_images(split_manifest))
    registry.set_challenger(version)
    rows = split_manifest[split_manifest["split"] == "test"].sort_values("sha256")
    smoke = smoke_test(
        f"models:/{registry.model_name}/{version}",
        version=version,
        bundle=bundle,
        onnx_path=onnx_path,
        rows=rows.head(settings.smoke_test_images),
        storage_options=settings.storage_options,
    )
    outcome: dict[str, Any] = {"version": version, "smoke_test": smoke}
    registry.tag_version(
        version,
        "smoke_test",
        "passed" if smoke["passed"] else "failed: " + "; ".join(smoke["problems"]),
    )
    if not smoke["passed"]:
        return {**outcome, "outcome": "smoke_test_failed", "aliases": {"challenger": version}}
    if shadow["required"]:
        verdict = "met" if shadow["passed"] else "not met"
        registry.tag_version(
            version, "shadow_period", f"{verdict}: " + "; ".join(shadow["reasons"])
        )
    if not shadow["passed"]:
        registry.tag_version(version, "promotion", "not promoted: shadow period not met")
        return {**outcome, "outcome": "shadow_pending", "aliases": {"challenger": version}}
    raised = floor_after_promotion(floor, settings.gate, accuracy=accuracy, version=version)
    try:
        with registry.promotion_lock(
            version, wait_s=settings.lock_wait_s, stale_s=settings.lock_stale_s
        ) as lock:
            registry.promote(version, expected_champion=expected_champion, floor=raised, lock=lock)
    except (ChampionMovedError, LockLostError, TimeoutError) as exc:
        registry.tag_version(version, "promotion", f"not promoted: {exc}")
        return {
            **outcome,
            "outcome": "champion_changed",
            "aliases": {"challenger": version},
            "stopped": str(exc),
        }
    return {
        **outcome,
        "outcome": "registered",
        "aliases": {"champion": version},
        "accuracy_floor": raised.value,
    }


def enforce_gate(registration_report: dict[str, Any], params: dict[str, Any]) -> None:
    """Fail the run when the candidate did not become champion and CI asks for it.

    A separate node, so that the report and metrics are saved before the run fails.

    Raises:
        GateFailedError: When the outcome is a refusal (an unchanged champion is not) and
            ``gate.fail_run_on_failure`` is set.
    """
    settings = RegistrationSettings.from_params(params)
    if registration_report["outcome"] in REFUSED and settings.gate.fail_run_on_failure:
        raise GateFailedError(
            f"Registration of '{registration_report['candidate']}' "
            f"({registration_report['outcome']}): {registration_report['explanation']}"
        )


__all__ = ["RegistrationInputError", "enforce_gate", "register_model", "served_numbers"]
