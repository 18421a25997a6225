"""Distribution drift between a reference sample and a current one: PSI and the KS test.

A small implementation rather than a monitoring framework: two statistics over a handful of
columns need numpy and scipy only, their exact definitions are stated here, and the results go
into the project's own JSON report and MLflow metrics (docs/feedback-loop.md says why).

* **PSI** (population stability index): ``sum((c - r) * ln(c / r))`` over bins, where ``r``
  and ``c`` are the reference and current shares per bin. Numeric columns use bins learnt from
  the reference that never collapse (:class:`NumericBins`: one bin per value when it has at
  most ``bins`` distinct values, else its quantile bins plus a bin per heavy tie); categorical
  columns use their categories. Empty shares are floored at ``epsilon`` so that a category
  that appears only on one side gives a large, finite PSI. Rule of thumb: < 0.1 stable,
  0.1-0.25 moderate, > 0.25 large shift.
* **Importance weights**: the reference may carry one weight per row (its class mix
  re-weighted to the current one), so that a different class mix alone is not drift.
* **KS** (two-sample Kolmogorov-Smirnov, numeric columns only): the largest gap between the two
  empirical distribution functions, with scipy's exact/asymptotic p-value (weighted: the
  asymptotic p-value at the reference's effective sample size).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import field_validator
from scipy import stats

from eyecatcher.parameters import Settings

#: Floor of an empty bin's share in PSI: a category seen on one side only gives a large, finite
#: PSI (not infinity).
PSI_EPSILON = 1e-4


class DriftConfigError(ValueError):
    """The drift settings are invalid."""


class DriftSettings(Settings):
    """``retrain_check.drift``: when a column counts as drifted.

    Each default is the value ``conf/base/parameters_retrain_check.yml`` sets (``epsilon``
    is not set there: the code is its one place); ``tests/test_parameters.py`` compares them.

    Attributes:
        psi_alert: Alert when PSI is at or above this.
        ks_p_value_alert: Alert when the KS p-value is below this (numeric columns).
        ks_statistic_alert: ... and the KS statistic is at or above this (a tiny p-value on
            a large sample can come with a negligible gap).
        bins: Quantile bins of the reference for numeric PSI; a column with at most this many
            distinct reference values gets one bin per value instead.
        min_samples: Fewer rows on either side: the column is reported, never alerted on.
        epsilon: Floor of an empty bin's share in PSI.
    """

    kind = "retrain_check.drift"
    error = DriftConfigError

    psi_alert: float = 0.25
    ks_p_value_alert: float = 0.01
    ks_statistic_alert: float = 0.1
    bins: int = 10
    min_samples: int = 30
    epsilon: float = PSI_EPSILON

    @field_validator("psi_alert")
    @classmethod
    def _psi_alert(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be positive, got {value}")
        return value

    @field_validator("ks_p_value_alert")
    @classmethod
    def _ks_p_value_alert(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError(f"must be in (0, 1), got {value}")
        return value

    @field_validator("ks_statistic_alert")
    @classmethod
    def _ks_statistic_alert(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError(f"must be in [0, 1], got {value}")
        return value

    @field_validator("bins")
    @classmethod
    def _bins(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"must be at least 2, got {value}")
        return value

    @field_validator("min_samples")
    @classmethod
    def _min_samples(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value


def _numeric(values: Sequence[Any] | pd.Series) -> np.ndarray:
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return array[np.isfinite(array)]


def _numeric_with_weights(
    values: Sequence[Any] | pd.Series, weights: Sequence[float] | np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Finite values and their weights (1 each without weights), non-finite rows dropped."""
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    if weights is None:
        w = np.ones(array.size)
    else:
        w = np.asarray(weights, dtype=float)
        if w.shape != array.shape or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(
                f"weights must be {array.size} finite non-negative numbers, got shape {w.shape}"
            )
    keep = np.isfinite(array)
    return array[keep], w[keep]


