"""Verifying that every artefact registration reads was made from the same model and data.

Each check recomputes a fingerprint from the artefact registration was given (the bundle, the
split manifest, the quantization settings) and compares it with what the downstream artefact
recorded. The first mismatch stops registration before anything is registered, naming the
stale artefact and the command that rebuilds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from eyecatcher import storage
from eyecatcher.fingerprints import (
    StaleArtefactError,
    bundle_fingerprint,
    check_link,
    config_hash,
    manifest_hash,
)
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.onnx_runtime import read_metadata

REBUILD_QUANTIZATION = "kedro run --pipelines quantization"
REBUILD_TRAINING = "kedro run --pipelines training,quantization"


def verify_chain(
    *,
    candidate: str,
    bundle: ClassifierBundle,
    evaluation: Mapping[str, Any],
    entry: Mapping[str, Any],
    split_manifest: pd.DataFrame,
    quantization_params: Mapping[str, Any],
) -> dict[str, str]:
    """Check bundle → evaluation, bundle/manifest/config → quantization decision → ONNX file.

    Args:
        candidate: The selected candidate.
        bundle: Its model bundle, as loaded now.
        evaluation: Its evaluation report.
        entry: Its entry in the quantization decision.
        split_manifest: The split manifest, as loaded now.
        quantization_params: The ``quantization`` parameters of this run.

    Returns:
        The verified fingerprints (``bundle``, ``split_manifest``, ``quantization_config``).

    Raises:
        StaleArtefactError: Naming the first stale artefact and how to rebuild it.
    """
    actual = {
        "bundle": bundle_fingerprint(bundle),
        "split_manifest": manifest_hash(split_manifest),
        "quantization_config": config_hash(quantization_params),
    }
    _check_evaluation(candidate, bundle, evaluation, actual)
    decision = f"quantization_decision (candidate '{candidate}')"
    _check_decision(decision, entry, actual)
    if entry.get("precision") == "int8":
        _check_int8_file(decision, entry, actual)
    return actual


def _check_evaluation(
    candidate: str,
    bundle: ClassifierBundle,
    evaluation: Mapping[str, Any],
    actual: Mapping[str, str],
) -> None:
    """The evaluation describes this bundle (classes, architecture, fingerprint)."""
    shape = {"classes": list(bundle.classes), "architecture": bundle.architecture}
    for key, value in shape.items():
        if key in evaluation and evaluation[key] != value:
            raise StaleArtefactError(
                f"{candidate}.evaluation",
                f"it describes {key} {evaluation[key]}, the bundle has {value}",
                REBUILD_TRAINING,
            )
    recorded = evaluation.get("fingerprints") or {}
    if "bundle" in recorded:
        check_link(
            f"{candidate}.evaluation",
            "model bundle",
            recorded["bundle"],
            actual["bundle"],
            REBUILD_TRAINING,
        )


def _check_decision(decision: str, entry: Mapping[str, Any], actual: Mapping[str, str]) -> None:
    """The quantization decision was made from this bundle, manifest and settings."""
    fingerprints = entry.get("fingerprints") or {}
    for field, key in (
        ("model bundle", "bundle"),
        ("split manifest", "split_manifest"),
        ("quantization settings", "quantization_config"),
    ):
        check_link(decision, field, fingerprints.get(key), actual[key], REBUILD_QUANTIZATION)
    calibration = entry.get("calibration") or {}
    if calibration.get("precision") != entry.get("precision"):
        raise StaleArtefactError(
            decision,
            f"its thresholds were calibrated at {calibration.get('precision')!r}, but it serves "
            f"{entry.get('precision')!r}",
            REBUILD_QUANTIZATION,
        )


def _check_int8_file(decision: str, entry: Mapping[str, Any], actual: Mapping[str, str]) -> None:
    """The int8 ONNX file exists and its metadata names the same three fingerprints."""
    path = (entry.get("int8") or {}).get("path")
    if not path or not storage.exists(str(path)):
        raise StaleArtefactError(
            decision, f"its int8 ONNX file {path!r} does not exist", REBUILD_QUANTIZATION
        )
    metadata = read_metadata(path)
    for field, key, name in (
        ("model bundle", "bundle_fingerprint", "bundle"),
        ("split manifest", "split_manifest_hash", "split_manifest"),
        ("quantization settings", "quantization_config_hash", "quantization_config"),
    ):
        check_link(str(path), field, metadata.get(key), actual[name], REBUILD_QUANTIZATION)
