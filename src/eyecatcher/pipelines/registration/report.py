"""What a registration records: version tags, run tags and metrics, from one report."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from eyecatcher import mlflow_log
from eyecatcher.fingerprints import manifest_hash
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.pipelines.registration.gate import GateDecision, GateSettings
from eyecatcher.pipelines.registration.lineage import git_commit, label_sources

#: Version tag holding the test split's hash.
TEST_SPLIT_TAG = "test_split_hash"
FINGERPRINT_TAG = "model_fingerprint"


def lineage_tags(
    *,
    candidate: str,
    bundle: ClassifierBundle,
    entry: Mapping[str, Any],
    fingerprints: Mapping[str, str],
    split_manifest: pd.DataFrame,
    gate: GateDecision,
    settings: GateSettings,
    run_id: str,
    training_run: Mapping[str, Any] | None,
    selection: Mapping[str, Any],
) -> dict[str, str]:
    """The tags of a new version: code, data, model, precision, thresholds and the gate."""
    commit, dirty = git_commit(Path.cwd())
    calibration = entry["calibration"]
    test = calibration["test"]
    served = entry["int8"] if entry["precision"] == "int8" else entry["fp32"]
    tags: dict[str, Any] = {
        "git_commit": commit,
        "git_dirty": "unknown" if dirty is None else str(dirty).lower(),
        "data_manifest_hash": fingerprints["split_manifest"],
        TEST_SPLIT_TAG: manifest_hash(split_manifest, "test"),
        "bundle_fingerprint": fingerprints["bundle"],
        "quantization_config_hash": fingerprints["quantization_config"],
        "parent_run_id": run_id,
        "training_run_id": (training_run or {}).get("run_id", "unknown"),
        "candidate": candidate,
        "architecture": bundle.architecture,
        "weights_source": bundle.weights_source,
        "classes": ",".join(bundle.classes),
        "selection": f"{selection.get('metric')}: {selection.get('reason')}",
        "quantization_precision": entry["precision"],
        "quantization_reason": entry.get("reason") or "",
        "test_accuracy": test["accuracy"],
        "test_accuracy_ci95": json.dumps(test["accuracy_ci"]),
        "test_accuracy_fp32": entry["fp32"].get("accuracy"),
        "test_macro_f1": served.get("macro_f1"),
        "threshold_calibrated_precision": calibration["precision"],
        "threshold_calibrated_on": calibration["calibrated_on"],
        "operating_threshold": calibration["operating_threshold"],
        "target_fpr": calibration["target_fpr"],
        "block_thresholds": json.dumps(
            {k: v["threshold"] for k, v in calibration["block"].items()}
        ),
        "test_recall_at_threshold": test["recall"],
        "test_recall_ci95": json.dumps(test["recall_ci"]),
        "test_fpr_at_threshold": test["fpr"],
        "test_fpr_ci95": json.dumps(test["fpr_ci"]),
        "gate_min_test_accuracy": settings.min_test_accuracy,
        "gate_accuracy_floor": gate.checks.get("accuracy_floor"),
        "gate_max_regression_vs_champion": settings.max_regression_vs_champion,
        "gate_champion_version": gate.checks.get("champion_version") or "none",
        "gate_champion_accuracy": gate.checks.get("champion_accuracy"),
        "gate_champion_comparison": gate.checks.get("champion_comparison"),
        "gate_paired_images": gate.checks.get("paired_images"),
        "gate_paired_images_excluded": gate.checks.get(
            "paired_images_excluded_as_seen_by_champion"
        ),
        "gate_mcnemar_p_value": gate.checks.get("mcnemar_p_value"),
        "gate_summary": gate.summary,
    }
    sources = label_sources(split_manifest)
    if sources is not None:
        tags["label_sources"] = sources
    if bundle.weights_source == "random":
        tags["warning"] = "RANDOM WEIGHTS: the backbone was randomly initialised"
    if gate.warnings:
        tags["gate_warnings"] = "; ".join(gate.warnings)
    return {k: str(v)[:5000] for k, v in tags.items()}


def explain(report: Mapping[str, Any]) -> str:
    """The outcome in plain sentences, for the console, the report and the run tag."""
    gate = report["gate"]
    name, candidate = report["model_name"], report["candidate"]
    outcome = report["outcome"]
    if outcome == "registered":
        head = f"Registered {name} v{report['version']} (candidate {candidate}) as champion."
    elif outcome == "unchanged":
        head = f"Candidate {candidate} is what champion v{report['previous_champion']} serves."
    elif outcome == "champion_changed":
        head = f"{name} v{report['version']} was registered but NOT promoted: {report['stopped']}."
    elif outcome == "shadow_pending":
        head = (
            f"{name} v{report['version']} was registered as challenger but NOT promoted: its "
            "shadow period is not met (" + "; ".join(report["shadow"]["reasons"]) + ")."
        )
    elif outcome == "smoke_test_failed":
        head = f"{name} v{report['version']} stays challenger: its staging test failed."
    else:
        head = f"Candidate {candidate} was refused ({outcome}); nothing registered."
    why = "It failed because: " + "; ".join(gate["reasons"]) + "." if gate["reasons"] else ""
    passed = gate["checks"].get("passed_checks") or []
    ok = "Checks passed: " + "; ".join(passed) + "." if passed else ""
    return " ".join(part for part in (head, why, ok) if part)


def log_run_outcome(report: Mapping[str, Any]) -> None:
    """Tags on the ``kedro run``'s MLflow run, so the run list says what happened."""
    tags = {
        "registration.outcome": report["outcome"],
        "registration.gate": "passed" if report["gate"]["passed"] else "failed",
        "registration.gate_summary": report["gate"]["summary"][:5000],
        "registration.explanation": report["explanation"][:5000],
        "registration.candidate": report["candidate"],
        "registration.model_name": report["model_name"],
    }
    if report.get("version"):
        tags["registration.model_version"] = str(report["version"])
    if report["gate"]["warnings"]:
        tags["registration.warnings"] = "; ".join(report["gate"]["warnings"])[:5000]
    mlflow_log.set_tags(tags)


def metrics(report: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The run's ``registration.*`` metrics (finite numbers only)."""
    checks = report["gate"]["checks"]
    values = {
        "test_accuracy": checks["test_accuracy"],
        "accuracy_floor": checks["accuracy_floor"],
        "min_test_accuracy": checks["min_test_accuracy"],
        "test_unsafe_recall": checks["test_unsafe_recall"],
        "test_fpr": checks["test_fpr"],
        "champion_accuracy": checks["champion_accuracy"],
        "mcnemar_p_value": checks["mcnemar_p_value"],
        "gate_passed": float(report["gate"]["passed"]),
        "registered": float(report["outcome"] == "registered"),
    }
    shadow = report.get("shadow") or {}
    if shadow.get("required"):
        values["shadow_period_passed"] = float(shadow["passed"])
    return {
        k: {"value": float(v), "step": 0}
        for k, v in values.items()
        if v is not None and math.isfinite(float(v))
    }