@dataclass(frozen=True)
class NumericBins:
    """The bins of a numeric column, learnt from the reference; they never collapse to one.

    * **Few distinct values** (at most ``bins``, e.g. a 0/1 flag or the image widths of a few
      camera models): one bin per reference value (``points``) plus one for each gap around
      them, so 95x0.0 + 5x1.0 against 100x1.0 compares the shares of 1.0 (0.05 vs 1.0)
      instead of putting everything into one bin (the quantile edges collapse to {0, 1}).
    * **Otherwise**: the reference's unique quantile edges (``inner``; the outer bins are
      open, so current values outside its range still count), and every value holding at
      least ``1/bins`` of the reference (``atoms``: ties that merged quantile edges) gets a
      bin of its own.

    Attributes:
        points: The distinct reference values binned one by one (empty otherwise).
        inner: Inner quantile edges (empty with ``points``).
        atoms: Values with their own bin besides the quantile bins.
    """

    points: np.ndarray
    inner: np.ndarray
    atoms: np.ndarray

    @classmethod
    def from_reference(cls, reference: np.ndarray, bins: int) -> NumericBins:
        """Learn the bins from finite reference values (at least one)."""
        distinct, counts = np.unique(reference, return_counts=True)
        empty = np.array([], dtype=float)
        if distinct.size <= bins:
            return cls(distinct, empty, empty)
        inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))[1:-1]
        return cls(empty, inner, distinct[counts / reference.size >= 1.0 / bins])

    @property
    def n_bins(self) -> int:
        """How many bins there are."""
        if self.points.size:
            return 2 * self.points.size + 1
        return self.inner.size + 1 + self.atoms.size

    def assign(self, values: np.ndarray) -> np.ndarray:
        """The bin index of each value, in ``[0, n_bins)``."""
        if self.points.size:
            # Bin 2i + 1 holds exactly points[i]; bin 2i the values strictly between
            # points[i - 1] and points[i]; bin 2k the values above the largest.
            position, exact = _exact_positions(self.points, values)
            return 2 * position + exact.astype(int)
        result = np.searchsorted(self.inner, values, side="right")
        if self.atoms.size:
            position, exact = _exact_positions(self.atoms, values)
            result = np.where(exact, self.inner.size + 1 + position, result)
        return result

    def labels(self) -> list[str]:
        """A short label per bin, for plots."""
        if self.points.size:
            out = [f"<{self.points[0]:.4g}"]
            for i, value in enumerate(self.points):
                out.append(f"={value:.4g}")
                out.append(
                    f"{value:.4g}..{self.points[i + 1]:.4g}"
                    if i + 1 < self.points.size
                    else f">{value:.4g}"
                )
            return out
        edges = [f"{e:.3g}" for e in self.inner]
        intervals = [f"<{edges[0]}"] if edges else ["all"]
        intervals += [f"{a}..{b}" for a, b in itertools.pairwise(edges)]
        intervals += [f">={edges[-1]}"] if edges else []
        return intervals + [f"={a:.4g}" for a in self.atoms]


