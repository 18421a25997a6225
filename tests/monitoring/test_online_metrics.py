"""The online moderation metrics on hand-computed cases."""

from __future__ import annotations

import pandas as pd
import pytest

from eyecatcher.monitoring.online_metrics import online_metrics


def _verdicts() -> pd.DataFrame:
    # Ten scored items; four flagged (i0-i3), six allowed (i4-i9); one scoring error (i10).
    rows = [
        ("i0", "explicit_nudity", "block", "2026-11-01"),
        ("i1", "explicit_nudity", "review", "2026-11-01"),
        ("i2", "swimwear_or_underwear", "review", "2026-11-02"),
        ("i3", "explicit_nudity", "block", "2026-11-02"),
        ("i4", "safe", "allow", "2026-11-01"),
        ("i5", "safe", "allow", "2026-11-01"),
        ("i6", "safe", "allow", "2026-11-02"),
        ("i7", "safe", "allow", "2026-11-02"),
        ("i8", "safe", "allow", "2026-11-02"),
        ("i9", "safe", "allow", "2026-11-02"),
    ]
    table = pd.DataFrame(rows, columns=["sha256", "class", "decision", "scored_at"])
    table["error"] = None
    error = pd.DataFrame(
        [
            {
                "sha256": "i10",
                "class": None,
                "decision": None,
                "scored_at": "2026-11-02",
                "error": "corrupt: x",
            }
        ]
    )
    return pd.concat([table, error], ignore_index=True)


def _feedback() -> pd.DataFrame:
    rows = [
        ("i1", "safe", "appeal", "2026-11-03T10:00Z"),  # reversed appeal of a flag
        ("i2", "swimwear_or_underwear", "appeal", "2026-11-03T10:00Z"),  # upheld appeal
        ("i4", "explicit_nudity", "report", "2026-11-03T10:00Z"),  # confirmed user report
        ("i5", "safe", "report", "2026-11-03T10:00Z"),  # rejected user report
        ("i6", "swimwear_or_underwear", "review", "2026-11-03T10:00Z"),  # moderator-found miss
        ("i7", "safe", "appeal", "2026-11-03T10:00Z"),  # appeal of an allowed item: inconsistent
        ("zz", "safe", "appeal", "2026-11-03T10:00Z"),  # never scored
    ]
    table = pd.DataFrame(rows, columns=["sha256", "verdict", "kind", "timestamp"])
    table["timestamp"] = pd.to_datetime(table["timestamp"], utc=True)
    return table


def test_overall_metrics_match_the_hand_computation() -> None:
    metrics = online_metrics(_verdicts(), _feedback(), safe_class="safe")
    overall = metrics["overall"]
    assert overall["scored"] == 10  # the error row decided nothing
    assert overall["flagged"] == 4
    # Misses: i4 (reported) and i6 (found in review) -> prevalence 2/10.
    assert (overall["misses"], overall["reported_misses"]) == (2, 1)
    assert overall["prevalence"] == pytest.approx(0.2)
    # One of four flags reversed on appeal.
    assert overall["valid_appeals"] == pytest.approx(0.25)
    # Caught: the three flags not reversed; users reported one miss -> 3 / (3 + 1).
    assert overall["caught"] == 3 and overall["proactive_rate"] == pytest.approx(0.75)
    assert overall["confirmed_flags"] == 1  # i2, upheld
    assert overall["inconsistent_feedback"] == 1  # i7
    assert metrics["unscored_feedback"] == 1  # zz


def test_per_class_and_per_day() -> None:
    metrics = online_metrics(_verdicts(), _feedback(), safe_class="safe")
    nudity = metrics["per_class"]["explicit_nudity"]
    # Flagged as explicit_nudity: i0, i1, i3; i1 reversed. Miss i4 is explicit_nudity, reported.
    assert (nudity["flagged"], nudity["caught"], nudity["reversed_appeals"]) == (3, 2, 1)
    assert nudity["valid_appeals"] == pytest.approx(1 / 3)
    assert nudity["prevalence"] == pytest.approx(0.1)
    assert nudity["proactive_rate"] == pytest.approx(2 / 3)
    swim = metrics["per_class"]["swimwear_or_underwear"]
    # i2 caught (upheld); i6 missed but found by a moderator, not reported by a user.
    assert (swim["caught"], swim["misses"], swim["reported_misses"]) == (1, 1, 0)
    assert swim["proactive_rate"] == pytest.approx(1.0)
    assert "safe" not in metrics["per_class"]
    days = {row["period"]: row for row in metrics["over_time"]}
    assert set(days) == {"2026-11-01", "2026-11-02"}
    assert days["2026-11-01"]["scored"] == 4 and days["2026-11-01"]["prevalence"] == 0.25
    assert days["2026-11-02"]["valid_appeals"] == 0.0


def test_rates_without_a_denominator_are_none_not_zero() -> None:
    verdicts = _verdicts().head(0)
    metrics = online_metrics(verdicts, _feedback().head(0), safe_class="safe", period=None)
    overall = metrics["overall"]
    assert overall["prevalence"] is None and overall["valid_appeals"] is None
    assert overall["proactive_rate"] is None and metrics["over_time"] == []
