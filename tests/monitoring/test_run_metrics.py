"""Per-run scoring metrics: decision rates, score distribution, errors, latency."""

from __future__ import annotations

import pandas as pd
import pytest

from eyecatcher.monitoring.run_metrics import scoring_run_metrics


def test_rates_quantiles_and_latency_by_hand() -> None:
    verdicts = pd.DataFrame(
        {
            "decision": ["allow", "allow", "review", "block", None],
            "unsafe_score": [0.05, 0.15, 0.55, 0.95, None],
            "error": [None, None, None, None, "corrupt: truncated"],
        }
    )
    metrics = scoring_run_metrics(verdicts, latencies_ms=[10, 20, 30, 40, 100])
    assert metrics["items"] == 5 and metrics["error_rate"] == pytest.approx(0.2)
    assert metrics["decision_rate.allow"] == pytest.approx(0.5)
    assert metrics["decision_rate.review"] == metrics["decision_rate.block"] == 0.25
    assert metrics["unsafe_score.mean"] == pytest.approx(0.425)
    assert metrics["unsafe_score.p50"] == pytest.approx(0.35)
    assert metrics["unsafe_score.hist.0.0-0.1"] == 0.25
    assert metrics["unsafe_score.hist.0.9-1.0"] == 0.25
    assert metrics["latency_ms.p50"] == 30 and metrics["latency_ms.p95"] == pytest.approx(88)


def test_an_empty_run_reports_no_rates() -> None:
    metrics = scoring_run_metrics(pd.DataFrame(columns=["decision", "unsafe_score", "error"]))
    assert metrics == {"items": 0.0}