def _exact_positions(
    sorted_values: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    position = np.searchsorted(sorted_values, values, side="left")
    clipped = np.minimum(position, sorted_values.size - 1)
    exact = (position < sorted_values.size) & (sorted_values[clipped] == values)
    return np.where(exact, clipped, position), exact


def psi_numeric(
    reference: Sequence[float] | pd.Series,
    current: Sequence[float] | pd.Series,
    bins: int = 10,
    epsilon: float = PSI_EPSILON,
    *,
    reference_weights: Sequence[float] | np.ndarray | None = None,
) -> float:
    """PSI of a numeric column over bins learnt from the reference (:class:`NumericBins`).

    Args:
        reference: Reference values (non-finite values are dropped, with their weights).
        current: Current values.
        bins: Quantile bins, and the most distinct values binned one by one.
        epsilon: Floor of an empty bin's share.
        reference_weights: One weight per reference row (importance weights that re-weight
            the reference to another class mix), or ``None`` for equal weights.

    Returns:
        The PSI (0 for identical distributions).

    Raises:
        ValueError: If either side has no finite value, or the weights do not fit.
    """
    ref, weights = _numeric_with_weights(reference, reference_weights)
    cur = _numeric(current)
    if ref.size == 0 or cur.size == 0 or weights.sum() <= 0:
        raise ValueError("PSI needs at least one finite value on each side")
    binning = NumericBins.from_reference(ref, bins)
    ref_bins = np.bincount(binning.assign(ref), weights=weights, minlength=binning.n_bins)
    cur_bins = np.bincount(binning.assign(cur), minlength=binning.n_bins)
    return _psi_from_counts(ref_bins, cur_bins, epsilon)


def psi_categorical(
    reference: Sequence[Any] | pd.Series,
    current: Sequence[Any] | pd.Series,
    epsilon: float = PSI_EPSILON,
    *,
    reference_weights: Sequence[float] | np.ndarray | None = None,
) -> float:
    """PSI of a categorical column (e.g. the format mix) over the union of categories.

    Args:
        reference: Reference categories.
        current: Current categories.
        epsilon: Floor of an absent category's share.
        reference_weights: One weight per reference row, or ``None`` for equal weights.

    Returns:
        The PSI.

    Raises:
        ValueError: If either side is empty.
    """
    ref = pd.Series(reference).astype(str).reset_index(drop=True)
    cur = pd.Series(current).astype(str)
    if ref.empty or cur.empty:
        raise ValueError("PSI needs at least one value on each side")
    weights = pd.Series(
        np.ones(len(ref)) if reference_weights is None else np.asarray(reference_weights, float)
    )
    if len(weights) != len(ref):
        raise ValueError(f"{len(weights)} weights for {len(ref)} reference values")
    categories = sorted(set(ref) | set(cur))
    ref_counts = weights.groupby(ref.to_numpy()).sum().reindex(categories, fill_value=0.0)
    cur_counts = cur.value_counts().reindex(categories, fill_value=0).to_numpy()
    return _psi_from_counts(ref_counts.to_numpy(), cur_counts, epsilon)


def _psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, epsilon: float) -> float:
    ref_share = np.maximum(ref_counts / ref_counts.sum(), epsilon)
    cur_share = np.maximum(cur_counts / cur_counts.sum(), epsilon)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def ks_test(
    reference: Sequence[float] | pd.Series,
    current: Sequence[float] | pd.Series,
    *,
    reference_weights: Sequence[float] | np.ndarray | None = None,
) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test.

    Without weights, scipy's ``ks_2samp`` (exact or asymptotic p-value). With reference
    weights, the statistic is the largest gap between the weighted reference and the current
    empirical distribution functions, and the p-value the asymptotic one for the reference's
    effective sample size ``(sum w)^2 / sum w^2`` (weights make the reference count for less).

    Args:
        reference: Reference values.
        current: Current values.
        reference_weights: One weight per reference row, or ``None``.

    Returns:
        ``(statistic, p_value)``.

    Raises:
        ValueError: If either side has no finite value.
    """
    ref, weights = _numeric_with_weights(reference, reference_weights)
    cur = _numeric(current)
    if ref.size == 0 or cur.size == 0 or weights.sum() <= 0:
        raise ValueError("the KS test needs at least one finite value on each side")
    if reference_weights is None:
        result = stats.ks_2samp(ref, cur)
        return float(result.statistic), float(result.pvalue)
    order = np.argsort(ref, kind="stable")
    ref, weights = ref[order], weights[order]
    grid = np.union1d(ref, cur)
    ref_cdf = np.concatenate([[0.0], np.cumsum(weights)])[np.searchsorted(ref, grid, "right")]
    ref_cdf = ref_cdf / weights.sum()
    cur_cdf = np.searchsorted(np.sort(cur), grid, side="right") / cur.size
    statistic = float(np.max(np.abs(ref_cdf - cur_cdf)))
    n_eff = weights.sum() ** 2 / np.sum(weights**2)
    scale = np.sqrt(n_eff * cur.size / (n_eff + cur.size))
    return statistic, float(stats.kstwobign.sf(statistic * scale))


@dataclass(frozen=True)
class ColumnDrift:
    """The drift of one column.

    Attributes:
        column: Column name.
        kind: ``numeric`` or ``categorical``.
        n_reference: Reference rows with a value.
        n_current: Current rows with a value.
        psi: Population stability index.
        ks_statistic: KS statistic (numeric only).
        ks_p_value: KS p-value (numeric only).
        alert: Whether a threshold was crossed (never with too few samples).
        reasons: Which thresholds were crossed, or why the column was not judged.
    """

    column: str
    kind: str
    n_reference: int
    n_current: int
    psi: float | None
    ks_statistic: float | None
    ks_p_value: float | None
    alert: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return out


def column_drift(
    column: str,
    reference: Sequence[Any] | pd.Series,
    current: Sequence[Any] | pd.Series,
    settings: DriftSettings,
    *,
    categorical: bool = False,
    reference_weights: Sequence[float] | np.ndarray | None = None,
) -> ColumnDrift:
    """Compare one column against its reference and decide whether it drifted.

    Args:
        column: Its name (for the report).
        reference: Reference values.
        current: Current values.
        settings: Thresholds and binning.
        categorical: PSI over categories (no KS) instead of numeric bins.
        reference_weights: One importance weight per reference row (``None``: equal).

    Returns:
        The column's :class:`ColumnDrift`.
    """
    ref_values = pd.Series(reference).reset_index(drop=True)
    weights = (
        pd.Series(np.ones(len(ref_values)))
        if reference_weights is None
        else pd.Series(np.asarray(reference_weights, dtype=float))
    )
    if len(weights) != len(ref_values):
        raise ValueError(f"{len(weights)} weights for {len(ref_values)} reference values")
    if categorical:
        keep = ref_values.notna().to_numpy()
        cur = pd.Series(current).dropna()
    else:
        keep = np.isfinite(pd.to_numeric(ref_values, errors="coerce").to_numpy(dtype=float))
        cur = _numeric(current)
    ref = ref_values[keep]
    w = None if reference_weights is None else weights[keep].to_numpy()
    n_ref, n_cur = len(ref), len(cur)
    kind = "categorical" if categorical else "numeric"

    def psi() -> float:
        if categorical:
            return psi_categorical(ref, cur, settings.epsilon, reference_weights=w)
        return psi_numeric(ref, cur, settings.bins, settings.epsilon, reference_weights=w)

    if min(n_ref, n_cur) < settings.min_samples:
        reason = (
            f"not judged: {n_ref} reference and {n_cur} current values, fewer than "
            f"min_samples={settings.min_samples}"
        )
        value = psi() if n_ref and n_cur else None
        return ColumnDrift(column, kind, n_ref, n_cur, value, None, None, False, (reason,))
    reasons: list[str] = []
    ks_stat = ks_p = None
    value = psi()
    if not categorical:
        ks_stat, ks_p = ks_test(ref, cur, reference_weights=w)
        if ks_p < settings.ks_p_value_alert and ks_stat >= settings.ks_statistic_alert:
            reasons.append(
                f"KS statistic {ks_stat:.3f} (p={ks_p:.2g}) beyond ks_statistic_alert="
                f"{settings.ks_statistic_alert:g} at ks_p_value_alert={settings.ks_p_value_alert:g}"
            )
    if value >= settings.psi_alert:
        reasons.append(f"PSI {value:.3f} >= psi_alert={settings.psi_alert:g}")
    return ColumnDrift(
        column, kind, n_ref, n_cur, value, ks_stat, ks_p, bool(reasons), tuple(reasons)
    )


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    settings: DriftSettings,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str] = (),
    reference_weights: Sequence[float] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Compare the listed columns of two tables.

    Args:
        reference: The reference sample (e.g. the champion's frozen reference snapshot).
        current: The current sample (e.g. a batch-scoring run).
        settings: Thresholds and binning.
        numeric: Numeric columns (PSI and KS).
        categorical: Categorical columns (PSI).
        reference_weights: One importance weight per reference row (re-weights the
            reference to the current class mix, see :mod:`eyecatcher.monitoring.reference`),
            or ``None`` for equal weights.

    Returns:
        ``{"settings", "columns": {name: ColumnDrift dict}, "alerts": [names], "alert": bool}``;
        a column missing on either side is reported as not judged.
    """
    columns: dict[str, dict[str, Any]] = {}
    for names, is_categorical in ((numeric, False), (categorical, True)):
        for name in names:
            if name not in reference.columns or name not in current.columns:
                side = "reference" if name not in reference.columns else "current"
                columns[name] = {
                    "column": name,
                    "kind": "categorical" if is_categorical else "numeric",
                    "alert": False,
                    "reasons": [f"not judged: no column {name!r} in the {side} sample"],
                }
                continue
            result = column_drift(
                name,
                reference[name],
                current[name],
                settings,
                categorical=is_categorical,
                reference_weights=reference_weights,
            )
            columns[name] = result.to_dict()
    alerts = [name for name, result in columns.items() if result["alert"]]
    return {
        "settings": settings.model_dump(),
        "columns": columns,
        "alerts": alerts,
        "alert": bool(alerts),
    }
