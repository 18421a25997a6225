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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import matplotlib
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from eyecatcher.images import decode_image
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.onnx_runtime import (
    DEFAULT_OPSET,
    METHODS,
    OnnxClassifier,
    export_onnx,
    quantize_onnx,
)
from eyecatcher.pipelines.quantization.measure import (
    classification_scores,
    compare_latency_ms,
    compare_throughput_ips,
    predict_in_batches,
)
from eyecatcher.preprocessing import images_to_batch

matplotlib.use("Agg")  # figures are written to files and MLflow, never shown
import matplotlib.pyplot as plt

logger = logging.getLogger(__name__)

#: Accuracy drops are compared after rounding to this many decimals (in points), so that one
#: image out of 20 (exactly 5 points) is not "5.000000000000004 > 5".
_POINTS_DECIMALS = 6


@dataclass(frozen=True)
class QuantizationSettings:
    """The ``quantization`` parameter block, validated (see ``parameters_quantization.yml``)."""

    methods: tuple[str, ...] = ("static",)
    max_accuracy_drop_points: float = 5.0
    calibration_size: int = 32
    calibration_seed: int = 0
    per_channel: bool = True
    reduce_range: bool = False
    threads: int = 2
    opset: int = DEFAULT_OPSET
    export_tolerance: float = 1e-3
    eval_batch_size: int = 16
    latency: dict[str, int] = field(default_factory=lambda: {"warmup": 3, "iterations": 20})
    throughput: dict[str, int] = field(
        default_factory=lambda: {"batch_size": 32, "warmup": 1, "iterations": 2}
    )
    by_architecture: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], architecture: str | None = None
    ) -> QuantizationSettings:
        """Build and validate the settings; unknown keys and bad values are clear errors.

        Args:
            params: The ``quantization`` parameter block.
            architecture: A timm architecture whose ``by_architecture`` overrides apply (which
                int8 method wins depends on the network, see docs/quantization.md).

        Raises:
            ValueError: For an unknown key, an unknown method, or an out-of-range value.
        """
        known = set(cls.__dataclass_fields__)
        unknown = set(params) - known
        for arch, override in dict(params.get("by_architecture") or {}).items():
            unknown |= {f"by_architecture.{arch}.{k}" for k in set(override) - known}
            if "by_architecture" in override:
                unknown.add(f"by_architecture.{arch}.by_architecture")
        if unknown:
            raise ValueError(
                f"Unknown quantization parameter(s) {sorted(unknown)}; known: {sorted(known)}."
            )
        values = dict(params)
        values["by_architecture"] = dict(values.get("by_architecture") or {})
        values.update(values["by_architecture"].get(architecture, {}) if architecture else {})
        if "methods" in values:
            values["methods"] = tuple(values["methods"])
        defaults = cls()
        for block in ("latency", "throughput"):
            if block in values:
                values[block] = {**getattr(defaults, block), **dict(values[block])}
        settings = cls(**values)
        bad = [m for m in settings.methods if m not in METHODS]
        if bad or not settings.methods:
            raise ValueError(
                f"quantization.methods must be a non-empty subset of {METHODS}, got "
                f"{list(settings.methods)}."
            )
        if settings.max_accuracy_drop_points < 0:
            raise ValueError("quantization.max_accuracy_drop_points must be >= 0.")
        positive = {
            "calibration_size": settings.calibration_size,
            "threads": settings.threads,
            "eval_batch_size": settings.eval_batch_size,
            "latency.iterations": settings.latency["iterations"],
            "throughput.batch_size": settings.throughput["batch_size"],
            "throughput.iterations": settings.throughput["iterations"],
        }
        for name, value in positive.items():
            if int(value) < 1:
                raise ValueError(f"quantization.{name} must be >= 1, got {value}.")
        return settings


