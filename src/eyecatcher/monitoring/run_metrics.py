"""What one scoring run did, as MLflow metrics: decision rates, scores, errors, latency.

Meant for every batch-scoring run and every serving smoke test (docs/feedback-loop.md says
where it is wired), so that MLflow shows the champion's behaviour run after run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from eyecatcher.serving_model.contract import DECISIONS

#: Quantiles of the unsafe score recorded per run.
SCORE_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def scoring_run_metrics(
    verdicts: pd.DataFrame, latencies_ms: Sequence[float] | None = None
) -> dict[str, float]:
    """Decision rates, the unsafe-score distribution, the error rate and latency percentiles.

    Args:
        verdicts: One row per scored item (``decision``, ``unsafe_score``, ``error``).
        latencies_ms: Per-request latencies, when the run measured them.

    Returns:
        Flat metrics: ``items``, ``error_rate``, ``decision_rate.<decision>`` (over items
        without an error), ``unsafe_score.mean`` and ``unsafe_score.p10`` … ``p90``,
        ``unsafe_score.hist.<bin>`` (share per tenth), and ``latency_ms.p50`` / ``p95`` /
        ``mean`` when latencies are given. Rates over nothing are left out, not reported as 0.
    """
    metrics: dict[str, float] = {"items": float(len(verdicts))}
    failed = verdicts["error"].notna() if "error" in verdicts.columns else pd.Series(False)
    if len(verdicts):
        metrics["error_rate"] = float(failed.mean())
    ok = verdicts[~failed.to_numpy()] if len(verdicts) else verdicts
    if len(ok):
        counts = ok["decision"].value_counts()
        for decision in DECISIONS:
            metrics[f"decision_rate.{decision}"] = float(counts.get(decision, 0) / len(ok))
        scores = pd.to_numeric(ok["unsafe_score"], errors="coerce").dropna().to_numpy(float)
        if scores.size:
            metrics["unsafe_score.mean"] = float(scores.mean())
            for q in SCORE_QUANTILES:
                metrics[f"unsafe_score.p{round(q * 100):02d}"] = float(np.quantile(scores, q))
            shares = np.histogram(scores, bins=10, range=(0.0, 1.0))[0] / scores.size
            for i, share in enumerate(shares):
                metrics[f"unsafe_score.hist.{i / 10:.1f}-{(i + 1) / 10:.1f}"] = float(share)
    if latencies_ms is not None and len(latencies_ms):
        values = np.asarray(latencies_ms, dtype=float)
        metrics["latency_ms.p50"] = float(np.percentile(values, 50))
        metrics["latency_ms.p95"] = float(np.percentile(values, 95))
        metrics["latency_ms.mean"] = float(values.mean())
    return metrics
