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
import math
import platform
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import torch

from eyecatcher import storage
from eyecatcher.images import decode_image
from eyecatcher.mlflow_log import safe_record
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.onnx_runtime import quantize_onnx, with_metadata
from eyecatcher.pipelines.quantization.calibration import calibrate
from eyecatcher.pipelines.quantization.export import check_against_torch, export_fp32_graph
from eyecatcher.pipelines.quantization.measure import (
    classification_scores,
    compare_latency_ms,
    score_round_robin,
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

#: Accuracy drops are compared after rounding to this many decimals (in points), so that one
#: image out of 20 (exactly 5 points) is not "5.000000000000004 > 5".
_POINTS_DECIMALS = 6


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
    calibration: np.ndarray | None = None
    try:
        images, _ = _read_split(
            split_manifest,
            "train",
            model_bundle.classes,
            sample_size=settings.calibration_size,
            seed=settings.calibration_seed,
            storage_options=settings.storage_options,
        )
        if images:
            calibration = images_to_batch(images, model_bundle.data_config).numpy()
            attempt["calibration_size"] = len(images)
    except ValueError as exc:
        # Without calibration images only static quantization is impossible; fp32 and
        # dynamic int8 can still be built and measured.
        logger.warning("Calibration images unavailable for %s: %s", model_bundle.architecture, exc)
        attempt["calibration_error"] = str(exc)

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
            int8_path = Path(scratch) / f"int8_{method}.onnx"
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
                    "int8 %s quantization of %s failed: %s",
                    method,
                    model_bundle.architecture,
                    failure["error"],
                )
                continue
            attempt["methods"][method] = {
                "seconds": time.perf_counter() - start,
                "failure": None,
            }
            models[f"int8_{method}"] = with_metadata(
                int8_path.read_bytes(), onnx_metadata(fingerprints, f"int8_{method}")
            )
    return models, attempt


def _zeros(bundle: ClassifierBundle) -> np.ndarray:
    return np.zeros((1, *bundle.data_config["input_size"]), dtype=np.float32)


def _latencies(
    predictors: Mapping[str, Any], batch: np.ndarray, settings: QuantizationSettings
) -> dict[str, dict[str, Any]]:
    """Batch-1 latency of every model, measured round-robin (see ``measure``)."""
    latency = compare_latency_ms(
        predictors,
        batch,
        iterations=int(settings.latency["iterations"]),
        warmup=int(settings.latency["warmup"]),
    )
    return {
        name: {
            "latency_ms_p50": latency[name]["p50"],
            "latency_ms_p95": latency[name]["p95"],
            "latency_ms_mean": latency[name]["mean"],
        }
        for name in predictors
    }


