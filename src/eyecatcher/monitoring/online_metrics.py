"""The online moderation metrics, from the champion's verdicts plus moderator feedback.

Definitions (per class and over time; docs/feedback-loop.md has worked examples):

* **prevalence** = harmful items the system let through ÷ all items scored. An item is a miss
  when the system allowed it and a human verdict (a user's confirmed report, or a moderator's
  review) gives it an unsafe class.
* **valid appeals** = appeals the moderators reversed ÷ items the system flagged. A flagged
  item is one whose decision is ``review`` or ``block``; an appeal is reversed when its human
  verdict is the safe class.
* **proactive rate** = harmful items the system caught ÷ (caught + harmful items users
  reported). A flagged item counts as caught unless a human verdict says it is safe: flags
  nobody disputed are presumed right (the usual convention; the report says how many flags a
  human actually confirmed).

Per class, misses and reports count under the human's class; flags and appeals under the
system's class. Feedback that does not match the verdict it refers to (an appeal of an allowed
item, a report of a flagged one) is counted under ``inconsistent`` and left out of the rates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

FLAGGED_DECISIONS = frozenset({"review", "block"})
FEEDBACK_KINDS = ("appeal", "report", "review")


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def item_outcomes(verdicts: pd.DataFrame, feedback: pd.DataFrame, safe_class: str) -> pd.DataFrame:
    """Join each scored item with its latest human verdict and classify the outcome.

    Args:
        verdicts: One row per scored item: ``sha256``, ``class``, ``decision`` and optionally
            ``scored_at``; rows with an ``error`` are ignored (nothing was decided).
        feedback: Validated feedback records: ``sha256``, ``verdict``, ``kind``, ``timestamp``.
        safe_class: The class that means "nothing to moderate".

    Returns:
        One row per scored item with ``flagged``, ``human_class``, ``human_kind``, ``miss``,
        ``reported_miss``, ``reversed_appeal``, ``caught``, ``confirmed_flag``,
        ``inconsistent``.
    """
    scored = verdicts
    if "error" in scored.columns:
        scored = scored[scored["error"].isna()]
    scored = scored.drop_duplicates("sha256", keep="last").copy()
    latest = (
        feedback.sort_values("timestamp")
        .drop_duplicates("sha256", keep="last")
        .set_index("sha256")[["verdict", "kind"]]
    )
    scored["human_class"] = scored["sha256"].map(latest["verdict"])
    scored["human_kind"] = scored["sha256"].map(latest["kind"])
    flagged = scored["decision"].isin(FLAGGED_DECISIONS)
    has_human = scored["human_class"].notna()
    human_unsafe = has_human & (scored["human_class"] != safe_class)
    human_safe = has_human & (scored["human_class"] == safe_class)
    appeal = scored["human_kind"] == "appeal"
    report = scored["human_kind"] == "report"
    scored["flagged"] = flagged
    scored["inconsistent"] = (appeal & ~flagged) | (report & flagged)
    consistent = ~scored["inconsistent"]
    scored["miss"] = ~flagged & human_unsafe & consistent
    scored["reported_miss"] = scored["miss"] & report
    scored["reversed_appeal"] = flagged & appeal & human_safe
    scored["caught"] = flagged & ~human_safe
    scored["confirmed_flag"] = flagged & human_unsafe & consistent
    return scored.reset_index(drop=True)


def _summary(outcomes: pd.DataFrame) -> dict[str, Any]:
    scored = len(outcomes)
    flagged = int(outcomes["flagged"].sum())
    misses = int(outcomes["miss"].sum())
    reported = int(outcomes["reported_miss"].sum())
    reversed_ = int(outcomes["reversed_appeal"].sum())
    caught = int(outcomes["caught"].sum())
    return {
        "scored": scored,
        "flagged": flagged,
        "misses": misses,
        "reported_misses": reported,
        "reversed_appeals": reversed_,
        "caught": caught,
        "confirmed_flags": int(outcomes["confirmed_flag"].sum()),
        "inconsistent_feedback": int(outcomes["inconsistent"].sum()),
        "prevalence": _rate(misses, scored),
        "valid_appeals": _rate(reversed_, flagged),
        "proactive_rate": _rate(caught, caught + reported),
    }


def _per_class(outcomes: pd.DataFrame, classes: list[str], safe_class: str) -> dict[str, Any]:
    scored = len(outcomes)
    result: dict[str, Any] = {}
    for cls in classes:
        if cls == safe_class:
            continue
        flagged_as = outcomes[outcomes["flagged"] & (outcomes["class"] == cls)]
        caught = int(flagged_as["caught"].sum())
        reversed_ = int(flagged_as["reversed_appeal"].sum())
        missed = outcomes[outcomes["miss"] & (outcomes["human_class"] == cls)]
        reported = int(missed["reported_miss"].sum())
        result[cls] = {
            "flagged": len(flagged_as),
            "caught": caught,
            "reversed_appeals": reversed_,
            "misses": len(missed),
            "reported_misses": reported,
            "prevalence": _rate(len(missed), scored),
            "valid_appeals": _rate(reversed_, len(flagged_as)),
            "proactive_rate": _rate(caught, caught + reported),
        }
    return result


def online_metrics(
    verdicts: pd.DataFrame,
    feedback: pd.DataFrame,
    *,
    safe_class: str,
    period: str | None = "D",
) -> dict[str, Any]:
    """Prevalence, valid appeals and proactive rate, overall, per class and per period.

    Args:
        verdicts: The champion's verdicts (see :func:`item_outcomes`); with a ``scored_at``
            column the metrics are also given per ``period``.
        feedback: Validated feedback records.
        safe_class: The safe class.
        period: A pandas period alias (``D``, ``W``, ``M``) or ``None`` for no time series.

    Returns:
        ``overall`` (counts and the three rates, ``None`` where the denominator is 0),
        ``per_class`` (unsafe classes), ``over_time`` (a list of per-period summaries, empty
        without ``scored_at``), ``unscored_feedback`` (feedback on items not in the verdicts)
        and ``definitions``.
    """
    outcomes = item_outcomes(verdicts, feedback, safe_class)
    classes = sorted(
        {str(c) for c in outcomes["class"].dropna()}
        | {str(c) for c in outcomes["human_class"].dropna()}
    )
    over_time: list[dict[str, Any]] = []
    if period and "scored_at" in outcomes.columns and outcomes["scored_at"].notna().any():
        stamps = pd.to_datetime(outcomes["scored_at"], utc=True)
        keys = stamps.dt.tz_localize(None).dt.to_period(period).astype(str)
        for key, rows in outcomes.groupby(keys, sort=True):
            over_time.append({"period": str(key), **_summary(rows)})
    unscored = int((~feedback["sha256"].isin(set(verdicts["sha256"]))).sum())
    return {
        "overall": _summary(outcomes),
        "per_class": _per_class(outcomes, classes, safe_class),
        "over_time": over_time,
        "unscored_feedback": unscored,
        "definitions": DEFINITIONS,
    }


DEFINITIONS: Mapping[str, str] = {
    "prevalence": "items allowed that a human verdict calls unsafe / items scored",
    "valid_appeals": "appeals reversed to the safe class / items flagged (review or block)",
    "proactive_rate": "flagged items not reversed / (those + user reports of allowed unsafe items)",
}
