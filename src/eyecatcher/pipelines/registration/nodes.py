"""Registration nodes: gate the selected candidate, register it, move the champion alias.

The registry is MLflow's (``MlflowClient``: kedro-mlflow's registry dataset is load-only). One
node does the registry work because its steps must happen in order against a live store; its
report and metrics are node outputs routed to MLflow by the catalog. See ``docs/registry.md``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from tqdm.auto import tqdm

from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.pipelines.registration.gate import (
    ChampionComparison,
    GateDecision,
    GateFailedError,
    GateSettings,
    decide,
)
from eyecatcher.pipelines.registration.lineage import (
    git_commit,
    manifest_hash,
    model_fingerprint,
)
from eyecatcher.preprocessing import bytes_to_batch
from eyecatcher.serving_model.contract import DecisionThresholds, ServingConfig, encode_image
from eyecatcher.serving_model.packaging import log_served_model
from eyecatcher.storage import read_bytes

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Version tag holding the gate accuracy, reused when a later candidate has the same test split.
ACCURACY_TAG = "test_accuracy"
TEST_SPLIT_TAG = "test_split_hash"
FINGERPRINT_TAG = "model_fingerprint"


class RegistrationInputError(ValueError):
    """The upstream reports do not say what registration needs (candidate, threshold, ...)."""


def _selected_candidate(
    candidate_selection: Mapping[str, Any], candidate_outputs: Mapping[str, Any]
) -> tuple[str, dict[str, Any], ClassifierBundle, dict[str, Any] | None]:
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
    return name, dict(evaluation), bundle, candidate_outputs.get(f"mlflow_run__{name}")


def _served_precision(
    quantization_decision: Mapping[str, Any], candidate: str, evaluation: Mapping[str, Any]
) -> dict[str, Any]:
    """Precision, ONNX path and the test accuracy of what will actually be served."""
    entry = quantization_decision.get("candidates", {}).get(candidate)
    if entry is None:
        raise RegistrationInputError(
            f"quantization_decision has no entry for the selected candidate '{candidate}'"
        )
    precision = entry.get("precision")
    fp32_accuracy = evaluation["test"]["accuracy"]
    if precision == "fp32":
        return {
            "precision": "fp32",
            "onnx_path": None,
            "accuracy": fp32_accuracy,
            "fp32_accuracy": fp32_accuracy,
            "reason": entry.get("reason"),
        }
    if precision != "int8":
        raise RegistrationInputError(
            f"quantization_decision gives precision {precision!r} for '{candidate}'"
        )
    int8 = entry.get("int8") or {}
    onnx_path = int8.get("path") or entry.get("model_path")
    if not onnx_path or not Path(onnx_path).is_file():
        raise RegistrationInputError(
            f"quantization chose int8 for '{candidate}' but its ONNX file {onnx_path!r} "
            "does not exist"
        )
    accuracy = int8.get("accuracy")
    if accuracy is None:
        raise RegistrationInputError(f"quantization_decision has no int8 accuracy for {candidate}")
    return {
        "precision": "int8",
        "onnx_path": onnx_path,
        # The int8 model is what will answer requests: its own test accuracy is gated.
        "accuracy": float(accuracy),
        "fp32_accuracy": fp32_accuracy,
        "reason": entry.get("reason"),
        "int8_method": entry.get("int8_method"),
    }


def decision_thresholds(
    decision: Mapping[str, Any], operating_threshold: float | None
) -> tuple[DecisionThresholds, list[str]]:
    """Resolve the ``decision`` parameters against the calibrated operating threshold.

    Args:
        decision: ``review_threshold`` and ``block_threshold``: a number in [0, 1] or the
            string ``operating`` (training's threshold calibrated on validation).
        operating_threshold: From the candidate's evaluation.

    Returns:
        The thresholds, and warnings about anything that was adjusted.

    Raises:
        RegistrationInputError: If ``operating`` is asked for and there is no finite
            calibrated threshold.
    """
    warnings: list[str] = []

    def resolve(key: str) -> float:
        value = decision[key]
        if value == "operating":
            if operating_threshold is None or not math.isfinite(operating_threshold):
                raise RegistrationInputError(
                    f"decision.{key} is 'operating' but the evaluation has no finite calibrated "
                    f"operating threshold ({operating_threshold}); set a number instead"
                )
            return min(max(float(operating_threshold), 0.0), 1.0)
        return float(value)

    review, block = resolve("review_threshold"), resolve("block_threshold")
    if review > block:
        warnings.append(
            f"the review threshold {review:.4f} is above the block threshold {block:.4f}: "
            f"block raised to {review:.4f}, so there is no review band"
        )
        block = review
    return DecisionThresholds(review=review, block=block), warnings


def _champion_version(client: MlflowClient, model_name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as exc:
        # No registered model yet: RESOURCE_DOES_NOT_EXIST. A model without the alias: the SQL
        # store answers INVALID_PARAMETER_VALUE "Registered model alias champion not found.".
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST) or (
            exc.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE)
            and f"alias {CHAMPION} not found" in exc.message
        ):
            return None
        raise


def _test_rows(split_manifest: pd.DataFrame, limit: int | None = None) -> pd.DataFrame:
    rows = split_manifest[split_manifest["split"] == "test"].sort_values("sha256")
    return rows if limit is None else rows.head(limit)


def _predict_classes(
    model: mlflow.pyfunc.PyFuncModel,
    rows: pd.DataFrame,
    batch_size: int,
    storage_options: Mapping[str, Any],
    description: str,
) -> pd.DataFrame:
    outputs = []
    starts = range(0, len(rows), batch_size)
    for start in tqdm(starts, desc=description, unit="batch"):
        chunk = rows.iloc[start : start + batch_size]
        images = [encode_image(read_bytes(uri, storage_options)) for uri in chunk["uri"]]
        outputs.append(
            model.predict(pd.DataFrame({"id": chunk["sha256"].tolist(), "image": images}))
        )
    return pd.concat(outputs, ignore_index=True)


def score_on_test_split(
    model_uri: str,
    split_manifest: pd.DataFrame,
    *,
    batch_size: int = 16,
    storage_options: Mapping[str, Any] | None = None,
) -> float:
    """Accuracy of a registered pyfunc on the test split of ``split_manifest``.

    Rows the model cannot score count as wrong (a served model answers them with an error).

    Args:
        model_uri: e.g. ``models:/eyecatcher-moderation@champion``.
        split_manifest: The manifest whose ``test`` rows are scored.
        batch_size: Images per request.
        storage_options: fsspec options for ``s3://`` URIs.

    Returns:
        The fraction of test images whose predicted class is their label.
    """
    model = mlflow.pyfunc.load_model(model_uri)
    rows = _test_rows(split_manifest)
    predictions = _predict_classes(
        model, rows, batch_size, storage_options or {}, f"scoring {model_uri} on test"
    )
    errors = int(predictions["error"].notna().sum())
    if errors:
        logger.warning("%s could not score %d test images; they count as wrong", model_uri, errors)
    return float((predictions["class"].to_numpy() == rows["class"].to_numpy()).mean())


def _compare_with_champion(
    champion: ModelVersion | None,
    model_name: str,
    test_split_hash: str,
    split_manifest: pd.DataFrame,
    params: Mapping[str, Any],
) -> ChampionComparison:
    if champion is None:
        return ChampionComparison(version=None, accuracy=None, method="none")
    recorded = champion.tags.get(ACCURACY_TAG)
    if champion.tags.get(TEST_SPLIT_TAG) == test_split_hash and recorded is not None:
        return ChampionComparison(str(champion.version), float(recorded), "recorded")
    # Another test split (new data, new split): the recorded number is not comparable, so
    # the champion is run on this test split with its own served code.
    logger.info(
        "Champion v%s was gated on another test split; scoring it on this one.", champion.version
    )
    try:
        accuracy = score_on_test_split(
            f"models:/{model_name}/{champion.version}",
            split_manifest,
            batch_size=int(params.get("batch_size", 16)),
            storage_options=params.get("storage_options") or {},
        )
    except Exception as exc:  # any failure to load or run the old model means "not comparable"
        return ChampionComparison(
            str(champion.version), None, "unscorable", f"{type(exc).__name__}: {exc}"
        )
    return ChampionComparison(str(champion.version), accuracy, "rescored")


def _smoke_test(
    model_uri: str,
    *,
    version: str,
    bundle: ClassifierBundle,
    precision: str,
    split_manifest: pd.DataFrame,
    params: Mapping[str, Any],
    onnx_path: str | None = None,
) -> dict[str, Any]:
    """The staging inference test: the registered challenger loads and answers correctly.

    Its classes must equal the in-process model's: the torch bundle for fp32, the ONNX file
    quantization measured for int8.
    """
    rows = _test_rows(split_manifest, int(params.get("smoke_test_images", 8)))
    storage_options = params.get("storage_options") or {}
    model = mlflow.pyfunc.load_model(model_uri)
    images = [read_bytes(uri, storage_options) for uri in rows["uri"]]
    out = model.predict(pd.DataFrame({"image": [encode_image(i) for i in images]}))
    problems: list[str] = []
    if out["error"].notna().any():
        problems.append(f"per-row errors on test images: {out['error'].dropna().tolist()[:3]}")
    if set(out["model_version"]) != {str(version)}:
        problems.append(f"model_version {set(out['model_version'])} != {version}")
    agreement = None
    if not problems:
        batch = bytes_to_batch(images, bundle.data_config)
        if precision == "int8":
            from eyecatcher.models.onnx_runtime import OnnxClassifier

            expected = OnnxClassifier(Path(str(onnx_path))).predict_proba(batch).argmax(1)
        else:
            model_torch = bundle.build_model()
            with torch.inference_mode():
                expected = model_torch(batch).argmax(1).numpy()
        agreement = float((out["class"].to_numpy() == np.array(bundle.classes)[expected]).mean())
        if agreement < 1.0:
            problems.append(
                f"served classes agree with the in-process model on {agreement:.0%} of images"
            )
    return {
        "passed": not problems,
        "images": len(rows),
        "agreement": agreement,
        "problems": problems,
    }


def _log_run_outcome(report: Mapping[str, Any]) -> None:
    """Tags on the ``kedro run``'s MLflow run, so the run list says what happened."""
    tags = {
        "registration.outcome": report["outcome"],
        "registration.gate": "passed" if report["gate"]["passed"] else "failed",
        "registration.gate_summary": report["gate"]["summary"][:5000],
        "registration.candidate": report["candidate"],
        "registration.model_name": report["model_name"],
    }
    if report.get("version"):
        tags["registration.model_version"] = str(report["version"])
    if report["gate"]["warnings"]:
        tags["registration.warnings"] = "; ".join(report["gate"]["warnings"])[:5000]
    mlflow.set_tags(tags)


def _metrics(report: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    checks = report["gate"]["checks"]
    values = {
        "test_accuracy": checks["test_accuracy"],
        "min_test_accuracy": checks["min_test_accuracy"],
        "max_regression_vs_champion": checks["max_regression_vs_champion"],
        "champion_accuracy": checks["champion_accuracy"],
        "gate_passed": float(report["gate"]["passed"]),
        "registered": float(report["outcome"] == "registered"),
    }
    return {
        k: {"value": float(v), "step": 0}
        for k, v in values.items()
        if v is not None and math.isfinite(float(v))
    }


def _lineage_tags(
    *,
    candidate: str,
    bundle: ClassifierBundle,
    evaluation: Mapping[str, Any],
    served: Mapping[str, Any],
    split_manifest: pd.DataFrame,
    test_split_hash: str,
    gate: GateDecision,
    settings: GateSettings,
    thresholds: DecisionThresholds,
    run_id: str,
    training_run: Mapping[str, Any] | None,
    selection: Mapping[str, Any],
) -> dict[str, str]:
    commit, dirty = git_commit(Path.cwd())
    test = evaluation["test"]
    tags: dict[str, Any] = {
        "git_commit": commit,
        "git_dirty": "unknown" if dirty is None else str(dirty).lower(),
        "data_manifest_hash": manifest_hash(split_manifest),
        TEST_SPLIT_TAG: test_split_hash,
        "parent_run_id": run_id,
        "training_run_id": (training_run or {}).get("run_id", "unknown"),
        "candidate": candidate,
        "architecture": bundle.architecture,
        "weights_source": bundle.weights_source,
        "classes": ",".join(bundle.classes),
        "selection": f"{selection.get('metric')}: {selection.get('reason')}",
        "quantization_precision": served["precision"],
        "quantization_reason": served.get("reason") or "",
        ACCURACY_TAG: served["accuracy"],
        "test_accuracy_fp32": served["fp32_accuracy"],
        "test_macro_f1": test.get("macro_f1"),
        "test_roc_auc": test.get("roc_auc"),
        "test_pr_auc": test.get("pr_auc"),
        "test_recall_at_threshold": test.get("recall_at_threshold"),
        "test_fpr_at_threshold": test.get("fpr_at_threshold"),
        "operating_threshold": evaluation.get("operating_threshold", {}).get("threshold"),
        "decision_review_threshold": thresholds.review,
        "decision_block_threshold": thresholds.block,
        "gate_min_test_accuracy": settings.min_test_accuracy,
        "gate_max_regression_vs_champion": settings.max_regression_vs_champion,
        "gate_champion_version": gate.checks.get("champion_version") or "none",
        "gate_champion_accuracy": gate.checks.get("champion_accuracy"),
        "gate_champion_comparison": gate.checks.get("champion_comparison"),
        "gate_summary": gate.summary,
    }
    if bundle.weights_source == "random":
        tags["warning"] = "RANDOM WEIGHTS: the backbone was randomly initialised"
    if gate.warnings:
        tags["gate_warnings"] = "; ".join(gate.warnings)
    return {k: str(v)[:5000] for k, v in tags.items()}


def _register(
    client: MlflowClient,
    *,
    model_name: str,
    bundle: ClassifierBundle,
    config_values: Mapping[str, Any],
    served: Mapping[str, Any],
    tags: Mapping[str, str],
    run_id: str,
) -> ModelVersion:
    """Create the version first (so its number is known), then log the model into it."""
    try:
        client.create_registered_model(
            model_name,
            description="EyeCatcher explicit-image moderation model (see docs/registry.md).",
        )
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    logged = mlflow.initialize_logged_model(
        name="served_model",
        source_run_id=run_id,
        experiment_id=mlflow.get_run(run_id).info.experiment_id,
    )
    version = client.create_model_version(
        model_name,
        source=f"models:/{logged.model_id}",
        run_id=run_id,
        tags=dict(tags),
        model_id=logged.model_id,
    )
    config = ServingConfig(model_version=str(version.version), **config_values)
    try:
        log_served_model(
            bundle=bundle, config=config, onnx_path=served["onnx_path"], model_id=logged.model_id
        )
    except BaseException:
        # Nobody can resolve the half-made version yet (no alias): remove it, keep the error.
        # BaseException: a Ctrl-C while the model uploads must not leave an empty version.
        client.delete_model_version(model_name, version.version)
        mlflow.finalize_logged_model(logged.model_id, "FAILED")
        raise
    return version


def register_model(
    candidate_selection: dict[str, Any],
    quantization_decision: dict[str, Any],
    split_manifest: pd.DataFrame,
    params: dict[str, Any],
    **candidate_outputs: Any,
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Gate the selected candidate; on pass register it and make it the champion.

    Steps: read the selected candidate and what quantization decided for it; compare its test
    accuracy (of the precision that will be served) with ``gate.min_test_accuracy`` and with the
    current champion on the same test split; on pass, register a new version with lineage tags,
    give it the alias ``challenger``, run the staging inference test on it through the
    registry, then move ``champion`` to it (the previous champion keeps its version and loses
    only the alias). On fail nothing is registered. A candidate whose fingerprint (weights,
    preprocessing, precision, thresholds, limits) equals the champion's is not registered
    again (outcome ``unchanged``).

    Args:
        candidate_selection: Training's ``candidate_selection`` (``selected``, ``metric``, ...).
        quantization_decision: Quantization's decision (``candidates.<name>.precision``, ...).
        split_manifest: The split manifest (test split fingerprint, champion re-scoring, smoke
            test images).
        params: The ``registration`` parameters.
        **candidate_outputs: ``evaluation__<candidate>``, ``bundle__<candidate>`` and
            ``mlflow_run__<candidate>`` for every configured candidate.

    Returns:
        The registration report (also logged to MLflow) and metrics for the run.

    Raises:
        RegistrationInputError: If the upstream reports are inconsistent or incomplete.
    """
    model_name = str(params["model_name"])
    settings = GateSettings.from_params(params["gate"])
    candidate, evaluation, bundle, training_run = _selected_candidate(
        candidate_selection, candidate_outputs
    )
    served = _served_precision(quantization_decision, candidate, evaluation)
    operating = evaluation.get("operating_threshold", {}).get("threshold")
    thresholds, threshold_warnings = decision_thresholds(params["decision"], operating)
    for warning in threshold_warnings:
        logger.warning("Registration: %s", warning)
    test_split_hash = manifest_hash(split_manifest, "test")

    started_run = mlflow.active_run() is None
    run = mlflow.start_run(run_name="registration") if started_run else mlflow.active_run()
    try:
        client = MlflowClient()
        champion = _champion_version(client, model_name)
        comparison = _compare_with_champion(
            champion, model_name, test_split_hash, split_manifest, params
        )
        serving = dict(params.get("serving") or {})
        fingerprint = model_fingerprint(
            {
                "architecture": bundle.architecture,
                "classes": list(bundle.classes),
                "data_config": bundle.data_config,
                "safe_class": bundle.safe_class,
                "model_kwargs": getattr(bundle, "model_kwargs", {}),
                "state_dict": bundle.state_dict,
            },
            {
                "precision": served["precision"],
                "thresholds": [thresholds.review, thresholds.block],
                "serving": serving,
                "model_name": model_name,
            },
            served["onnx_path"],
        )
        gate = decide(served["accuracy"], settings, comparison)
        gate.warnings.extend(threshold_warnings)
        report: dict[str, Any] = {
            "model_name": model_name,
            "candidate": candidate,
            "precision": served["precision"],
            "gate": gate.to_dict(),
            "previous_champion": str(champion.version) if champion else None,
            "version": None,
            "aliases": {},
            "thresholds": {"review": thresholds.review, "block": thresholds.block},
            "operating_threshold": operating,
            "test_split_hash": test_split_hash,
            "run_id": run.info.run_id,
        }
        for warning in gate.warnings:
            logger.warning("Registration gate: %s", warning)
        if not gate.passed:
            logger.warning(
                "Registration gate FAILED for candidate '%s': %s. Nothing registered; %s.",
                candidate,
                "; ".join(gate.reasons),
                f"champion stays v{champion.version}" if champion else "there is no champion",
            )
            report["outcome"] = "rejected"
        elif champion is not None and champion.tags.get(FINGERPRINT_TAG) == fingerprint:
            # Nothing that would be served has changed: a copy of the champion is no news.
            logger.info(
                "Candidate '%s' is what champion v%s already serves (same fingerprint); "
                "nothing registered.",
                candidate,
                champion.version,
            )
            report["outcome"] = "unchanged"
            report["aliases"] = {CHAMPION: str(champion.version)}
        else:
            tags = _lineage_tags(
                candidate=candidate,
                bundle=bundle,
                evaluation=evaluation,
                served=served,
                split_manifest=split_manifest,
                test_split_hash=test_split_hash,
                gate=gate,
                settings=settings,
                thresholds=thresholds,
                run_id=run.info.run_id,
                training_run=training_run,
                selection=candidate_selection,
            )
            tags[FINGERPRINT_TAG] = fingerprint
            config_values = {
                "model_name": model_name,
                "candidate": candidate,
                "precision": served["precision"],
                "classes": list(bundle.classes),
                "safe_class": bundle.safe_class,
                "thresholds": thresholds,
                "operating_threshold": None if operating is None else float(operating),
                **{k: int(v) for k, v in serving.items()},
            }
            version = _register(
                client,
                model_name=model_name,
                bundle=bundle,
                config_values=config_values,
                served=served,
                tags=tags,
                run_id=run.info.run_id,
            )
            report["version"] = str(version.version)
            client.set_registered_model_alias(model_name, CHALLENGER, version.version)
            try:
                smoke = _smoke_test(
                    f"models:/{model_name}@{CHALLENGER}",
                    version=str(version.version),
                    bundle=bundle,
                    precision=served["precision"],
                    split_manifest=split_manifest,
                    params=params,
                    onnx_path=served["onnx_path"],
                )
            except Exception as exc:  # a challenger that cannot even load fails its test
                smoke = {
                    "passed": False,
                    "images": 0,
                    "agreement": None,
                    "problems": [f"{type(exc).__name__}: {exc}"],
                }
            report["smoke_test"] = smoke
            client.set_model_version_tag(
                model_name,
                version.version,
                "smoke_test",
                "passed" if smoke["passed"] else "failed: " + "; ".join(smoke["problems"])[:4000],
            )
            if smoke["passed"]:
                client.set_registered_model_alias(model_name, CHAMPION, version.version)
                # The challenger has become the champion; the alias would now only confuse.
                client.delete_registered_model_alias(model_name, CHALLENGER)
                report["aliases"] = {CHAMPION: str(version.version)}
                report["outcome"] = "registered"
                logger.info(
                    "Registered %s v%s (candidate %s, %s, test accuracy %.4f) as %s%s.",
                    model_name,
                    version.version,
                    candidate,
                    served["precision"],
                    served["accuracy"],
                    CHAMPION,
                    f", replacing v{champion.version}" if champion else "",
                )
            else:
                report["aliases"] = {CHALLENGER: str(version.version)}
                report["outcome"] = "smoke_test_failed"
                report["gate"]["passed"] = False
                report["gate"]["reasons"].append(
                    "staging inference test failed: " + "; ".join(smoke["problems"])
                )
                report["gate"]["summary"] = "failed: " + "; ".join(report["gate"]["reasons"])
                logger.warning(
                    "%s v%s stays challenger, NOT champion: staging inference test failed: %s",
                    model_name,
                    version.version,
                    "; ".join(smoke["problems"]),
                )
        _log_run_outcome(report)
        return report, _metrics(report)
    finally:
        if started_run:
            mlflow.end_run()


def enforce_gate(registration_report: dict[str, Any], params: dict[str, Any]) -> None:
    """Fail the run when the gate refused the candidate and ``gate.fail_run_on_failure`` is set.

    A separate node, so that the report and metrics are saved before the run fails.

    Args:
        registration_report: Output of :func:`register_model`.
        params: The ``registration`` parameters.

    Raises:
        GateFailedError: When the gate or the staging test refused the candidate and the
            switch is on (an unchanged champion is not a refusal).
    """
    settings = GateSettings.from_params(params["gate"])
    refused = registration_report["outcome"] in {"rejected", "smoke_test_failed"}
    if refused and settings.fail_run_on_failure:
        raise GateFailedError(
            f"Registration gate failed for '{registration_report['candidate']}' "
            f"({registration_report['outcome']}): "
            + "; ".join(registration_report["gate"]["reasons"])
        )


__all__ = [
    "RegistrationInputError",
    "decision_thresholds",
    "enforce_gate",
    "register_model",
    "score_on_test_split",
]
