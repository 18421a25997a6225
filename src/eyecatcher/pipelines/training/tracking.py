"""The MLflow child run of a candidate: tags, metrics, plots, explanations and its model.

kedro-mlflow opens one run per ``kedro run`` (``tracking.run.nested: true``); nodes cannot
express a nested child run through the catalog, so this module is the adapter that writes it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from eyecatcher import mlflow_log
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.pipelines.training.report import finite
from eyecatcher.serving_model.packaging import pinned_versions

#: Artifact folder of the heatmap overlays in a candidate's run.
EXPLANATIONS_DIR = "explanations"


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (into ``out``)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value
    return out


def candidate_tags(
    candidate: str,
    bundle: ClassifierBundle,
    training_report: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> dict[str, str]:
    """Tags of a candidate's child run; random weights and a shaky threshold are said loudly."""
    tags = {
        "eyecatcher.stage": "training",
        "candidate": candidate,
        "architecture": bundle.architecture,
        "weights_source": bundle.weights_source,
        "random_weights": str(bundle.weights_source == "random").lower(),
        "training_mode": training_report["mode"],
        # ONNX Runtime's features match PyTorch's within a tolerance, not bit for bit.
        "feature_runtime": str(training_report.get("cache", {}).get("runtime", "torch")),
    }
    if bundle.weights_source == "random":
        tags["warning"] = (
            "RANDOM WEIGHTS: the backbone is randomly initialised; these metrics say nothing "
            "about an ImageNet-pretrained model."
        )
    if evaluation["operating_threshold"].get("warning"):
        tags["operating_threshold_warning"] = evaluation["operating_threshold"]["warning"]
    return tags


def summary_metrics(
    training_report: Mapping[str, Any], evaluation: Mapping[str, Any]
) -> dict[str, float]:
    """The flat, finite metrics of a candidate: validation and test, size, time, cache."""
    summary: dict[str, Any] = {}
    for split in ("validation", "test"):
        record = evaluation[split]
        for name in (
            "accuracy",
            "macro_f1",
            "roc_auc",
            "pr_auc",
            "recall_at_threshold",
            "fpr_at_threshold",
        ):
            summary[f"{split}.{name}"] = record[name]
        for cls, values in record["per_class"].items():
            summary[f"{split}.recall.{cls}"] = values["recall"]
            summary[f"{split}.precision.{cls}"] = values["precision"]
    summary["operating_threshold"] = evaluation["operating_threshold"]["threshold"]
    summary["model_size_mb"] = training_report["model_size_bytes"] / 1e6
    summary["head_size_kb"] = training_report["head_size_bytes"] / 1e3
    summary["n_parameters"] = training_report["n_parameters"]
    summary["n_trainable_parameters"] = training_report["n_trainable_parameters"]
    summary["feature_cache_hits"] = training_report["cache"]["hits"]
    summary["feature_cache_misses"] = training_report["cache"]["misses"]
    for name, seconds in training_report["timings_s"].items():
        summary[f"time_s.{name}"] = seconds
    summary["time_s.evaluation"] = evaluation["timings_s"]["evaluation"]
    return {k: float(v) for k, v in summary.items() if finite(v)}


def log_history(history: list[Mapping[str, Any]]) -> None:
    """Per-epoch metrics, one step per epoch."""
    for record in history:
        mlflow.log_metrics(
            {k: v for k, v in record.items() if k != "epoch" and finite(v)},
            step=int(record["epoch"]),
        )


def bundle_info(bundle: ClassifierBundle) -> dict[str, Any]:
    """Everything in a bundle except its weights."""
    return {
        "architecture": bundle.architecture,
        "classes": bundle.classes,
        "safe_class": bundle.safe_class,
        "data_config": bundle.data_config,
        "weights_source": bundle.weights_source,
        "model_kwargs": bundle.model_kwargs,
        "metadata": bundle.metadata,
    }


#: Distributions a logged head model needs to load and predict.
HEAD_DISTRIBUTIONS = ("torch", "cloudpickle", "numpy", "pandas")


def log_head_model(bundle: ClassifierBundle, candidate: str, *, full_bundle: bool) -> str:
    """Log the trained head as the run's MLflow model; return its model id.

    The head (pooled backbone features -> logits) is what training changed; the frozen
    backbone is named by ``bundle_info.json`` (architecture, weights source, seed). The raw
    head state dict and, with ``full_bundle``, the whole bundle are run artifacts under
    ``model/``.
    """
    head = bundle.build_model().get_classifier().eval()
    n_features = next(p for p in head.parameters() if p.dim() == 2).shape[1]
    example = np.zeros((1, n_features), dtype=np.float32)
    info = mlflow.pytorch.log_model(
        head,
        name=f"{candidate}-head",
        serialization_format="pickle",
        input_example=example,
        # What loading the pickled head needs (MLflow adds itself); stated rather than
        # inferred, which would load the model in a subprocess.
        pip_requirements=pinned_versions(HEAD_DISTRIBUTIONS),
        params={"architecture": bundle.architecture, "weights_source": bundle.weights_source},
        tags={"candidate": candidate, "part": "classifier head (backbone frozen)"},
    )
    with tempfile.TemporaryDirectory() as tmp:
        head_path = Path(tmp) / "head_state_dict.pt"
        torch.save(head.state_dict(), head_path)
        mlflow.log_artifact(str(head_path), "model")
        mlflow_log.log_dict(bundle_info(bundle), "model/bundle_info.json")
        if full_bundle:
            bundle_path = Path(tmp) / "model_bundle.pt"
            bundle.save(bundle_path)
            mlflow.log_artifact(str(bundle_path), "model")
    return info.model_id


def log_figures(figures: Mapping[str, Figure]) -> None:
    """Plots under ``plots/``; the figures are closed afterwards."""
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"plots/{name}.png")
        plt.close(figure)


def log_explanations(overlays: Mapping[str, Any], index: Mapping[str, Any]) -> None:
    """Heatmap overlays under ``explanations/`` with the index that says why each was chosen.

    Args:
        overlays: ``{file stem: image}``; a value may also be a loader of the image (what a
            ``PartitionedDataset`` gives when the overlays are read back from the catalog).
        index: The explanation index (``explain_candidate``'s second output).
    """
    for name, image in overlays.items():
        loaded: Image.Image = image() if callable(image) else image
        mlflow.log_image(loaded, artifact_file=f"{EXPLANATIONS_DIR}/{name}.png")
    mlflow_log.log_dict(dict(index), f"{EXPLANATIONS_DIR}/index.json")
