"""Which test images to explain: the most confident errors, the cases nearest the operating
threshold, and one correct example per class."""

from __future__ import annotations

import math

import pandas as pd


def pick_examples(
    predictions: pd.DataFrame,
    threshold: float | None,
    *,
    errors: int = 3,
    near_threshold: int = 3,
    correct_per_class: int = 1,
) -> pd.DataFrame:
    """Choose the images to explain from a prediction table, each with a ``reason``.

    An image is picked once, for the first reason that picks it (errors, then threshold
    cases, then correct examples).

    Args:
        predictions: Rows as in :func:`eyecatcher.pipelines.training.evaluation.prediction_table`.
        threshold: The operating threshold on the unsafe score (``None`` or infinite skips
            the threshold cases).
        errors: How many of the most confident misclassifications.
        near_threshold: How many images with the unsafe score closest to the threshold.
        correct_per_class: Most confident correct images per true class.

    Returns:
        The chosen rows with ``reason`` (``confident_error``, ``near_threshold``,
        ``correct``) and ``rank`` within the reason.
    """
    chosen: list[pd.DataFrame] = []
    taken: set[str] = set()

    def take(frame: pd.DataFrame, reason: str) -> None:
        frame = frame[~frame["sha256"].isin(taken)].copy()
        frame["reason"] = reason
        frame["rank"] = range(1, len(frame) + 1)
        taken.update(frame["sha256"])
        chosen.append(frame)

    ordered = predictions.sort_values(["confidence", "sha256"], ascending=[False, True])
    take(ordered[~ordered["correct"]].head(errors), "confident_error")
    if threshold is not None and math.isfinite(threshold) and near_threshold > 0:
        distance = (predictions["unsafe_score"] - threshold).abs()
        nearest = predictions.assign(_d=distance).sort_values(["_d", "sha256"]).drop(columns="_d")
        take(nearest[~nearest["sha256"].isin(taken)].head(near_threshold), "near_threshold")
    correct = ordered[ordered["correct"] & ~ordered["sha256"].isin(taken)]
    take(correct.groupby("class", sort=True).head(correct_per_class), "correct")
    if not chosen:
        return predictions.head(0).assign(reason=pd.Series(dtype=str), rank=pd.Series(dtype=int))
    return pd.concat(chosen, ignore_index=True)
