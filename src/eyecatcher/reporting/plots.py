"""Figures of a candidate's evaluation, drawn from its evaluation and training records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures go to files and MLflow; never to a screen

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def confusion_matrix_figure(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str
) -> Figure:
    """Counts per (true, predicted) class, with the row-normalised share in each cell.

    Args:
        matrix: Confusion matrix, rows true classes, columns predicted.
        classes: Class names.
        title: Figure title.

    Returns:
        The figure.
    """
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    size = 2.5 + 0.9 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=colour)
    fig.colorbar(image, ax=ax, label="share of true class")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def roc_figure(moderation: Mapping[str, Any], operating: Mapping[str, Any], title: str) -> Figure:
    """Safe-vs-unsafe ROC curve with the calibrated operating point.

    Args:
        moderation: Output of :func:`metrics.moderation_curves` on the test split.
        operating: Test rates at the calibrated threshold (``fpr``, ``recall``).
        title: Figure title.

    Returns:
        The figure.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    if moderation.get("roc"):
        ax.plot(
            moderation["roc"]["fpr"],
            moderation["roc"]["tpr"],
            label=f"ROC-AUC {_format(moderation['roc_auc'])}",
        )
        ax.scatter(
            [operating["fpr"]],
            [operating["recall"]],
            color="red",
            zorder=3,
            label=f"operating point (threshold {_format(operating['threshold'])})",
        )
    else:
        ax.text(0.5, 0.5, "undefined: one class only", ha="center")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_xlabel("false-positive rate (safe images flagged)")
    ax.set_ylabel("recall (unsafe images flagged)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def pr_figure(moderation: Mapping[str, Any], title: str) -> Figure:
    """Safe-vs-unsafe precision-recall curve (unsafe is the positive class).

    Args:
        moderation: Output of :func:`metrics.moderation_curves` on the test split.
        title: Figure title.

    Returns:
        The figure.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    if moderation.get("pr"):
        ax.plot(
            moderation["pr"]["recall"],
            moderation["pr"]["precision"],
            label=f"PR-AUC {_format(moderation['pr_auc'])}",
        )
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "undefined: one class only", ha="center")
    ax.set_xlabel("recall (unsafe)")
    ax.set_ylabel("precision (unsafe)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def training_curves_figure(history: Sequence[Mapping[str, float]], title: str) -> Figure:
    """Per-epoch loss and accuracy, training and validation side by side.

    Args:
        history: Epoch records (``epoch``, ``train_loss``, ``val_loss``, ``train_accuracy``,
            ``val_accuracy``).
        title: Figure title.

    Returns:
        The figure.
    """
    epochs = [record["epoch"] for record in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val"):
        loss_ax.plot(epochs, [r[f"{split}_loss"] for r in history], marker="o", label=split)
        acc_ax.plot(epochs, [r[f"{split}_accuracy"] for r in history], marker="o", label=split)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(-0.02, 1.02)
    loss_ax.legend()
    acc_ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def candidate_figures(
    evaluation: Mapping[str, Any], training_report: Mapping[str, Any]
) -> dict[str, Figure]:
    """Confusion matrix, ROC and PR on test, and training curves, by artifact name."""
    name = evaluation["candidate"]
    test = evaluation["test"]
    operating = {
        "fpr": test["fpr_at_threshold"],
        "recall": test["recall_at_threshold"],
        "threshold": evaluation["operating_threshold"]["threshold"],
    }
    moderation = {**test["curves"], "roc_auc": test["roc_auc"], "pr_auc": test["pr_auc"]}
    return {
        "confusion_matrix": confusion_matrix_figure(
            test["confusion_matrix"], evaluation["classes"], f"{name}: test confusion matrix"
        ),
        "roc_curve": roc_figure(moderation, operating, f"{name}: safe vs unsafe ROC (test)"),
        "pr_curve": pr_figure(moderation, f"{name}: safe vs unsafe PR (test)"),
        "training_curves": training_curves_figure(
            training_report["history"], f"{name}: training ({training_report['mode']})"
        ),
    }
