"""Classification and moderation metrics of a candidate, as plain JSON-ready numbers.

Two views of the same predictions:

* **classes** -- accuracy, macro-F1, per-class precision and recall, confusion matrix;
* **moderation** -- safe vs unsafe, with the unsafe score ``1 - p(safe)``: ROC-AUC, PR-AUC and
  an operating threshold chosen on the validation split for a target false-positive rate
  (innocent images flagged), then measured on the test split.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

logger = logging.getLogger(__name__)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/support and the confusion matrix.

    Classes absent from ``y_true`` still get a row (recall 0 with support 0) so that every
    candidate reports the same shape; sklearn's ``zero_division=0`` applies.

    Args:
        y_true: True class indices.
        y_pred: Predicted class indices.
        classes: Class names in index order.

    Returns:
        ``accuracy``, ``macro_f1``, ``per_class`` (name -> precision, recall, f1, support),
        ``confusion_matrix`` (rows: true class, columns: predicted) and ``n``.
    """
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else math.nan,
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def calibrate_threshold(
    unsafe_score: np.ndarray, is_unsafe: np.ndarray, target_fpr: float
) -> dict[str, Any]:
    """The lowest threshold whose false-positive rate stays within ``target_fpr``.

    An image is flagged when its unsafe score is **strictly greater** than the threshold. With
    ``n`` safe images, at most ``k = floor(target_fpr * n)`` of them may be flagged, so the
    threshold is the ``(k+1)``-th highest safe score: every lower threshold flags more safe
    images than allowed, and this one flags at most ``k`` (ties included), which keeps recall
    as high as the constraint allows.

    Args:
        unsafe_score: ``1 - p(safe)`` per image.
        is_unsafe: Whether each image is truly unsafe.
        target_fpr: Largest acceptable share of safe images flagged.

    Returns:
        ``threshold``, ``target_fpr``, ``fpr`` and ``recall`` achieved on these images,
        ``n_safe``, ``n_unsafe``, ``resolution`` (the smallest FPR step, ``1/n_safe``) and
        ``warning`` (``None`` or why the threshold should be read with care).

    Raises:
        ValueError: If there is no safe image to calibrate on.
    """
    unsafe_score = np.asarray(unsafe_score, dtype=float)
    is_unsafe = np.asarray(is_unsafe, dtype=bool)
    safe_scores = np.sort(unsafe_score[~is_unsafe])[::-1]
    n_safe, n_unsafe = len(safe_scores), int(is_unsafe.sum())
    if n_safe == 0:
        raise ValueError("Cannot calibrate an FPR threshold without safe images.")
    allowed = math.floor(target_fpr * n_safe + 1e-9)
    threshold = float(safe_scores[allowed]) if allowed < n_safe else -math.inf
    flagged = unsafe_score > threshold
    warning = None
    if n_safe * target_fpr < 1:
        warning = (
            f"only {n_safe} safe images to calibrate on: the smallest FPR they can resolve is "
            f"{1 / n_safe:.1%}, above the {target_fpr:.1%} target, so the threshold flags no "
            "safe calibration image and may be stricter than needed"
        )
    return {
        "threshold": threshold,
        "target_fpr": float(target_fpr),
        "fpr": float(flagged[~is_unsafe].mean()),
        "recall": float(flagged[is_unsafe].mean()) if n_unsafe else math.nan,
        "n_safe": n_safe,
        "n_unsafe": n_unsafe,
        "resolution": 1 / n_safe,
        "warning": warning,
    }


def rates_at_threshold(
    unsafe_score: np.ndarray, is_unsafe: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Recall (unsafe images flagged) and FPR (safe images flagged) at ``threshold``.

    Returns:
        ``threshold``, ``recall``, ``fpr``, ``n_safe``, ``n_unsafe``; a rate whose denominator
        is empty is NaN.
    """
    unsafe_score = np.asarray(unsafe_score, dtype=float)
    is_unsafe = np.asarray(is_unsafe, dtype=bool)
    flagged = unsafe_score > threshold
    return {
        "threshold": float(threshold),
        "recall": float(flagged[is_unsafe].mean()) if is_unsafe.any() else math.nan,
        "fpr": float(flagged[~is_unsafe].mean()) if (~is_unsafe).any() else math.nan,
        "n_safe": int((~is_unsafe).sum()),
        "n_unsafe": int(is_unsafe.sum()),
    }


def moderation_curves(unsafe_score: np.ndarray, is_unsafe: np.ndarray) -> dict[str, Any]:
    """ROC-AUC, PR-AUC (average precision) and the curve points, safe vs unsafe.

    Both AUCs are NaN (with a warning) when only one of safe/unsafe is present.

    Returns:
        ``roc_auc``, ``pr_auc``, ``roc`` (``fpr``, ``tpr``) and ``pr`` (``precision``,
        ``recall``) point lists.
    """
    is_unsafe = np.asarray(is_unsafe, dtype=bool)
    if is_unsafe.all() or not is_unsafe.any():
        logger.warning("Safe-vs-unsafe AUCs are undefined: only one of the two is present.")
        return {"roc_auc": math.nan, "pr_auc": math.nan, "roc": None, "pr": None}
    fpr, tpr, _ = roc_curve(is_unsafe, unsafe_score)
    precision, recall, _ = precision_recall_curve(is_unsafe, unsafe_score)
    return {
        "roc_auc": float(roc_auc_score(is_unsafe, unsafe_score)),
        "pr_auc": float(average_precision_score(is_unsafe, unsafe_score)),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "pr": {"precision": precision.tolist(), "recall": recall.tolist()},
    }


def unsafe_scores(probabilities: np.ndarray, safe_index: int) -> np.ndarray:
    """``1 - p(safe)``: the probability mass on every unsafe class together."""
    return 1.0 - np.asarray(probabilities)[:, safe_index]
