"""Distribution drift between a reference sample and a current one: PSI and the KS test.

A small implementation rather than a monitoring framework: two statistics over a handful of
columns need numpy and scipy only, their exact definitions are stated here, and the results go
into the project's own JSON report and MLflow metrics (docs/feedback-loop.md says why).

* **PSI** (population stability index): ``sum((c - r) * ln(c / r))`` over bins, where ``r``
  and ``c`` are the reference and current shares per bin. Numeric columns use the reference's
  quantile bins (so each holds about the same share of the reference); categorical columns use
  their categories. Empty shares are floored at ``epsilon`` so that a category that appears
  only on one side gives a large, finite PSI. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate,
  > 0.25 large shift.
* **KS** (two-sample Kolmogorov-Smirnov, numeric columns only): the largest gap between the two
  empirical distribution functions, with scipy's exact/asymptotic p-value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats


class DriftConfigError(ValueError):
    """The drift settings are invalid."""


@dataclass(frozen=True)
class DriftSettings:
    """When a column counts as drifted.

    Attributes:
        psi_alert: Alert when PSI is at or above this.
        ks_p_value_alert: Alert when the KS p-value is below this (numeric columns).
        ks_statistic_alert: ... and the KS statistic is at or above this (a tiny p-value on
            a large sample can come with a negligible gap).
        bins: Quantile bins of the reference for numeric PSI.
        min_samples: Fewer rows on either side: the column is reported, never alerted on.
        epsilon: Floor of an empty bin's share in PSI.
    """

    psi_alert: float = 0.25
    ks_p_value_alert: float = 0.01
    ks_statistic_alert: float = 0.1
    bins: int = 10
    min_samples: int = 30
    epsilon: float = 1e-4

    def __post_init__(self) -> None:
        if self.psi_alert <= 0:
            raise DriftConfigError(f"psi_alert must be positive, got {self.psi_alert}")
        if not 0 < self.ks_p_value_alert < 1:
            raise DriftConfigError(
                f"ks_p_value_alert must be in (0, 1), got {self.ks_p_value_alert}"
            )
        if not 0 <= self.ks_statistic_alert <= 1:
            raise DriftConfigError(
                f"ks_statistic_alert must be in [0, 1], got {self.ks_statistic_alert}"
            )
        if self.bins < 2:
            raise DriftConfigError(f"bins must be at least 2, got {self.bins}")
        if self.min_samples < 1:
            raise DriftConfigError(f"min_samples must be at least 1, got {self.min_samples}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> DriftSettings:
        """Build from a parameter block, refusing unknown keys (a misspelt key is not ignored).

        Args:
            params: ``psi_alert``, ``ks_p_value_alert``, ... or ``None`` for the defaults.

        Returns:
            The settings.

        Raises:
            DriftConfigError: On unknown keys or invalid values.
        """
        params = dict(params or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise DriftConfigError(f"unknown drift setting(s) {unknown}; known: {sorted(known)}")
        return cls(**params)


def _numeric(values: Sequence[Any] | pd.Series) -> np.ndarray:
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return array[np.isfinite(array)]


def psi_numeric(
    reference: Sequence[float] | pd.Series,
    current: Sequence[float] | pd.Series,
    bins: int = 10,
    epsilon: float = 1e-4,
) -> float:
    """PSI of a numeric column over the reference's quantile bins.

    Args:
        reference: Reference values (non-finite values are dropped).
        current: Current values.
        bins: Number of quantile bins (fewer when the reference has ties).
        epsilon: Floor of an empty bin's share.

    Returns:
        The PSI (0 for identical distributions).

    Raises:
        ValueError: If either side has no finite value.
    """
    ref, cur = _numeric(reference), _numeric(current)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("PSI needs at least one finite value on each side")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        # A constant reference: bins below, at and above its value.
        value = edges[0]
        ref_bins = np.array([0, ref.size, 0])
        cur_bins = np.array([(cur < value).sum(), (cur == value).sum(), (cur > value).sum()])
        return _psi_from_counts(ref_bins, cur_bins, epsilon)
    # Inner edges only: the outer bins are open, so current values outside the reference's
    # range still count (in the first or last bin).
    inner = edges[1:-1]
    ref_bins = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1)
    cur_bins = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=inner.size + 1)
    return _psi_from_counts(ref_bins, cur_bins, epsilon)


def psi_categorical(
    reference: Sequence[Any] | pd.Series,
    current: Sequence[Any] | pd.Series,
    epsilon: float = 1e-4,
) -> float:
    """PSI of a categorical column (e.g. the format mix) over the union of categories.

    Args:
        reference: Reference categories.
        current: Current categories.
        epsilon: Floor of an absent category's share.

    Returns:
        The PSI.

    Raises:
        ValueError: If either side is empty.
    """
    ref = pd.Series(reference).astype(str)
    cur = pd.Series(current).astype(str)
    if ref.empty or cur.empty:
        raise ValueError("PSI needs at least one value on each side")
    categories = sorted(set(ref) | set(cur))
    ref_counts = ref.value_counts().reindex(categories, fill_value=0).to_numpy()
    cur_counts = cur.value_counts().reindex(categories, fill_value=0).to_numpy()
    return _psi_from_counts(ref_counts, cur_counts, epsilon)


def _psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, epsilon: float) -> float:
    ref_share = np.maximum(ref_counts / ref_counts.sum(), epsilon)
    cur_share = np.maximum(cur_counts / cur_counts.sum(), epsilon)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def ks_test(
    reference: Sequence[float] | pd.Series, current: Sequence[float] | pd.Series
) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test.

    Args:
        reference: Reference values.
        current: Current values.

    Returns:
        ``(statistic, p_value)``.

    Raises:
        ValueError: If either side has no finite value.
    """
    ref, cur = _numeric(reference), _numeric(current)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("the KS test needs at least one finite value on each side")
    result = stats.ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


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
) -> ColumnDrift:
    """Compare one column against its reference and decide whether it drifted.

    Args:
        column: Its name (for the report).
        reference: Reference values.
        current: Current values.
        settings: Thresholds and binning.
        categorical: PSI over categories (no KS) instead of quantile bins.

    Returns:
        The column's :class:`ColumnDrift`.
    """
    if categorical:
        ref = pd.Series(reference).dropna()
        cur = pd.Series(current).dropna()
    else:
        ref, cur = _numeric(reference), _numeric(current)
    n_ref, n_cur = len(ref), len(cur)
    kind = "categorical" if categorical else "numeric"
    if min(n_ref, n_cur) < settings.min_samples:
        reason = (
            f"not judged: {n_ref} reference and {n_cur} current values, fewer than "
            f"min_samples={settings.min_samples}"
        )
        psi = None
        if n_ref and n_cur:
            psi = (
                psi_categorical(ref, cur, settings.epsilon)
                if categorical
                else psi_numeric(ref, cur, settings.bins, settings.epsilon)
            )
        return ColumnDrift(column, kind, n_ref, n_cur, psi, None, None, False, (reason,))
    reasons: list[str] = []
    ks_stat = ks_p = None
    if categorical:
        psi = psi_categorical(ref, cur, settings.epsilon)
    else:
        psi = psi_numeric(ref, cur, settings.bins, settings.epsilon)
        ks_stat, ks_p = ks_test(ref, cur)
        if ks_p < settings.ks_p_value_alert and ks_stat >= settings.ks_statistic_alert:
            reasons.append(
                f"KS statistic {ks_stat:.3f} (p={ks_p:.2g}) beyond ks_statistic_alert="
                f"{settings.ks_statistic_alert:g} at ks_p_value_alert={settings.ks_p_value_alert:g}"
            )
    if psi >= settings.psi_alert:
        reasons.append(f"PSI {psi:.3f} >= psi_alert={settings.psi_alert:g}")
    return ColumnDrift(
        column, kind, n_ref, n_cur, psi, ks_stat, ks_p, bool(reasons), tuple(reasons)
    )


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    settings: DriftSettings,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str] = (),
) -> dict[str, Any]:
    """Compare the listed columns of two tables.

    Args:
        reference: The reference sample (e.g. the champion's test split).
        current: The current sample (e.g. a batch-scoring run).
        settings: Thresholds and binning.
        numeric: Numeric columns (PSI and KS).
        categorical: Categorical columns (PSI).

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
                name, reference[name], current[name], settings, categorical=is_categorical
            )
            columns[name] = result.to_dict()
    alerts = [name for name, result in columns.items() if result["alert"]]
    return {
        "settings": asdict(settings),
        "columns": columns,
        "alerts": alerts,
        "alert": bool(alerts),
    }