def _read_split(
    manifest: pd.DataFrame,
    split: str,
    classes: list[str],
    *,
    sample_size: int | None = None,
    seed: int = 0,
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
    for uri in tqdm(rows["uri"], desc=f"decode {split} images", leave=False):
        try:
            with fsspec.open(uri, "rb") as handle:
                images.append(decode_image(handle.read()))
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

    The exported model is checked against the PyTorch model on up to 8 calibration images
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
        start = time.perf_counter()
        try:
            export_onnx(
                model, model_bundle.data_config["input_size"], fp32_path, opset=settings.opset
            )
            check = calibration[:8] if calibration is not None else _zeros(model_bundle)
            with torch.inference_mode():
                expected = model(torch.from_numpy(check)).numpy()
            got = OnnxClassifier(fp32_path, threads=settings.threads).predict_logits(check)
            max_diff = float(np.abs(expected - got).max())
            # Relative to the logits' scale: float reassociation grows with their magnitude.
            allowed = settings.export_tolerance * max(1.0, float(np.abs(expected).max()))
            attempt["export"] = {
                "seconds": time.perf_counter() - start,
                "max_abs_logit_diff": max_diff,
                "allowed_diff": allowed,
                "opset": settings.opset,
            }
            if not max_diff <= allowed:
                raise RuntimeError(
                    f"ONNX logits differ from PyTorch by {max_diff:.3g} > {allowed:.3g}"
                )
        except Exception as exc:  # an unexportable model keeps fp32 (PyTorch), recorded
            attempt["failure"] = _failure("export", exc)
            logger.warning(
                "ONNX export of %s failed; it stays fp32 (PyTorch) with no int8 model: %s",
                model_bundle.architecture,
                attempt["failure"]["error"],
            )
            return {}, attempt
        models["fp32"] = fp32_path.read_bytes()

        for method in tqdm(settings.methods, desc="quantize", leave=False):
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
            models[f"int8_{method}"] = int8_path.read_bytes()
    return models, attempt


def _zeros(bundle: ClassifierBundle) -> np.ndarray:
    return np.zeros((1, *bundle.data_config["input_size"]), dtype=np.float32)


def _timings(
    predictors: Mapping[str, Any], batch: np.ndarray, settings: QuantizationSettings
) -> dict[str, dict[str, Any]]:
    """Latency and throughput of every model, measured round-robin (see ``measure``)."""
    latency = compare_latency_ms(
        predictors,
        batch,
        iterations=int(settings.latency["iterations"]),
        warmup=int(settings.latency["warmup"]),
    )
    throughput = compare_throughput_ips(
        predictors,
        batch,
        batch_size=int(settings.throughput["batch_size"]),
        iterations=int(settings.throughput["iterations"]),
        warmup=int(settings.throughput["warmup"]),
    )
    return {
        name: {
            "latency_ms_p50": latency[name]["p50"],
            "latency_ms_p95": latency[name]["p95"],
            "latency_ms_mean": latency[name]["mean"],
            "throughput_images_per_s": throughput[name]["images_per_s"],
            "throughput_batch_size": throughput[name]["batch_size"],
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


def benchmark_candidate(
    onnx_models: Mapping[str, str | bytes],
    model_bundle: ClassifierBundle,
    split_manifest: pd.DataFrame,
    attempt: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    """Measure fp32 and each int8 model side by side on the test split, then decide.

    All models run in ONNX Runtime with the same fixed thread count on the same preprocessed
    test images; warm-up calls are excluded from the timings. If the export failed, fp32 is
    measured with PyTorch instead (and there is no int8 model).

    Args:
        onnx_models: ``{variant: path or serialized model}`` from :func:`build_onnx_models`.
        model_bundle: The trained candidate.
        split_manifest: The split manifest (its ``test`` split is measured).
        attempt: The record returned by :func:`build_onnx_models`.
        params: The ``quantization`` parameter block.

    Returns:
        The candidate's report: the decision (``precision``, ``reason``, drop in points),
        ``fp32`` and ``int8`` measurements (accuracy, macro-F1, agreement with fp32, size,
        latency p50/p95 at batch 1, throughput), model paths, and failures.

    Raises:
        ValueError: If the test split is empty or unreadable (nothing to measure on).
    """
    settings = QuantizationSettings.from_params(params, model_bundle.architecture)
    images, labels = _read_split(split_manifest, "test", model_bundle.classes)
    if not images:
        raise ValueError("The test split is empty: there is nothing to benchmark on.")
    batch = images_to_batch(images, model_bundle.data_config).numpy()
    n_classes = len(model_bundle.classes)
    failures: dict[str, str] = {}
    if attempt.get("failure"):
        failures[attempt["failure"]["stage"]] = attempt["failure"]["error"]
    for method, outcome in attempt.get("methods", {}).items():
        if outcome.get("failure"):
            failures[method] = outcome["failure"]["error"]

    if "fp32" in onnx_models:
        fp32_model = onnx_models["fp32"]
        runner = OnnxClassifier(fp32_model, threads=settings.threads, spinning=False)
        fp32_predict, fp32_runtime = runner.predict_logits, "onnxruntime"
    else:
        torch_model = model_bundle.build_model()
        fp32_model = None

        def fp32_predict(x: np.ndarray) -> np.ndarray:
            # The same fixed thread count as ONNX Runtime, without changing it for later nodes.
            previous = torch.get_num_threads()
            torch.set_num_threads(settings.threads)
            try:
                with torch.inference_mode():
                    return torch_model(torch.from_numpy(x)).numpy()
            finally:
                torch.set_num_threads(previous)

        fp32_runtime = "torch"
    fp32_predictions = predict_in_batches(fp32_predict, batch, settings.eval_batch_size).argmax(1)
    predictors: dict[str, Any] = {"fp32": fp32_predict}
    variants: dict[str, dict[str, Any]] = {
        "fp32": {
            "runtime": fp32_runtime,
            **_artefact(fp32_model, model_bundle),
            **classification_scores(labels, fp32_predictions, n_classes),
            "agreement_with_fp32": 1.0,
        }
    }
    for method in settings.methods:
        key = f"int8_{method}"
        if key not in onnx_models:
            continue
        try:
            runner = OnnxClassifier(onnx_models[key], threads=settings.threads, spinning=False)
            predictions = predict_in_batches(
                runner.predict_logits, batch, settings.eval_batch_size
            ).argmax(axis=1)
        except Exception as exc:  # an int8 graph the runtime cannot execute is a failure too
            failures[method] = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "int8 %s model of %s cannot run: %s", method, model_bundle.architecture, exc
            )
            continue
        predictors[key] = runner.predict_logits
        variants[key] = {
            "runtime": "onnxruntime",
            "method": method,
            **_artefact(onnx_models[key], model_bundle),
            **classification_scores(labels, predictions, n_classes),
            "agreement_with_fp32": float((predictions == fp32_predictions).mean()),
        }
    for key, timing in _timings(predictors, batch, settings).items():
        variants[key].update(timing)
    int8 = {variants[key]["method"]: variants[key] for key in variants if key != "fp32"}

    decision = decide_precision(variants["fp32"], int8, settings.max_accuracy_drop_points, failures)
    log = logger.warning if decision["precision"] == "int8" or failures else logger.info
    log(
        "Quantization of %s: %s -> %s",
        model_bundle.architecture,
        decision["reason"],
        decision["precision"],
    )
    return {
        "architecture": model_bundle.architecture,
        "weights_source": model_bundle.weights_source,
        **decision,
        "max_accuracy_drop_points": settings.max_accuracy_drop_points,
        "fp32": variants["fp32"],
        "int8": int8,
        "failures": failures,
        "build": attempt,
        "benchmark": {
            "test_images": len(images),
            "threads": settings.threads,
            "latency_iterations": int(settings.latency["iterations"]),
            "latency_warmup": int(settings.latency["warmup"]),
            "throughput_batch_size": int(settings.throughput["batch_size"]),
            "throughput_iterations": int(settings.throughput["iterations"]),
            "settings": asdict(settings),
            "machine": _machine(),
        },
    }


def _artefact(model: str | bytes | None, bundle: ClassifierBundle) -> dict[str, Any]:
    """Path and size of a model: the ONNX file, or the PyTorch weights when there is none."""
    if model is None:
        size = sum(t.numel() * t.element_size() for t in bundle.state_dict.values())
        return {"path": None, "format": "pytorch", "size_bytes": int(size)}
    if isinstance(model, bytes | bytearray):
        return {"path": None, "format": "onnx", "size_bytes": len(model)}
    return {"path": str(model), "format": "onnx", "size_bytes": Path(model).stat().st_size}


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
        drop = round((report["fp32"]["accuracy"] - m["accuracy"]) * 100.0, _POINTS_DECIMALS)
        rows.append(
            {
                "candidate": candidate,
                "variant": variant,
                "runtime": m["runtime"],
                "chosen": variant == chosen,
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
        ("accuracy", "test accuracy", None),
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
        f"fp32 vs int8 per candidate (thick outline: chosen; int8 allowed if accuracy drops "
        f"<= {max_drop_points:g} points)",
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
            "int8 only if test accuracy drops by at most max_accuracy_drop_points points "
            "against fp32; among passing int8 models, the lowest batch-1 p50 latency"
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
            "architecture": report["architecture"],
            "weights_source": report["weights_source"],
            "build": report["build"],
            "benchmark": report["benchmark"],
        }
        candidate_rows = _table_rows(candidate, report)
        rows.extend(candidate_rows)
        for row in candidate_rows:
            for name in (
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
        "| candidate | variant | chosen | accuracy | drop (pts) | macro-F1 | agreement "
        "| size MB | p50 ms | p95 ms | img/s |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in table.to_dict("records"):
        lines.append(
            f"| {r['candidate']} | {r['variant']} | {'yes' if r['chosen'] else ''} "
            f"| {r['accuracy']:.3f} | {r['accuracy_drop_points']:.1f} | {r['macro_f1']:.3f} "
            f"| {r['agreement_with_fp32']:.2f} | {r['size_mb']:.1f} | {r['latency_ms_p50']:.1f} "
            f"| {r['latency_ms_p95']:.1f} | {r['throughput_images_per_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"
