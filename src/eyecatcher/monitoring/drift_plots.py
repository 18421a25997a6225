"""Reference against current, per drift column: the shares behind each PSI, as one figure.

The bins are those PSI uses (:class:`~eyecatcher.monitoring.drift.NumericBins` for numeric
columns, the categories otherwise) and the reference shares are the re-weighted ones, so the
bars show exactly what the number in each title measures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from eyecatcher.monitoring.drift import NumericBins

#: Bins shown at most per column (the largest shares on either side; PSI uses them all).
_MAX_BARS = 24


def _numeric_shares(
    reference: pd.Series, current: pd.Series, weights: np.ndarray, bins: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    ref = pd.to_numeric(reference, errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(ref)
    cur = pd.to_numeric(current, errors="coerce").to_numpy(dtype=float)
    cur = cur[np.isfinite(cur)]
    if not keep.any() or cur.size == 0:
        return [], np.array([]), np.array([])
    binning = NumericBins.from_reference(ref[keep], bins)
    ref_counts = np.bincount(
        binning.assign(ref[keep]), weights=weights[keep], minlength=binning.n_bins
    )
    cur_counts = np.bincount(binning.assign(cur), minlength=binning.n_bins)
    return binning.labels(), ref_counts / ref_counts.sum(), cur_counts / max(cur_counts.sum(), 1)


def _categorical_shares(
    reference: pd.Series, current: pd.Series, weights: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    keep = reference.notna().to_numpy()
    ref = reference[keep].astype(str).to_numpy()
    cur = current.dropna().astype(str)
    if not keep.any() or cur.empty:
        return [], np.array([]), np.array([])
    categories = sorted(set(ref) | set(cur))
    ref_counts = pd.Series(weights[keep]).groupby(ref).sum().reindex(categories, fill_value=0.0)
    cur_counts = cur.value_counts().reindex(categories, fill_value=0)
    return (
        categories,
        (ref_counts / ref_counts.sum()).to_numpy(),
        (cur_counts / max(cur_counts.sum(), 1)).to_numpy(),
    )


def drift_figure(
    reference: pd.DataFrame | None,
    current: Mapping[str, pd.Series],
    *,
    categorical: Sequence[str] = (),
    weights: np.ndarray | None = None,
    bins: int = 10,
    report: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> Figure:
    """One bar chart per column: reference share against current share per bin.

    Args:
        reference: The reference rows (``None``: nothing measured; the figure says ``reason``).
        current: Current values per column to plot.
        categorical: Which of those columns are categorical.
        weights: The reference's importance weights (``None``: equal).
        bins: The drift ``bins`` setting.
        report: The drift report (its PSI and alert per column go into the titles).
        reason: Why nothing was measured, when ``reference`` is ``None``.

    Returns:
        The figure.
    """
    if reference is None or not current:
        figure = Figure(figsize=(6, 2))
        axis = figure.add_subplot()
        axis.axis("off")
        axis.text(0.5, 0.5, f"drift not measured:\n{reason}", ha="center", va="center", wrap=True)
        return figure
    weights = np.ones(len(reference)) if weights is None else np.asarray(weights, dtype=float)
    columns = [c for c in current if c in reference.columns]
    n_cols = 2
    n_rows = math.ceil(len(columns) / n_cols)
    figure = Figure(figsize=(12, 3.2 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
    results = (report or {}).get("columns", {})
    for axis, column in zip(axes, columns, strict=False):
        if column in categorical:
            labels, ref, cur = _categorical_shares(reference[column], current[column], weights)
        else:
            labels, ref, cur = _numeric_shares(reference[column], current[column], weights, bins)
        result = results.get(column, {})
        if not labels:
            axis.axis("off")
            axis.set_title(f"{column}: no values on one side", fontsize=10)
            continue
        shown = np.argsort(-np.maximum(ref, cur), kind="stable")[:_MAX_BARS]
        shown.sort()
        x = np.arange(shown.size)
        axis.bar(x - 0.2, ref[shown], 0.4, label="reference (re-weighted)")
        axis.bar(x + 0.2, cur[shown], 0.4, label="current")
        axis.set_xticks(x, [labels[i] for i in shown], rotation=60, ha="right", fontsize=7)
        axis.set_ylabel("share")
        psi = result.get("psi")
        title = column if psi is None else f"{column}: PSI {psi:.3f}"
        axis.set_title(title + (" ALERT" if result.get("alert") else ""), fontsize=10)
    for axis in axes[len(columns) :]:
        axis.axis("off")
    if columns:
        axes[0].legend(fontsize=8)
    version = (report or {}).get("champion_version")
    figure.suptitle(f"Drift of champion v{version}: reference against current batch")
    return figure
