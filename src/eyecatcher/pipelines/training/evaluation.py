"""Evaluating a trained candidate: probabilities per split, metrics, the operating threshold,
and the per-image test predictions that explanations pick their examples from."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from eyecatcher import metrics
from eyecatcher.features.cache import BackboneKey, FeatureCache
from eyecatcher.features.compute import compute_features
from eyecatcher.features.views import CLEAN_VIEW, ViewSpec
from eyecatcher.models.softmax import softmax

logger = logging.getLogger(__name__)

#: A split's labels, probabilities and images, as evaluated.
SplitResult = tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]


def predict_probabilities(
    model: torch.nn.Module,
    key: BackboneKey,
    images: list[tuple[str, str]],
    *,
    cache: FeatureCache | None,
    batch_size: int,
    device: torch.device,
    description: str,
    storage_options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Softmax probabilities ``(len(images), n_classes)`` from clean-view (cached) features.

    ``storage_options`` are the fsspec options of the image source.
    """
    features, _ = compute_features(
        model,
        key,
        images,
        [ViewSpec(CLEAN_VIEW)],
        cache=cache,
        batch_size=batch_size,
        device=device,
        description=description,
        storage_options=storage_options,
    )
    with torch.no_grad():
        inputs = torch.as_tensor(features[CLEAN_VIEW], device=device)
        logits = model.get_classifier()(inputs)
    # float32 as before; computed by the one softmax the served model uses.
    return softmax(logits.cpu().numpy()).astype(np.float32)


def _split_record(
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: list[str],
    safe_index: int,
    threshold: float,
) -> dict[str, Any]:
    classification = metrics.classification_metrics(labels, probabilities.argmax(axis=1), classes)
    is_unsafe = labels != safe_index
    scores = metrics.unsafe_scores(probabilities, safe_index)
    moderation = metrics.moderation_curves(scores, is_unsafe)
    at_threshold = metrics.rates_at_threshold(scores, is_unsafe, threshold)
    return {
        "accuracy": classification["accuracy"],
        "macro_f1": classification["macro_f1"],
        "roc_auc": moderation["roc_auc"],
        "pr_auc": moderation["pr_auc"],
        "recall_at_threshold": at_threshold["recall"],
        "fpr_at_threshold": at_threshold["fpr"],
        "n": classification["n"],
        "per_class": classification["per_class"],
        "confusion_matrix": classification["confusion_matrix"],
        "curves": {"roc": moderation["roc"], "pr": moderation["pr"]},
    }


def evaluation_record(
    results: Mapping[str, SplitResult],
    classes: list[str],
    safe_class: str,
    target_fpr: float,
    *,
    candidate: str,
) -> dict[str, Any]:
    """Metrics per split and the operating threshold, calibrated on validation.

    Args:
        results: ``validation`` and ``test`` results.
        classes: Class names in logit order.
        safe_class: The class meaning "nothing to moderate".
        target_fpr: The false-positive rate the threshold is calibrated for.
        candidate: Name, for warnings.

    Returns:
        ``validation`` and ``test`` records and ``operating_threshold``.
    """
    safe_index = classes.index(safe_class)
    val_labels, val_probs, _ = results["validation"]
    val_scores = metrics.unsafe_scores(val_probs, safe_index)
    calibration = metrics.calibrate_threshold(val_scores, val_labels != safe_index, target_fpr)
    if calibration["warning"]:
        logger.warning("Candidate %s: %s.", candidate, calibration["warning"])
    record: dict[str, Any] = {
        split: _split_record(labels, probs, classes, safe_index, calibration["threshold"])
        for split, (labels, probs, _) in results.items()
    }
    record["operating_threshold"] = {
        "unsafe_score": "1 - p(safe)",
        "rule": "flag when unsafe_score > threshold",
        "calibrated_on": "validation",
        **calibration,
        "test_recall": record["test"]["recall_at_threshold"],
        "test_fpr": record["test"]["fpr_at_threshold"],
    }
    return record


def prediction_table(
    result: SplitResult, classes: list[str], safe_class: str, threshold: float | None
) -> pd.DataFrame:
    """One row per image of a split: truth, prediction, confidence, unsafe score, flag.

    Columns: ``sha256``, ``uri``, ``class``, ``predicted``, ``confidence`` (p of the predicted
    class), ``correct``, ``unsafe_score`` (``1 - p(safe)``), ``flagged`` (unsafe score above
    the operating threshold; null without one), ``probabilities`` (JSON ``{class: p}``).
    """
    labels, probabilities, images = result
    predicted = probabilities.argmax(axis=1)
    scores = metrics.unsafe_scores(probabilities, classes.index(safe_class))
    return pd.DataFrame(
        {
            "sha256": [sha for sha, _ in images],
            "uri": [uri for _, uri in images],
            "class": [classes[i] for i in labels],
            "predicted": [classes[i] for i in predicted],
            "confidence": probabilities.max(axis=1).astype(float),
            "correct": predicted == labels,
            "unsafe_score": scores.astype(float),
            "flagged": pd.array(
                [None if threshold is None else bool(s > threshold) for s in scores],
                dtype="boolean",
            ),
            "probabilities": [
                json.dumps({c: round(float(p), 6) for c, p in zip(classes, row, strict=True)})
                for row in probabilities
            ],
        }
    )
