"""Nodes of the quantization pipeline: build int8 models, benchmark them against fp32, decide.

Per candidate, :func:`build_onnx_models` exports the trained fp32 model to ONNX and quantizes it
to int8 with each configured ONNX Runtime method (static QDQ calibrated on a sample of the
training split, and/or dynamic); :func:`benchmark_candidate` measures fp32 and every int8 model
on the same test split with the same runtime and thread count, and applies the decision rule
(:func:`decide_precision`). :func:`summarise_quantization` gathers every candidate into the
``quantization_decision`` that registration reads, a table, a chart and MLflow metrics.

A failed export or quantization never stops the run: the candidate keeps fp32 and the failure
is logged as a warning and recorded in the decision (and so in MLflow).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

from eyecatcher.images import decode_image
from eyecatcher.mlflow_log import safe_record
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.onnx_runtime import quantize_onnx, with_metadata
from eyecatcher.pipelines.quantization.calibration import calibrate
from eyecatcher.pipelines.quantization.decision import attempt_failures, decide_precision
from eyecatcher.pipelines.quantization.export import check_against_torch, export_fp32_graph
from eyecatcher.pipelines.quantization.measure import (
    classification_scores,
    compare_latency_ms,
    score_round_robin,
)
from eyecatcher.pipelines.quantization.report import (
    RULE,
    artefact,
    candidate_decision,
    candidate_metrics,
    chart,
    machine,
    table_rows,
)
from eyecatcher.pipelines.quantization.scoring import (
    check_onnx_models,
    input_fingerprints,
    onnx_metadata,
    onnx_predictor,
    split_probabilities,
    torch_predictor,
)
from eyecatcher.pipelines.quantization.settings import QuantizationSettings
from eyecatcher.preprocessing import images_to_batch
from eyecatcher.progress import progress_bar
from eyecatcher.storage import StorageOptions, read_bytes

matplotlib.use("Agg")  # figures are written to files and MLflow, never shown
import matplotlib.pyplot as plt

logger = logging.getLogger(__name__)


def _read_split(
    manifest: pd.DataFrame,
    split: str,
    classes: list[str],
    *,
    sample_size: int | None = None,
    seed: int = 0,
    storage_options: StorageOptions | None = None,
) -> tuple[list[Any], np.ndarray]:
    """Decode the images of one split (optionally a seeded sample) and their class indices.

    Raises:
        ValueError: If the manifest lacks columns or names a class the model does not know, or
            if an image cannot be read or decoded (with its uri).
    """
    missing = {"uri", "class", "split"} - set(manifest.columns)
    if missing:
        raise ValueError(f"split_manifest lacks column(s) {sorted(missing)}.")
    rows = manifest[manifest["split"] == split]
    if sample_size is not None and len(rows) > sample_size:
        rows = rows.sample(n=sample_size, random_state=seed)
    unknown = sorted(set(rows["class"]) - set(classes))
    if unknown:
        raise ValueError(
            f"The {split} split has class(es) {unknown} that the model does not know "
            f"(its classes: {classes})."
        )
    images = []
    for uri in progress_bar(rows["uri"], desc=f"decode {split} images", leave=False):
        try:
            images.append(decode_image(read_bytes(uri, storage_options)))
        except Exception as exc:
            raise ValueError(f"Could not read {split} image {uri}: {exc}") from exc
    labels = np.array([classes.index(c) for c in rows["class"]], dtype=np.int64)
    return images, labels


def _failure(stage: str, exc: BaseException) -> dict[str, str]:
    return {"stage": getattr(exc, "stage", stage), "error": f"{type(exc).__name__}: {exc}"}


def build_onnx_models(
    model_bundle: ClassifierBundle, split_manifest: pd.DataFrame, params: dict[str, Any]
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Export the candidate's fp32 model to ONNX and quantize it with each configured method.

    The fp32 graph is exported by :func:`.export.export_fp32_graph` (for transformers with
    plain attention and fused by ONNX Runtime's transformer optimizer, as configured); every
    int8 model is quantized from that graph. It is checked against the PyTorch model on up to 8
    calibration images
    (max absolute logit difference within ``export_tolerance`` times the largest logit, or
    times 1 for small logits): an export that changes the predictions is a failure, not a
    model. Static quantization calibrates on ``calibration_size`` images
    sampled (seeded) from the training split.

    Args:
        model_bundle: The trained candidate.
        split_manifest: The split manifest (``uri``, ``class``, ``split``).
        params: The ``quantization`` parameter block.

    Returns:
        The serialized models ``{"fp32": ..., "int8_static": ..., "int8_dynamic": ...}`` (only
        those that were built; empty if the export failed), and a record of the attempt: export
        check, seconds per step, calibration size and a failure per method if any.
    """
    settings = QuantizationSettings.from_params(params, model_bundle.architecture)
    fingerprints = input_fingerprints(model_bundle, split_manifest, params)
    attempt: dict[str, Any] = {
        "architecture": model_bundle.architecture,
        "calibration_size": 0,
        "export": {},
        "methods": {},
        "failure": None,
    }
    models: dict[str, bytes] = {}
    calibration = _calibration_batch(model_bundle, split_manifest, settings, attempt)
    model = model_bundle.build_model()
    with tempfile.TemporaryDirectory(prefix="eyecatcher-onnx-") as scratch:
        fp32_path = Path(scratch) / "fp32.onnx"
        try:
            attempt["export"] = export_fp32_graph(
                model, model_bundle.data_config["input_size"], fp32_path, settings
            )
            check = calibration[:8] if calibration is not None else _zeros(model_bundle)
            attempt["export"].update(check_against_torch(model, fp32_path, check, settings))
        except Exception as exc:  # an unexportable model keeps fp32 (PyTorch), recorded
            attempt["failure"] = _failure("export", exc)
            logger.warning(
                "ONNX export of %s failed; it stays fp32 (PyTorch) with no int8 model: %s",
                model_bundle.architecture,
                attempt["failure"]["error"],
            )
            return {}, attempt
        models["fp32"] = with_metadata(fp32_path.read_bytes(), onnx_metadata(fingerprints, "fp32"))

        for method in progress_bar(settings.methods, desc="quantize", leave=False):
            built = _quantize(
                method,
                fp32_path,
                calibration=calibration,
                settings=settings,
                bundle=model_bundle,
                attempt=attempt,
            )
            if built is not None:
                models[f"int8_{method}"] = with_metadata(
                    built, onnx_metadata(fingerprints, f"int8_{method}")
                )
    return models, attempt


