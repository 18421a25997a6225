"""Calibration at the served precision: thresholds from validation, honest numbers on test.

Quantization is the first stage that knows which precision will answer requests, so the
decision thresholds are calibrated here, on the validation scores of **that** model (int8 when
int8 is served), and measured once on the test split with 95% Wilson intervals. Test numbers
are reported and gated, never used to choose anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import field_validator
from scipy.stats import norm

from eyecatcher.metrics import calibrate_threshold, rates_at_threshold
from eyecatcher.parameters import Settings
from eyecatcher.serving_model.decision import calibrate_block_thresholds


class CalibrationSettings(Settings):
    """The ``quantization.calibration`` block (see ``parameters_quantization.yml``).

    Attributes:
        target_fpr: Largest share of safe validation images sent to review.
        block_classes: Classes severe enough to be blocked without a human; every other
            unsafe class is at most ``review``.
        max_false_block_rate: Largest share of validation images of non-blocking classes
            (safe, swimwear, ...) that a block threshold may block.
        min_block_probability: No block threshold is lower than this probability.
        confidence: Coverage of the reported intervals.
    """

    kind = "quantization.calibration"

    target_fpr: float = 0.01
    block_classes: tuple[str, ...] = ("explicit_nudity", "explicit_sexual_activity")
    max_false_block_rate: float = 0.005
    min_block_probability: float = 0.9
    confidence: float = 0.95

    @field_validator("target_fpr", "max_false_block_rate", "min_block_probability")
    @classmethod
    def _probability(cls, value: float) -> float:
        """Reject values that cannot mean anything."""
        if not 0.0 <= value <= 1.0:
            raise ValueError("must be in [0, 1]")
        return value

    @field_validator("confidence")
    @classmethod
    def _confidence(cls, value: float) -> float:
        if not 0.5 <= value < 1.0:
            raise ValueError("must be in [0.5, 1)")
        return value


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> list[float]:
    """The Wilson score interval of a proportion (``[nan, nan]`` when ``total`` is 0).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n
    successes, which matters for the small counts of moderation test sets.
    """
    if total <= 0:
        return [math.nan, math.nan]
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _rates(
    probabilities: np.ndarray,
    labels: np.ndarray,
    safe_index: int,
    threshold: float,
    confidence: float,
) -> dict[str, Any]:
    is_unsafe = labels != safe_index
    scores = 1.0 - probabilities[:, safe_index]
    rates = rates_at_threshold(scores, is_unsafe, threshold)
    flagged = scores > threshold
    correct = int((probabilities.argmax(axis=1) == labels).sum())
    return {
        "n": len(labels),
        "accuracy": correct / len(labels) if len(labels) else math.nan,
        "accuracy_ci": wilson_interval(correct, len(labels), confidence),
        "recall": rates["recall"],
        "recall_ci": wilson_interval(int(flagged[is_unsafe].sum()), rates["n_unsafe"], confidence),
        "fpr": rates["fpr"],
        "fpr_ci": wilson_interval(int(flagged[~is_unsafe].sum()), rates["n_safe"], confidence),
        "n_safe": rates["n_safe"],
        "n_unsafe": rates["n_unsafe"],
    }


def calibrate(
    *,
    precision: str,
    classes: Sequence[str],
    safe_class: str,
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    settings: CalibrationSettings,
) -> dict[str, Any]:
    """Thresholds from the validation scores of the served model; rates on test.

    Args:
        precision: The precision the scores come from (recorded with the thresholds).
        classes: Class names in probability order.
        safe_class: The class meaning "nothing to moderate".
        validation: ``(probabilities, labels)`` of the validation split.
        test: ``(probabilities, labels)`` of the test split.
        settings: Target FPR, blocking classes and limits.

    Returns:
        ``precision``, ``operating_threshold`` (review, on ``1 - p(safe)``), ``target_fpr``,
        ``block`` (per blocking class: threshold and its validation rates), ``ignored_block_
        classes`` (configured but not classes of this model), ``validation`` and ``test``
        (accuracy, unsafe recall and FPR at the operating threshold, each with its interval)
        and ``warnings``.
    """
    classes = list(classes)
    safe_index = classes.index(safe_class)
    val_probs, val_labels = validation
    val_scores = 1.0 - val_probs[:, safe_index]
    operating = calibrate_threshold(val_scores, val_labels != safe_index, settings.target_fpr)
    # -inf (every safe image may be flagged) is not a probability: review everything unsafe.
    threshold = max(float(operating["threshold"]), 0.0)
    warnings = [operating["warning"]] if operating["warning"] else []
    blocking = [name for name in settings.block_classes if name in classes]
    ignored = [name for name in settings.block_classes if name not in classes]
    if ignored:
        warnings.append(
            f"block classes {ignored} are not classes of this model ({classes}); they are "
            "ignored" + ("" if blocking else ", so this model never blocks (review at most)")
        )
    block = calibrate_block_thresholds(
        val_probs,
        val_labels,
        classes,
        blocking,
        max_false_block_rate=settings.max_false_block_rate,
        min_probability=settings.min_block_probability,
    )
    return {
        "precision": precision,
        "calibrated_on": "validation",
        "rule": (
            "review when 1 - p(safe) > operating_threshold; block when the sum of "
            "p(class) over block_classes > block[class]"
        ),
        "target_fpr": settings.target_fpr,
        "operating_threshold": threshold,
        "block": block,
        "block_classes": blocking,
        "ignored_block_classes": ignored,
        "confidence": settings.confidence,
        "validation": _rates(val_probs, val_labels, safe_index, threshold, settings.confidence),
        "test": _rates(*test, safe_index, threshold, settings.confidence),
        "warnings": warnings,
    }
