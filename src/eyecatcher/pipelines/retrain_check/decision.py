"""The retrain rule: thresholds on new feedback, disagreement with humans and drift.

Retrain when any of these holds (each configurable, each reported with its numbers):

1. no champion is registered;
2. ``min_new_feedback`` or more feedback records arrived after the champion was registered;
3. for some class with at least ``min_items_per_class`` human verdicts on images the champion
   scored, the share the champion got wrong is at or above ``max_disagreement_rate``;
4. ``retrain_on_drift`` and the drift report has an alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from eyecatcher.outcomes import RetrainDue
from eyecatcher.pipelines.retrain_check.settings import RetrainSettings


class RetrainRequiredError(RetrainDue):
    """A threshold was crossed: ``kedro run`` should retrain (the decision file says why)."""


def disagreement_per_class(
    scored: pd.DataFrame, verdicts: pd.DataFrame, min_items: int
) -> dict[str, dict[str, Any]]:
    """How often the champion's class differs from the human verdict, per human class.

    Args:
        scored: The champion's verdicts keyed by ``sha256`` (``class``; error rows dropped;
            repeated images count once).
        verdicts: One human verdict per image (``sha256``, ``verdict``).
        min_items: Classes with fewer human verdicts are reported, not judged.

    Returns:
        ``{class: {"items", "disagreements", "rate", "judged"}}``.
    """
    # Copies of one image scored under several paths get one verdict: count the image once.
    unique = scored.drop_duplicates("sha256")[["sha256", "class"]]
    joined = verdicts.merge(unique, on="sha256", how="inner")
    result: dict[str, dict[str, Any]] = {}
    for cls, rows in joined.groupby("verdict", sort=True):
        wrong = int((rows["class"] != rows["verdict"]).sum())
        result[str(cls)] = {
            "items": len(rows),
            "disagreements": wrong,
            "rate": wrong / len(rows),
            "judged": len(rows) >= min_items,
        }
    return result


def decide(
    *,
    champion_version: str | None,
    new_feedback: int,
    disagreement: Mapping[str, Mapping[str, Any]] | None,
    drift: Mapping[str, Any] | None,
    settings: RetrainSettings,
) -> tuple[bool, list[str], list[str]]:
    """Apply the rule.

    Args:
        champion_version: The champion's version, ``None`` when there is none.
        new_feedback: Feedback records since the champion's registration.
        disagreement: Output of :func:`disagreement_per_class` (``None``: not measured).
        drift: The drift report (``None``: not measured).
        settings: The thresholds.

    Returns:
        ``(retrain, reasons, notes)``: the crossed thresholds, and what was checked and held.
    """
    reasons: list[str] = []
    notes: list[str] = []
    if champion_version is None:
        reasons.append("no champion is registered")
    if new_feedback >= settings.min_new_feedback:
        reasons.append(
            f"{new_feedback} new feedback records >= min_new_feedback={settings.min_new_feedback}"
        )
    else:
        notes.append(
            f"{new_feedback} new feedback records < min_new_feedback={settings.min_new_feedback}"
        )
    if disagreement is None:
        notes.append("disagreement with humans not measured (no verdicts of the champion)")
    for cls, row in (disagreement or {}).items():
        text = (
            f"class {cls}: champion disagrees with {row['disagreements']} of {row['items']} "
            f"human verdicts ({row['rate']:.0%})"
        )
        if not row["judged"]:
            notes.append(f"{text}: not judged, fewer than {settings.min_items_per_class}")
        elif row["rate"] >= settings.max_disagreement_rate:
            reasons.append(f"{text} >= max_disagreement_rate={settings.max_disagreement_rate:g}")
        else:
            notes.append(f"{text} < max_disagreement_rate={settings.max_disagreement_rate:g}")
    if drift is None:
        notes.append("drift not measured (no reference or no current batch)")
    elif drift["alert"]:
        text = f"drift alert on {', '.join(drift['alerts'])}"
        if settings.retrain_on_drift:
            reasons.append(text)
        else:
            notes.append(f"{text} (retrain_on_drift is off)")
    else:
        notes.append("no drift alert")
    return bool(reasons), reasons, notes
