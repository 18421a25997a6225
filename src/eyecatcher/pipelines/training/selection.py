"""Choosing among candidates on a validation metric, with a reason a person can read."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from eyecatcher.pipelines.training.report import finite

logger = logging.getLogger(__name__)


def rank_candidates(
    evaluations: Sequence[Mapping[str, Any]], metric: str, greater_is_better: bool
) -> dict[str, Any]:
    """Rank candidates by a validation metric; ties go to the first in config order.

    Args:
        evaluations: Evaluation records, in config order.
        metric: A validation metric name.
        greater_is_better: Direction of the metric.

    Returns:
        ``selected``, ``values``, ``ranking`` and ``reason``.

    Raises:
        ValueError: If ``metric`` is not a validation metric or no candidate has a finite value.
    """
    if any(metric not in e["validation"] for e in evaluations):
        raise ValueError(
            f"selection.metric '{metric}' is not a validation metric; choose one of "
            f"{sorted(k for k, v in evaluations[0]['validation'].items() if finite(v))}"
        )
    values = {e["candidate"]: e["validation"].get(metric) for e in evaluations}
    usable = {name: v for name, v in values.items() if finite(v)}
    if not usable:
        raise ValueError(f"No candidate has a finite validation {metric}: {values}")
    order = list(values)
    ranking = sorted(
        usable, key=lambda n: ((-usable[n] if greater_is_better else usable[n]), order.index(n))
    )
    best = ranking[0]
    tied = [n for n in ranking if usable[n] == usable[best]]
    reason = (
        f"highest validation {metric}" if greater_is_better else f"lowest validation {metric}"
    ) + f" ({usable[best]:.4f}"
    runner_up = next((n for n in ranking if n not in tied), None)
    if runner_up is not None:
        reason += f" vs {usable[runner_up]:.4f} for {runner_up}"
    reason += ")"
    if len(tied) > 1:
        reason += f"; tied with {tied[1:]}, first in config order wins"
    skipped = sorted(set(values) - set(usable))
    if skipped:
        reason += f"; {skipped} had no finite value and were not considered"
        logger.warning("Candidates %s have no finite validation %s.", skipped, metric)
    return {"selected": best, "values": values, "ranking": ranking, "reason": reason}
