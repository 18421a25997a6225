"""The severity-aware decision policy: class probabilities in, ``allow``/``review``/``block`` out.

Two questions with two thresholds, both calibrated on the validation split at the precision
that is served (see ``docs/registry.md``):

* **review**: is there anything to look at? ``unsafe_score = 1 - p(safe)`` above the operating
  threshold (chosen for a target false-positive rate on safe images);
* **block**: is it, with high confidence, a class severe enough to act on without a human?
  Only classes allowed to block have a block threshold, and the rule reads their **combined**
  probability (the sum over the blockable classes): p(explicit_nudity) 0.50 and
  p(explicit_sexual_activity) 0.49 are 99% blockable mass, so they block, although neither
  class alone is sure. Confusing two blockable classes never matters (either verdict is
  ``block``). A class limited to ``review`` (swimwear by default) adds nothing to that sum and
  can never block, however confident the model.

A row whose probabilities are missing, NaN, or do not match the classes decides ``review``:
a model that cannot say fails towards a human, never towards ``allow``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Moderation decisions, from least to most severe.
ALLOW, REVIEW, BLOCK = "allow", "review", "block"


@dataclass(frozen=True)
class DecisionThresholds:
    """The calibrated thresholds frozen into a served model.

    Comparisons are strict ("flag when score > threshold"), as in calibration, so a threshold
    means the same thing when it is served as when it was measured.

    Attributes:
        review: ``unsafe_score`` above which an image goes (at least) to human review.
        block: The classes allowed to block, each with the threshold on the combined
            probability of those classes above which the image is blocked (calibration writes
            one value for all of them; were they to differ, the smallest applies, so no image
            an entry alone would block escapes). A single number makes every unsafe class
            blockable (a simple policy for hand-made models; registration always writes the
            per-class form).
        calibrated_precision: The precision (``fp32``/``int8``) whose validation scores the
            thresholds were calibrated on, or ``None`` when they were set by hand.
    """

    review: float
    block: float | Mapping[str, float] = field(default_factory=dict)
    calibrated_precision: str | None = None

    def __post_init__(self) -> None:
        """Reject thresholds outside [0, 1]."""
        values = [self.review]
        values += list(self.block.values()) if isinstance(self.block, Mapping) else [self.block]
        for value in values:
            if not (isinstance(value, int | float) and 0.0 <= float(value) <= 1.0):
                raise ValueError(f"decision thresholds must be numbers in [0, 1], got {value!r}")

    def block_for(self, class_name: str) -> float | None:
        """The block threshold of ``class_name``, or ``None`` if it may not block."""
        if isinstance(self.block, Mapping):
            value = self.block.get(class_name)
            return None if value is None else float(value)
        return float(self.block)

    def combined_block(self, unsafe_classes: Sequence[str]) -> tuple[list[str], float | None]:
        """The blockable classes among ``unsafe_classes`` and the threshold on their sum.

        Returns:
            ``(classes, threshold)``; ``([], None)`` when no class may block.
        """
        thresholds = {name: self.block_for(name) for name in unsafe_classes}
        blockable = {name: value for name, value in thresholds.items() if value is not None}
        if not blockable:
            return [], None
        return list(blockable), min(blockable.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the inverse of :meth:`from_dict`)."""
        block = dict(self.block) if isinstance(self.block, Mapping) else float(self.block)
        return {
            "review": float(self.review),
            "block": block,
            "calibrated_precision": self.calibrated_precision,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> DecisionThresholds:
        """Rebuild thresholds written by :meth:`to_dict`."""
        return cls(**dict(payload))


@dataclass(frozen=True)
class DecisionPolicy:
    """Turns one row of class probabilities into a decision.

    Attributes:
        classes: Class names in probability order.
        safe_class: The class that means "nothing to moderate".
        thresholds: The calibrated thresholds.
    """

    classes: Sequence[str]
    safe_class: str
    thresholds: DecisionThresholds

    def __post_init__(self) -> None:
        """Reject a policy that names classes the model does not have."""
        if self.safe_class not in self.classes:
            raise ValueError(f"safe class {self.safe_class!r} is not among {list(self.classes)}")
        if isinstance(self.thresholds.block, Mapping):
            unknown = sorted(set(self.thresholds.block) - set(self.classes))
            if unknown or self.safe_class in self.thresholds.block:
                raise ValueError(
                    f"block thresholds name {unknown or [self.safe_class]}, which are not "
                    f"unsafe classes of {list(self.classes)}"
                )

    def decide(self, probabilities: Sequence[float] | Mapping[str, float] | None) -> str:
        """``block``, ``review`` or ``allow`` for one image.

        Args:
            probabilities: The class probabilities, in :attr:`classes` order or by name.

        Returns:
            The decision; ``review`` when the probabilities are missing, not finite, or do not
            match the classes.
        """
        row = self._row(probabilities)
        if row is None:
            return REVIEW
        unsafe = [name for name in self.classes if name != self.safe_class]
        blockable, threshold = self.thresholds.combined_block(unsafe)
        if threshold is not None:
            combined = float(sum(row[list(self.classes).index(name)] for name in blockable))
            if combined > threshold:
                return BLOCK
        unsafe_score = 1.0 - row[list(self.classes).index(self.safe_class)]
        return REVIEW if unsafe_score > self.thresholds.review else ALLOW

    def _row(self, probabilities: Any) -> np.ndarray | None:
        if probabilities is None:
            return None
        if isinstance(probabilities, Mapping):
            if set(probabilities) != set(self.classes):
                return None
            probabilities = [probabilities[name] for name in self.classes]
        try:
            row = np.asarray(probabilities, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if row.shape != (len(self.classes),) or not np.isfinite(row).all():
            return None
        return row


def calibrate_block_thresholds(
    probabilities: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    blockable: Sequence[str],
    *,
    max_false_block_rate: float,
    min_probability: float,
) -> dict[str, dict[str, Any]]:
    """The threshold on the combined probability of the blockable classes, per blockable class.

    The rule blocks when the sum of the blockable classes' probabilities is above the
    threshold (see :class:`DecisionPolicy`), so one threshold is calibrated on that sum: the
    lowest value that blocks at most ``max_false_block_rate`` of the validation images that
    must not be blocked (those whose true class may not block), and never below
    ``min_probability``. It is written under every blockable class, with that class's recall
    (the share of its validation images blocked). Confusions between two blockable classes
    (explicit nudity taken for sexual activity) do not count: either verdict is ``block``.

    Args:
        probabilities: ``(N, n_classes)`` validation probabilities at the served precision.
        labels: ``(N,)`` true class indices.
        classes: Class names in probability order.
        blockable: Classes allowed to block.
        max_false_block_rate: Largest share of not-blockable images a class may block.
        min_probability: Floor of every block threshold.

    Returns:
        ``{class: {"threshold", "false_block_rate", "recall", "n_negative", "n_positive"}}``
        measured on these images.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    blockable_index = [list(classes).index(name) for name in blockable]
    negative = ~np.isin(labels, blockable_index)
    result: dict[str, dict[str, Any]] = {}
    if not blockable_index:
        return result
    combined = probabilities[:, blockable_index].sum(axis=1)
    scores = np.sort(combined[negative])[::-1]
    allowed = math.floor(max_false_block_rate * len(scores) + 1e-9)
    calibrated = float(scores[allowed]) if allowed < len(scores) else 0.0
    threshold = min(max(calibrated, float(min_probability)), 1.0)
    blocked = combined > threshold
    for name, index in zip(blockable, blockable_index, strict=True):
        positive = labels == index
        result[name] = {
            "threshold": threshold,
            "false_block_rate": float(blocked[negative].mean()) if negative.any() else math.nan,
            "recall": float(blocked[positive].mean()) if positive.any() else math.nan,
            "n_negative": int(negative.sum()),
            "n_positive": int(positive.sum()),
        }
    return result