def decide_precision(
    fp32: Mapping[str, Any],
    int8: Mapping[str, Mapping[str, Any]],
    max_drop_points: float,
    failures: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The decision rule: int8 only if its accuracy drop is at most ``max_drop_points``.

    Among the int8 models that pass, the one with the lowest batch-1 p50 latency is chosen.
    The drop is ``(fp32 accuracy - int8 accuracy) * 100``, in points, rounded to 6 decimals.

    Args:
        fp32: The fp32 measurements (needs ``accuracy``).
        int8: ``{method: measurements}`` of each int8 model that was built and measured
            (each needs ``accuracy`` and ``latency_ms_p50``).
        max_drop_points: The largest acceptable accuracy drop, in points.
        failures: ``{method or stage: error}`` of attempts that produced no int8 model.

    Returns:
        ``precision`` (``int8`` or ``fp32``), ``int8_method`` (the chosen or best int8 method,
        or ``None``), ``accuracy_drop_points`` of that method, and a human-readable ``reason``
        such as ``"int8 (static) dropped 7.2 points > 5"``.
    """
    failures = dict(failures or {})
    if not int8:
        detail = "; ".join(f"{k}: {v}" for k, v in failures.items()) or "no int8 method ran"
        return {
            "precision": "fp32",
            "int8_method": None,
            "accuracy_drop_points": None,
            "reason": f"no int8 model available ({detail})",
        }
    drops = {
        method: round((fp32["accuracy"] - m["accuracy"]) * 100.0, _POINTS_DECIMALS)
        for method, m in int8.items()
    }
    passing = [method for method, drop in drops.items() if drop <= max_drop_points]
    threshold = f"{max_drop_points:g}"
    if passing:
        method = min(passing, key=lambda k: int8[k]["latency_ms_p50"])
        drop = drops[method]
        ratio = (
            int8[method]["latency_ms_p50"] / fp32["latency_ms_p50"]
            if fp32.get("latency_ms_p50")
            else math.nan
        )
        return {
            "precision": "int8",
            "int8_method": method,
            "accuracy_drop_points": drop,
            "reason": (
                f"int8 ({method}) dropped {drop:.1f} points <= {threshold}; "
                f"p50 latency {ratio:.2f}x fp32"
            ),
        }
    method = min(drops, key=drops.get)
    shown = f"{drops[method]:.1f}"
    if float(shown) <= max_drop_points:
        # 5.04 points shown as "5.0 points > 5" would read as a bug: show what was compared.
        shown = f"{drops[method]:g}"
    return {
        "precision": "fp32",
        "int8_method": method,
        "accuracy_drop_points": drops[method],
        "reason": f"int8 ({method}) dropped {shown} points > {threshold}",
    }


def _attempt_failures(attempt: Mapping[str, Any]) -> dict[str, str]:
    failures: dict[str, str] = {}
    if attempt.get("failure"):
        failures[attempt["failure"]["stage"]] = attempt["failure"]["error"]
    for method, outcome in attempt.get("methods", {}).items():
        if outcome.get("failure"):
            failures[method] = outcome["failure"]["error"]
    return failures


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
    classes, n_classes = list(model_bundle.classes), len(model_bundle.classes)
    batches, labels = {}, {}
    for split in ("validation", "test"):
        images, labels[split] = _read_split(
            split_manifest, split, classes, storage_options=settings.storage_options
        )
        if not images:
            raise ValueError(f"The {split} split is empty: there is nothing to measure on.")
        batches[split] = images_to_batch(images, model_bundle.data_config).numpy()
    failures = _attempt_failures(attempt)

    predictors: dict[str, Any] = {
        "fp32": onnx_predictor(onnx_models["fp32"], settings.threads)
        if "fp32" in onnx_models
        else torch_predictor(model_bundle, settings.threads)
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
            _int8_cannot_run(failures, method, model_bundle.architecture, exc)
    # Scoring validation and test is also the throughput measurement (no extra passes).
    scored = score_round_robin(
        predictors, batches, settings.eval_batch_size, optional=tuple(methods)
    )
    for key, exc in scored.failures.items():
        _int8_cannot_run(failures, methods[key], model_bundle.architecture, exc)
        del predictors[key]
    probabilities = {key: split_probabilities(scored.outputs[key]) for key in predictors}
    fp32_test = probabilities["fp32"]["test"].argmax(1)
    variants: dict[str, dict[str, Any]] = {}
    for key in predictors:
        variants[key] = {
            "runtime": "onnxruntime" if key in onnx_models else "torch",
            **({"method": methods[key]} if key in methods else {}),
            **_artefact(onnx_models.get(key), model_bundle),
            **_variant_scores(
                probabilities[key], labels, n_classes, None if key == "fp32" else fp32_test
            ),
            "throughput_images_per_s": scored.throughput[key]["images_per_s"],
            "throughput_batch_size": scored.throughput[key]["batch_size"],
        }
    for key, timing in _latencies(predictors, batches["test"], settings).items():
        variants[key].update(timing)
    int8 = {variants[key]["method"]: variants[key] for key in variants if key != "fp32"}

    def on_validation(m: Mapping[str, Any]) -> dict[str, Any]:
        return {**m, "accuracy": m["validation_accuracy"]}

    decision = decide_precision(
        on_validation(variants["fp32"]),
        {k: on_validation(v) for k, v in int8.items()},
        settings.max_accuracy_drop_points,
        failures,
    )
    decision["reason"] = f"on validation: {decision['reason']}"
    chosen = f"int8_{decision['int8_method']}" if decision["precision"] == "int8" else "fp32"
    safe_class = model_bundle.safe_class
    calibration = calibrate(
        precision=decision["precision"],
        classes=classes,
        safe_class=safe_class,
        validation=(probabilities[chosen]["validation"], labels["validation"]),
        test=(probabilities[chosen]["test"], labels["test"]),
        settings=settings.calibration,
    )
    for warning in calibration["warnings"]:
        logger.warning("Calibration of %s (%s): %s", model_bundle.architecture, chosen, warning)
    log = logger.warning if decision["precision"] == "int8" or failures else logger.info
    log(
        "Quantization of %s: %s -> %s",
        model_bundle.architecture,
        decision["reason"],
        decision["precision"],
    )
    test_rows = split_manifest[split_manifest["split"] == "test"]
    served_test = probabilities[chosen]["test"].argmax(1)
    return {
        "architecture": model_bundle.architecture,
        "weights_source": model_bundle.weights_source,
        **decision,
        "chosen_variant": chosen,
        "max_accuracy_drop_points": settings.max_accuracy_drop_points,
        "fp32": variants["fp32"],
        "int8": int8,
        "calibration": calibration,
        "test_predictions": {
            str(sha): classes[int(index)]
            for sha, index in zip(test_rows["sha256"], served_test, strict=True)
        },
        "fingerprints": fingerprints,
        "failures": failures,
        "build": attempt,
        "benchmark": {
            "validation_images": len(labels["validation"]),
            "test_images": len(labels["test"]),
            "threads": settings.threads,
            "latency_iterations": int(settings.latency["iterations"]),
            "latency_warmup": int(settings.latency["warmup"]),
            "throughput": (
                f"measured while scoring validation and test, batches of "
                f"{settings.eval_batch_size}, each model's first batch excluded"
            ),
            "settings": safe_record(settings.as_record()),
            "machine": _machine(),
        },
    }


def _int8_cannot_run(
    failures: dict[str, str], method: str, architecture: str, exc: Exception
) -> None:
    failures[method] = f"{type(exc).__name__}: {exc}"
    logger.warning("int8 %s model of %s cannot run: %s", method, architecture, exc)


def _artefact(model: str | bytes | None, bundle: ClassifierBundle) -> dict[str, Any]:
    """Path and size of a model: the ONNX file, or the PyTorch weights when there is none."""
    if model is None:
        size = sum(t.numel() * t.element_size() for t in bundle.state_dict.values())
        return {"path": None, "format": "pytorch", "size_bytes": int(size)}
    if isinstance(model, bytes | bytearray):
        return {"path": None, "format": "onnx", "size_bytes": len(model)}
    return {"path": str(model), "format": "onnx", "size_bytes": storage.size(str(model))}


def _machine() -> dict[str, Any]:
    import onnxruntime

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }


def _table_rows(candidate: str, report: Mapping[str, Any]) -> list[dict[str, Any]]:
    chosen = f"int8_{report['int8_method']}" if report["precision"] == "int8" else "fp32"
    rows = []
    measured = {"fp32": report["fp32"], **{f"int8_{k}": v for k, v in report["int8"].items()}}
    for variant, m in measured.items():
        drop = round(
            (report["fp32"]["validation_accuracy"] - m["validation_accuracy"]) * 100.0,
            _POINTS_DECIMALS,
        )
        rows.append(
            {
                "candidate": candidate,
                "variant": variant,
                "runtime": m["runtime"],
                "chosen": variant == chosen,
                "validation_accuracy": m["validation_accuracy"],
                "accuracy": m["accuracy"],
                "accuracy_drop_points": drop,
                "macro_f1": m["macro_f1"],
                "agreement_with_fp32": m["agreement_with_fp32"],
                "size_mb": m["size_bytes"] / 1e6,
                "latency_ms_p50": m["latency_ms_p50"],
                "latency_ms_p95": m["latency_ms_p95"],
                "throughput_images_per_s": m["throughput_images_per_s"],
                "throughput_batch_size": m["throughput_batch_size"],
                "path": m["path"],
            }
        )
    return rows


def _chart(table: pd.DataFrame, max_drop_points: float) -> plt.Figure:
    """Accuracy, batch-1 latency (p50 with p95 whisker), throughput and size, side by side."""
    panels = [
        ("validation_accuracy", "validation accuracy (decides)", None),
        ("latency_ms_p50", "latency p50 at batch 1 (ms), bar to p95", "latency_ms_p95"),
        ("throughput_images_per_s", "throughput (images/s)", None),
        ("size_mb", "model file (MB)", None),
    ]
    candidates = list(dict.fromkeys(table["candidate"]))
    variants = list(dict.fromkeys(table["variant"]))
    width = 0.8 / max(len(variants), 1)
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0))
    colours = plt.get_cmap("tab10")
    for ax, (column, title, upper) in zip(axes, panels, strict=True):
        for j, variant in enumerate(variants):
            rows = table[table["variant"] == variant].set_index("candidate")
            xs = [i + (j - (len(variants) - 1) / 2) * width for i in range(len(candidates))]
            values = [rows[column].get(c, np.nan) for c in candidates]
            bars = ax.bar(xs, values, width, label=variant, color=colours(j))
            if upper is not None:
                highs = [rows[upper].get(c, np.nan) for c in candidates]
                ax.vlines(xs, values, highs, color="black", linewidth=1)
            for bar, c in zip(bars, candidates, strict=True):
                if c in rows.index and bool(rows.loc[c, "chosen"]):
                    bar.set_edgecolor("black")
                    bar.set_linewidth(2)
        ax.set_xticks(range(len(candidates)), candidates, rotation=15)
        ax.set_title(title, fontsize=10)
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(fontsize=8, loc="lower right")
    figure.suptitle(
        "fp32 vs int8 per candidate (thick outline: chosen; int8 allowed if validation "
        f"accuracy drops <= {max_drop_points:g} points)",
        fontsize=11,
    )
    figure.tight_layout()
    return figure


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
        "rule": (
            "int8 only if validation accuracy drops by at most max_accuracy_drop_points "
            "points against fp32; among passing int8 models, the lowest batch-1 p50 latency; "
            "thresholds calibrated on the chosen precision's validation scores; test numbers "
            "are measured, never used to choose"
        ),
        "candidates": {},
    }
    rows: list[dict[str, Any]] = []
    metrics: dict[str, dict[str, float]] = {}
    for candidate, report in reports.items():
        chosen = report["int8"].get(report["int8_method"]) if report["int8_method"] else None
        decision["candidates"][candidate] = {
            "precision": report["precision"],
            "reason": report["reason"],
            "int8_method": report["int8_method"],
            "accuracy_drop_points": report["accuracy_drop_points"],
            "max_accuracy_drop_points": report["max_accuracy_drop_points"],
            "fp32": report["fp32"],
            "int8": chosen,
            "int8_all": report["int8"],
            "model_path": (chosen or report["fp32"])["path"]
            if report["precision"] == "int8"
            else report["fp32"]["path"],
            "failure": report["failures"] or None,
            "calibration": report["calibration"],
            "test_predictions": report["test_predictions"],
            "fingerprints": report["fingerprints"],
            "architecture": report["architecture"],
            "weights_source": report["weights_source"],
            "build": report["build"],
            "benchmark": report["benchmark"],
        }
        candidate_rows = _table_rows(candidate, report)
        rows.extend(candidate_rows)
        for row in candidate_rows:
            for name in (
                "validation_accuracy",
                "accuracy",
                "macro_f1",
                "size_mb",
                "latency_ms_p50",
                "latency_ms_p95",
                "throughput_images_per_s",
            ):
                key = f"{candidate}.{row['variant']}.{name}"
                metrics[key] = {"value": float(row[name]), "step": 0}
        metrics[f"{candidate}.int8_chosen"] = {
            "value": float(report["precision"] == "int8"),
            "step": 0,
        }
        metrics[f"{candidate}.failures"] = {
            "value": float(len(report["failures"])),
            "step": 0,
        }
    table = pd.DataFrame(rows)
    figure = _chart(table, settings.max_accuracy_drop_points) if rows else plt.figure()
    return decision, table, figure, metrics


def table_markdown(table: pd.DataFrame) -> str:
    """The side-by-side table as Markdown, for reading in the MLflow UI and in reports."""
    header = (
        "| candidate | variant | chosen | val accuracy | drop (pts) | test accuracy | macro-F1 "
        "| agreement | size MB | p50 ms | p95 ms | img/s |"
    )
    lines = [header, "|" + "---|" * 12]
    for r in table.to_dict("records"):
        lines.append(
            f"| {r['candidate']} | {r['variant']} | {'yes' if r['chosen'] else ''} "
            f"| {r['validation_accuracy']:.3f} | {r['accuracy_drop_points']:.1f} "
            f"| {r['accuracy']:.3f} | {r['macro_f1']:.3f} "
            f"| {r['agreement_with_fp32']:.2f} | {r['size_mb']:.1f} | {r['latency_ms_p50']:.1f} "
            f"| {r['latency_ms_p95']:.1f} | {r['throughput_images_per_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"