def _calibration_batch(
    bundle: ClassifierBundle,
    split_manifest: pd.DataFrame,
    settings: QuantizationSettings,
    attempt: dict[str, Any],
) -> np.ndarray | None:
    """The seeded sample of training images static quantization calibrates on (and the export
    check uses); ``None`` without images, recorded in ``attempt``."""
    try:
        images, _ = _read_split(
            split_manifest,
            "train",
            bundle.classes,
            sample_size=settings.calibration_size,
            seed=settings.calibration_seed,
            storage_options=settings.storage_options,
        )
    except ValueError as exc:
        # Without calibration images only static quantization is impossible; fp32 and
        # dynamic int8 can still be built and measured.
        logger.warning("Calibration images unavailable for %s: %s", bundle.architecture, exc)
        attempt["calibration_error"] = str(exc)
        return None
    if not images:
        return None
    attempt["calibration_size"] = len(images)
    return images_to_batch(images, bundle.data_config).numpy()


def _quantize(
    method: str,
    fp32_path: Path,
    *,
    calibration: np.ndarray | None,
    settings: QuantizationSettings,
    bundle: ClassifierBundle,
    attempt: dict[str, Any],
) -> bytes | None:
    """One int8 model from the fp32 graph, or ``None`` with the failure in ``attempt``."""
    int8_path = fp32_path.with_name(f"int8_{method}.onnx")
    start = time.perf_counter()
    try:
        quantize_onnx(
            fp32_path,
            int8_path,
            method=method,
            calibration=calibration,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
        )
    except Exception as exc:  # e.g. an operator the quantizer cannot handle
        failure = _failure("quantize", exc)
        attempt["methods"][method] = {"failure": failure}
        logger.warning(
            "int8 %s quantization of %s failed: %s", method, bundle.architecture, failure["error"]
        )
        return None
    attempt["methods"][method] = {"seconds": time.perf_counter() - start, "failure": None}
    return int8_path.read_bytes()


def _zeros(bundle: ClassifierBundle) -> np.ndarray:
    return np.zeros((1, *bundle.data_config["input_size"]), dtype=np.float32)


