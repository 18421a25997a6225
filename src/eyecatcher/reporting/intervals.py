"""Confidence intervals for proportions measured on a finite test split."""

from __future__ import annotations

import math

#: z for a two-sided 95% interval.
Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (sound at small ``n`` and near 0 or 1).

    Args:
        successes: Count of successes.
        n: Trials; ``0`` gives ``None`` (nothing was measured).
        z: Normal quantile (1.96 for 95%).

    Returns:
        ``(low, high)`` or ``None``.
    """
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes out of {n} trials")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
