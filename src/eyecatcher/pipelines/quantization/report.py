"""The quantization report: the decision record, the side-by-side table, its chart, metrics.

What :func:`.nodes.summarise_quantization` writes for registration (``quantization_decision``),
for reviewers (the table, its Markdown and the chart) and for MLflow (metrics), from the
per-candidate reports of :func:`.nodes.benchmark_candidate`.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import torch

from eyecatcher import storage
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.pipelines.quantization.decision import drop_points

matplotlib.use("Agg")  # figures are written to files and MLflow, never shown
import matplotlib.pyplot as plt

#: The rule, as the decision record states it.
RULE = (
    "int8 only if validation accuracy drops by at most max_accuracy_drop_points "
    "points against fp32; among passing int8 models, the lowest batch-1 p50 latency; "
    "thresholds calibrated on the chosen precision's validation scores; test numbers "
    "are measured, never used to choose"
)

#: The table's columns logged to MLflow per candidate and variant.
METRIC_COLUMNS = (
    "validation_accuracy",
    "accuracy",
    "macro_f1",
    "size_mb",
    "latency_ms_p50",
    "latency_ms_p95",
    "throughput_images_per_s",
)


def artefact(model: str | bytes | None, bundle: ClassifierBundle) -> dict[str, Any]:
    """Path and size of a model: the ONNX file, or the PyTorch weights when there is none."""
    if model is None:
        size = sum(t.numel() * t.element_size() for t in bundle.state_dict.values())
        return {"path": None, "format": "pytorch", "size_bytes": int(size)}
    if isinstance(model, bytes | bytearray):
        return {"path": None, "format": "onnx", "size_bytes": len(model)}
    return {"path": str(model), "format": "onnx", "size_bytes": storage.size(str(model))}


def machine() -> dict[str, Any]:
    """Where the benchmark ran (platform, CPU, runtime versions)."""
    import onnxruntime

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }


def candidate_decision(report: Mapping[str, Any]) -> dict[str, Any]:
    """One candidate's entry of ``quantization_decision`` (what registration reads)."""
    chosen = report["int8"].get(report["int8_method"]) if report["int8_method"] else None
    return {
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


def candidate_metrics(
    candidate: str, rows: list[dict[str, Any]], report: Mapping[str, Any]
) -> dict[str, dict[str, float]]:
    """MLflow metrics ``<candidate>.<variant>.<metric>``, ``int8_chosen`` and ``failures``."""
    metrics = {
        f"{candidate}.{row['variant']}.{name}": {"value": float(row[name]), "step": 0}
        for row in rows
        for name in METRIC_COLUMNS
    }
    metrics[f"{candidate}.int8_chosen"] = {
        "value": float(report["precision"] == "int8"),
        "step": 0,
    }
    metrics[f"{candidate}.failures"] = {"value": float(len(report["failures"])), "step": 0}
    return metrics


def table_rows(candidate: str, report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per variant of a candidate (fp32 and each int8 method) for the table."""
    chosen = f"int8_{report['int8_method']}" if report["precision"] == "int8" else "fp32"
    rows = []
    measured = {"fp32": report["fp32"], **{f"int8_{k}": v for k, v in report["int8"].items()}}
    for variant, m in measured.items():
        drop = drop_points(report["fp32"]["validation_accuracy"], m["validation_accuracy"])
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


def chart(table: pd.DataFrame, max_drop_points: float) -> plt.Figure:
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