def _latencies(
    predictors: Mapping[str, Any], batch: np.ndarray, settings: QuantizationSettings
) -> dict[str, dict[str, Any]]:
    """Batch-1 latency of every model, measured round-robin (see ``measure``)."""
    latency = compare_latency_ms(
        predictors,
        batch,
        iterations=settings.latency.iterations,
        warmup=settings.latency.warmup,
    )
    return {
        name: {
            "latency_ms_p50": latency[name]["p50"],
            "latency_ms_p95": latency[name]["p95"],
            "latency_ms_mean": latency[name]["mean"],
        }
        for name in predictors
    }


def _variant_scores(
    probabilities: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    n_classes: int,
    fp32_test: np.ndarray | None,
) -> dict[str, Any]:
    """Validation and test scores of one variant (test ``accuracy`` keeps its old name)."""
    validation = classification_scores(
        labels["validation"], probabilities["validation"].argmax(1), n_classes
    )
    test_predictions = probabilities["test"].argmax(1)
    agreement = 1.0 if fp32_test is None else float((test_predictions == fp32_test).mean())
    return {
        "validation_accuracy": validation["accuracy"],
        "validation_macro_f1": validation["macro_f1"],
        **classification_scores(labels["test"], test_predictions, n_classes),
        "agreement_with_fp32": agreement,
    }


def benchmark_candidate(
    onnx_models: Mapping[str, str | bytes],
    model_bundle: ClassifierBundle,
    split_manifest: pd.DataFrame,
    attempt: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    """Score fp32 and each int8 model on validation and test, decide, calibrate the served one.

    The precision is chosen on the **validation** split (int8 only if its validation accuracy
    drops by at most ``max_accuracy_drop_points``); the chosen model's validation scores give
    the decision thresholds, and its test scores the reported accuracy, unsafe recall and FPR
    with 95% intervals (:mod:`.calibration`). Every model scores the same chunks of
    ``eval_batch_size`` images in turns, and those timed calls are the throughput (no forward
    pass is spent on timing alone); batch-1 latency is then measured round-robin on the test
    images, with one fixed thread count. If the export failed, fp32 runs in PyTorch.

    Args:
        onnx_models: ``{variant: path or serialized model}`` from :func:`build_onnx_models`.
        model_bundle: The trained candidate.
        split_manifest: The split manifest (validation and test are scored).
        attempt: The record returned by :func:`build_onnx_models`.
        params: The ``quantization`` parameter block.

    Returns:
        The candidate's report: the decision (``precision``, ``reason``, drop in points),
        per-variant measurements, ``calibration`` of the chosen precision, the chosen model's
        ``test_predictions`` (``{sha256: class}``), the input ``fingerprints``, failures.

    Raises:
        ValueError: If the validation or test split is empty or unreadable.
        StaleArtefactError: If an ONNX model was built from other inputs.
    """
    settings = QuantizationSettings.from_params(params, model_bundle.architecture)
    fingerprints = input_fingerprints(model_bundle, split_manifest, params)
    check_onnx_models(onnx_models, fingerprints)
    batches, labels = _evaluation_batches(model_bundle, split_manifest, settings)
    failures = attempt_failures(attempt)
    variants, probabilities = _measure(
        onnx_models, model_bundle, batches, labels, settings=settings, failures=failures
    )
    int8 = {variants[key]["method"]: variants[key] for key in variants if key != "fp32"}
    decision = _decide_on_validation(variants["fp32"], int8, settings, failures)
    chosen = f"int8_{decision['int8_method']}" if decision["precision"] == "int8" else "fp32"
    calibration = calibrate(
        precision=decision["precision"],
        classes=list(model_bundle.classes),
        safe_class=model_bundle.safe_class,
        validation=(probabilities[chosen]["validation"], labels["validation"]),
        test=(probabilities[chosen]["test"], labels["test"]),
        settings=settings.calibration,
    )
    _log_outcome(model_bundle.architecture, chosen, decision, calibration, failures)
    return {
        "architecture": model_bundle.architecture,
        "weights_source": model_bundle.weights_source,
        **decision,
        "chosen_variant": chosen,
        "max_accuracy_drop_points": settings.max_accuracy_drop_points,
        "fp32": variants["fp32"],
        "int8": int8,
        "calibration": calibration,
        "test_predictions": _test_predictions(
            split_manifest, model_bundle.classes, probabilities[chosen]["test"]
        ),
        "fingerprints": fingerprints,
        "failures": failures,
        "build": attempt,
        "benchmark": _benchmark_record(labels, settings),
    }


def _evaluation_batches(
    bundle: ClassifierBundle, split_manifest: pd.DataFrame, settings: QuantizationSettings
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The preprocessed validation and test images and their labels (neither may be empty)."""
    batches, labels = {}, {}
    for split in ("validation", "test"):
        images, labels[split] = _read_split(
            split_manifest, split, list(bundle.classes), storage_options=settings.storage_options
        )
        if not images:
            raise ValueError(f"The {split} split is empty: there is nothing to measure on.")
        batches[split] = images_to_batch(images, bundle.data_config).numpy()
    return batches, labels


def _measure(
    onnx_models: Mapping[str, str | bytes],
    bundle: ClassifierBundle,
    batches: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    *,
    settings: QuantizationSettings,
    failures: dict[str, str],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Every model that runs: its scores, throughput and latency, and its probabilities."""
    predictors, methods = _predictors(onnx_models, bundle, settings, failures)
    scored = _score(
        predictors,
        methods,
        batches,
        settings=settings,
        failures=failures,
        architecture=bundle.architecture,
    )
    probabilities = {key: split_probabilities(scored.outputs[key]) for key in predictors}
    variants = _variants(
        onnx_models,
        bundle,
        methods=methods,
        probabilities=probabilities,
        labels=labels,
        scored=scored,
    )
    for key, timing in _latencies(predictors, batches["test"], settings).items():
        variants[key].update(timing)
    return variants, probabilities


def _predictors(
    onnx_models: Mapping[str, str | bytes],
    bundle: ClassifierBundle,
    settings: QuantizationSettings,
    failures: dict[str, str],
) -> tuple[dict[str, Any], dict[str, str]]:
    """fp32 (its ONNX graph, or PyTorch when the export failed) and every int8 model that
    loads, and ``{predictor key: int8 method}``; an int8 graph that cannot load is a failure."""
    predictors: dict[str, Any] = {
        "fp32": onnx_predictor(onnx_models["fp32"], settings.threads)
        if "fp32" in onnx_models
        else torch_predictor(bundle, settings.threads)
    }
    methods: dict[str, str] = {}  # predictor key -> int8 method
    for method in settings.methods:
        key = f"int8_{method}"
        if key not in onnx_models:
            continue
        try:
            predictors[key] = onnx_predictor(onnx_models[key], settings.threads)
            methods[key] = method
        except Exception as exc:  # an int8 graph the runtime cannot load is a failure too
            _int8_cannot_run(failures, method, bundle.architecture, exc)
    return predictors, methods


def _score(
    predictors: dict[str, Any],
    methods: Mapping[str, str],
    batches: Mapping[str, np.ndarray],
    *,
    settings: QuantizationSettings,
    failures: dict[str, str],
    architecture: str,
) -> Any:
    """Every model scores validation and test in turns; an int8 model that fails is dropped
    from ``predictors`` and recorded in ``failures``.

    Scoring validation and test is also the throughput measurement (no extra passes).
    """
    scored = score_round_robin(
        predictors, batches, settings.eval_batch_size, optional=tuple(methods)
    )
    for key, exc in scored.failures.items():
        _int8_cannot_run(failures, methods[key], architecture, exc)
        del predictors[key]
    return scored


def _variants(
    onnx_models: Mapping[str, str | bytes],
    bundle: ClassifierBundle,
    *,
    methods: Mapping[str, str],
    probabilities: Mapping[str, Mapping[str, np.ndarray]],
    labels: Mapping[str, np.ndarray],
    scored: Any,
) -> dict[str, dict[str, Any]]:
    """Per scored model: runtime, method, artefact, validation and test scores, throughput."""
    n_classes = len(bundle.classes)
    fp32_test = probabilities["fp32"]["test"].argmax(1)
    return {
        key: {
            "runtime": "onnxruntime" if key in onnx_models else "torch",
            **({"method": methods[key]} if key in methods else {}),
            **artefact(onnx_models.get(key), bundle),
            **_variant_scores(
                probabilities[key], labels, n_classes, None if key == "fp32" else fp32_test
            ),
            "throughput_images_per_s": scored.throughput[key]["images_per_s"],
            "throughput_batch_size": scored.throughput[key]["batch_size"],
        }
        for key in probabilities
    }


def _decide_on_validation(
    fp32: Mapping[str, Any],
    int8: Mapping[str, Mapping[str, Any]],
    settings: QuantizationSettings,
    failures: Mapping[str, str],
) -> dict[str, Any]:
    """:func:`.decision.decide_precision` on the VALIDATION accuracies (test never chooses)."""

    def on_validation(m: Mapping[str, Any]) -> dict[str, Any]:
        return {**m, "accuracy": m["validation_accuracy"]}

    decision = decide_precision(
        on_validation(fp32),
        {k: on_validation(v) for k, v in int8.items()},
        settings.max_accuracy_drop_points,
        failures,
    )
    decision["reason"] = f"on validation: {decision['reason']}"
    return decision


def _log_outcome(
    architecture: str,
    chosen: str,
    decision: Mapping[str, Any],
    calibration: Mapping[str, Any],
    failures: Mapping[str, str],
) -> None:
    for warning in calibration["warnings"]:
        logger.warning("Calibration of %s (%s): %s", architecture, chosen, warning)
    log = logger.warning if decision["precision"] == "int8" or failures else logger.info
    log("Quantization of %s: %s -> %s", architecture, decision["reason"], decision["precision"])


def _test_predictions(
    split_manifest: pd.DataFrame, classes: list[str], probabilities: np.ndarray
) -> dict[str, str]:
    """The served model's test prediction (from its test probabilities) per image sha256."""
    test_rows = split_manifest[split_manifest["split"] == "test"]
    return {
        str(sha): classes[int(index)]
        for sha, index in zip(test_rows["sha256"], probabilities.argmax(1), strict=True)
    }


def _benchmark_record(
    labels: Mapping[str, np.ndarray], settings: QuantizationSettings
) -> dict[str, Any]:
    """How the models were measured (sizes, threads, latency loop, settings, machine)."""
    return {
        "validation_images": len(labels["validation"]),
        "test_images": len(labels["test"]),
        "threads": settings.threads,
        "latency_iterations": settings.latency.iterations,
        "latency_warmup": settings.latency.warmup,
        "throughput": (
            f"measured while scoring validation and test, batches of "
            f"{settings.eval_batch_size}, each model's first batch excluded"
        ),
        "settings": safe_record(settings.as_record()),
        "machine": machine(),
    }


def _int8_cannot_run(
    failures: dict[str, str], method: str, architecture: str, exc: Exception
) -> None:
    failures[method] = f"{type(exc).__name__}: {exc}"
    logger.warning("int8 %s model of %s cannot run: %s", method, architecture, exc)


def summarise_quantization(
    params: dict[str, Any], **reports: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame, plt.Figure, dict[str, dict[str, float]]]:
    """Gather every candidate's report into the decision, a table, a chart and metrics.

    Args:
        params: The ``quantization`` parameter block.
        **reports: ``{candidate: report}`` from :func:`benchmark_candidate`.

    Returns:
        ``quantization_decision`` (per candidate: precision, reason, accuracies, drop in
        points, macro-F1, sizes, latencies, throughput, artefact paths, failures), the
        side-by-side table (one row per candidate and variant), the chart, and MLflow metrics
        named ``<candidate>.<variant>.<metric>`` (the catalog's ``prefix: quantization``
        makes them ``quantization.<candidate>.<variant>.<metric>`` in MLflow).
    """
    settings = QuantizationSettings.from_params(params)
    decision: dict[str, Any] = {
        "max_accuracy_drop_points": settings.max_accuracy_drop_points,
        "rule": RULE,
        "candidates": {},
    }
    rows: list[dict[str, Any]] = []
    metrics: dict[str, dict[str, float]] = {}
    for candidate, report in reports.items():
        decision["candidates"][candidate] = candidate_decision(report)
        candidate_rows = table_rows(candidate, report)
        rows.extend(candidate_rows)
        metrics.update(candidate_metrics(candidate, candidate_rows, report))
    table = pd.DataFrame(rows)
    figure = chart(table, settings.max_accuracy_drop_points) if rows else plt.figure()
    return decision, table, figure, metrics
