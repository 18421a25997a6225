"""Balanced, leakage-free train/validation/test splitting of labelled images.

This module is pure: it takes a table of images whose near-duplicate groups are already known
and returns the assignment. No image is decoded here, so the guarantees below can be checked by
property-based tests on thousands of synthetic rows.

Guarantees of :func:`balanced_split` (``n_c`` = images of class ``c`` after sampling,
``r_s`` = ratio of split ``s``, ``q_cs`` = the *quota*: ``n_c * r_s`` rounded by the largest
remainder method, so ``|q_cs - n_c * r_s| < 1`` and ``sum_s q_cs = n_c``):

1. **No leakage**: every sha256 is in exactly one split and every near-duplicate group is in
   exactly one split (whatever the classes of its members).
2. **Cap**: ``n_c = min(available_c, max_per_class)``.
3. **Ratios**: a class none of whose sampled images shares a group with another sampled image
   gets exactly ``q_cs`` images in each split, hence within one image of ``n_c * r_s``. A class
   with ``g_c`` sampled images in multi-image groups gets ``|count_cs - q_cs| <= g_c``: a group
   is atomic, so it can push a split over its quota, and the other splits then give way.
   Every deviation from the quota is reported.
4. **Presence**: a class with ``g_c = 0`` is in every split whose quota is at least one image,
   which holds for every split as soon as ``n_c * r_s >= 1`` (10 images for 80/10/10, the
   default minimum). With groups, each promised split still gets one of the class's ungrouped
   images while any is left; (class, split) pairs left empty are reported.
5. **Determinism**: the result depends on the seed and the set of rows, not on row order.
   Sampling prefers distinct groups: a capped class takes one image from as many groups as
   possible before it takes a second near-duplicate of any of them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: Split names, in the order used for tie-breaks and for sorting the manifest.
SPLITS: tuple[str, ...] = ("train", "validation", "test")

SmallClassPolicy = Literal["drop", "fail"]


class SplittingError(ValueError):
    """The images cannot be split as configured (empty, one class, small classes, bad input)."""


@dataclass(frozen=True)
class SplitConfig:
    """How to sample and split.

    Attributes:
        max_per_class: At most this many images of each class are kept.
        ratios: Fraction of each class per split (``train``, ``validation``, ``test``); each is
            positive and they sum to one.
        seed: Seed of every random choice (sampling, assignment, tie-breaks).
        min_per_class: Classes with fewer images than this are dropped or fail the run.
        on_small_class: ``drop`` (warn and list the dropped classes) or ``fail``.
    """

    max_per_class: int = 1000
    ratios: Mapping[str, float] = field(
        default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1}
    )
    seed: int = 42
    min_per_class: int = 10
    on_small_class: SmallClassPolicy = "drop"

    def __post_init__(self) -> None:
        """Validate the configuration so a typo fails before any work is done."""
        if set(self.ratios) != set(SPLITS):
            raise SplittingError(
                f"ratios must have exactly the keys {list(SPLITS)}, got {sorted(self.ratios)}"
            )
        bad = {name: value for name, value in self.ratios.items() if not float(value) > 0}
        if bad:
            raise SplittingError(f"every split ratio must be positive, got {bad}")
        if abs(sum(float(v) for v in self.ratios.values()) - 1.0) > 1e-6:
            raise SplittingError(f"split ratios must sum to 1, got {dict(self.ratios)}")
        if int(self.max_per_class) < 1:
            raise SplittingError(f"max_per_class must be at least 1, got {self.max_per_class}")
        if int(self.min_per_class) < 1:
            raise SplittingError(f"min_per_class must be at least 1, got {self.min_per_class}")
        if self.min_per_class > self.max_per_class:
            raise SplittingError(
                f"min_per_class ({self.min_per_class}) exceeds max_per_class ({self.max_per_class})"
            )
        if self.on_small_class not in ("drop", "fail"):
            raise SplittingError(
                f"on_small_class must be 'drop' or 'fail', got {self.on_small_class!r}"
            )

    def exact_ratios(self) -> list[Fraction]:
        """Ratios as exact fractions in :data:`SPLITS` order (0.1 stays one tenth)."""
        # repr() of a float is its shortest round-trip decimal, so 0.1 becomes exactly 1/10
        # and quotas such as 10 * 0.1 do not fall just under 1.
        fractions = [Fraction(repr(float(self.ratios[name]))) for name in SPLITS]
        total = sum(fractions)
        return [f / total for f in fractions]


@dataclass
class SplitResult:
    """What :func:`balanced_split` decided.

    Attributes:
        manifest: The sampled images with a ``split`` column, one row per image.
        available: Images per class before sampling (every class seen, dropped ones included).
        dropped: Classes dropped for having fewer than ``min_per_class`` images, with counts.
        quotas: Per kept class, the quota of each split (see the module docstring).
        counts: Per kept class, the images actually assigned to each split.
        grouped: Per kept class, sampled images that share a group with another sampled image.
    """

    manifest: pd.DataFrame
    available: dict[str, int]
    dropped: dict[str, int]
    quotas: dict[str, dict[str, int]]
    counts: dict[str, dict[str, int]]
    grouped: dict[str, int]

    def deviations(self) -> dict[str, dict[str, int]]:
        """Per class and split, images assigned minus the quota (non-zero entries only)."""
        out: dict[str, dict[str, int]] = {}
        for cls, quota in self.quotas.items():
            diff = {s: self.counts[cls][s] - quota[s] for s in SPLITS}
            diff = {s: d for s, d in diff.items() if d}
            if diff:
                out[cls] = diff
        return out

    def missing(self) -> list[tuple[str, str]]:
        """(class, split) pairs with no image although the class was kept."""
        return [(cls, s) for cls, c in self.counts.items() for s in SPLITS if c[s] == 0]


def stable_key(seed: int, *parts: str) -> int:
    """A 64-bit pseudo-random key for ``parts`` under ``seed``, independent of row order.

    Args:
        seed: The configured seed.
        parts: Strings identifying the thing to order (a sha256, a class name, ...).

    Returns:
        An unsigned 64-bit integer.
    """
    text = "\x1f".join((str(seed), *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def largest_remainder(
    total: int, weights: list[Fraction] | list[int], tiebreak: list[int]
) -> list[int]:
    """Apportion ``total`` integer units in proportion to ``weights`` (Hamilton's method).

    Each share is the floor or the ceiling of its exact value, and the shares sum to ``total``.

    Args:
        total: Units to distribute.
        weights: Non-negative weights, not all zero when ``total`` is positive.
        tiebreak: Keys ordering equal remainders (larger first).

    Returns:
        The shares, in the order of ``weights``.
    """
    weight_sum = sum(weights)
    if total == 0:
        return [0] * len(weights)
    exact = [Fraction(total) * Fraction(w) / Fraction(weight_sum) for w in weights]
    shares = [int(e) for e in exact]  # floor: every value is non-negative
    leftover = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (exact[i] - shares[i], tiebreak[i]))
    for i in reversed(order[len(order) - leftover :]):
        shares[i] += 1
    return shares


def _validate(images: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("sha256", "class", "group") if c not in images.columns]
    if missing:
        raise SplittingError(f"images table lacks the column(s) {missing}")
    for column in ("sha256", "class", "group"):
        if images[column].isna().any():
            raise SplittingError(f"column {column!r} has {int(images[column].isna().sum())} nulls")
    duplicated = images.loc[images["sha256"].duplicated(keep=False), "sha256"]
    if not duplicated.empty:
        examples = ", ".join(sorted(set(duplicated))[:5])
        raise SplittingError(
            f"{duplicated.nunique()} sha256 value(s) appear on more than one row "
            f"(an image must have one class), e.g. {examples}"
        )
    return images.astype({"sha256": str, "class": str, "group": str})


def _drop_small_classes(
    images: pd.DataFrame, config: SplitConfig
) -> tuple[pd.DataFrame, dict[str, int], dict[str, int]]:
    available = {str(k): int(v) for k, v in images["class"].value_counts().sort_index().items()}
    dropped = {cls: n for cls, n in available.items() if n < config.min_per_class}
    if dropped:
        listing = ", ".join(f"{cls} ({n})" for cls, n in dropped.items())
        if config.on_small_class == "fail":
            raise SplittingError(
                f"{len(dropped)} class(es) have fewer than min_per_class="
                f"{config.min_per_class} images: {listing}. Collect more images, lower "
                "min_per_class, or set on_small_class: drop."
            )
        logger.warning(
            "Dropping %d class(es) with fewer than min_per_class=%d images; the model will "
            "not know them: %s",
            len(dropped),
            config.min_per_class,
            listing,
        )
    kept = images[~images["class"].isin(list(dropped))]
    n_classes = kept["class"].nunique()
    if n_classes == 0:
        raise SplittingError(
            "no images left to split: "
            + (
                f"every class has fewer than min_per_class={config.min_per_class} images "
                f"({', '.join(f'{c} ({n})' for c, n in dropped.items())})"
                if dropped
                else "the table of images is empty"
            )
        )
    if n_classes == 1:
        raise SplittingError(
            f"only one class is left to split ({kept['class'].iloc[0]!r}); a classifier needs "
            "at least two"
            + (f" (dropped for being small: {', '.join(dropped)})" if dropped else "")
        )
    return kept, available, dropped


def _sample(images: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    # Within a class, the k-th member of every group comes before the (k+1)-th member of any,
    # so a cap keeps as many distinct groups as it can; the key orders the rest at random.
    images = images.sort_values(["class", "group", "key"], kind="stable")
    images["group_rank"] = images.groupby(["class", "group"]).cumcount()
    images = images.sort_values(["class", "group_rank", "key"], kind="stable")
    sampled = images.groupby("class", sort=True).head(config.max_per_class)
    return sampled.drop(columns="group_rank")


def _place_groups(
    sampled: pd.DataFrame,
    classes: list[str],
    quotas: np.ndarray,
    seed: int,
) -> tuple[dict[str, str], np.ndarray]:
    """Put every multi-image group into one split, largest groups first.

    Returns the split of each group and the per-class, per-split images placed this way.
    """
    class_index = {cls: i for i, cls in enumerate(classes)}
    sizes = sampled.groupby("group", sort=True).size()
    multi = sizes[sizes > 1]
    placed = np.zeros_like(quotas)
    if multi.empty:
        return {}, placed
    members = sampled[sampled["group"].isin(multi.index)]
    per_group = members.groupby(["group", "class"], sort=True).size()
    composition: dict[str, list[tuple[int, int]]] = {}
    for (group, cls), count in per_group.items():
        composition.setdefault(str(group), []).append((class_index[str(cls)], int(count)))
    order = sorted(multi.index, key=lambda g: (-int(multi[g]), stable_key(seed, "group", g)))
    remaining = quotas.astype(np.int64).copy()
    assignment: dict[str, str] = {}
    for group in order:
        parts = composition[str(group)]
        best: tuple[int, float, int] | None = None
        for s in range(len(SPLITS)):
            overflow = sum(max(0, k - max(0, int(remaining[c, s]))) for c, k in parts)
            quota = sum(int(quotas[c, s]) for c, _ in parts)
            left = sum(int(remaining[c, s]) for c, _ in parts)
            # Least overflow first; then the split with the largest share of its quota still
            # open, so groups spread over splits in proportion to the ratios.
            candidate = (overflow, -(left / max(quota, 1)), s)
            if best is None or candidate < best:
                best = candidate
        chosen = best[2]
        for c, k in parts:
            remaining[c, chosen] -= k
            placed[c, chosen] += k
        assignment[str(group)] = SPLITS[chosen]
    return assignment, placed


def _singleton_counts(
    free: int, quota: np.ndarray, placed: np.ndarray, tiebreak: list[int]
) -> list[int]:
    """How many of a class's ``free`` ungrouped images go to each split."""
    remaining = [int(q - p) for q, p in zip(quota, placed, strict=True)]
    counts = [0] * len(SPLITS)
    left = free
    # Presence first: a split the quota promises this class gets one image if any is left.
    for s in range(len(SPLITS)):
        if left and quota[s] >= 1 and placed[s] == 0 and remaining[s] >= 1:
            counts[s] = 1
            left -= 1
    room = [max(0, r - c) for r, c in zip(remaining, counts, strict=True)]
    if left:
        # sum(room) >= left always holds; without groups it is an equality and every split
        # gets exactly its quota. With overflow, the shortfall is shared in proportion to room.
        extra = largest_remainder(left, room, tiebreak)
        counts = [c + e for c, e in zip(counts, extra, strict=True)]
    return counts


def balanced_split(images: pd.DataFrame, config: SplitConfig) -> SplitResult:
    """Sample up to ``max_per_class`` images per class and split them without leakage.

    See the module docstring for the exact guarantees.

    Args:
        images: One row per image with ``sha256`` (unique), ``class`` and ``group`` (the
            near-duplicate group id; a singleton group for an image without near-duplicates).
            Other columns (``uri``, ...) are carried into the manifest.
        config: Sampling and splitting configuration.

    Returns:
        The manifest (input columns plus ``split``) and the counts behind it.

    Raises:
        SplittingError: On missing columns, nulls, a sha256 on two rows, classes under the
            minimum with ``on_small_class: fail``, or fewer than two classes to split.
    """
    images = _validate(images)
    kept, available, dropped = _drop_small_classes(images, config)
    kept = kept.copy()
    kept["key"] = np.array(
        [stable_key(config.seed, "image", sha) for sha in kept["sha256"]], dtype=np.uint64
    )
    sampled = _sample(kept, config)
    classes = sorted(sampled["class"].unique())
    ratios = config.exact_ratios()
    sizes = sampled["class"].value_counts()
    quotas = np.array(
        [
            largest_remainder(
                int(sizes[cls]), ratios, [stable_key(config.seed, "quota", cls, s) for s in SPLITS]
            )
            for cls in classes
        ],
        dtype=np.int64,
    )
    group_split, placed = _place_groups(sampled, classes, quotas, config.seed)
    in_group = sampled["group"].isin(list(group_split))
    split = pd.Series(sampled["group"].map(group_split).to_numpy(dtype=object), index=sampled.index)
    counts = placed.copy()
    for i, cls in enumerate(classes):
        free = sampled[(sampled["class"] == cls) & ~in_group].sort_values("key", kind="stable")
        tiebreak = [stable_key(config.seed, "share", cls, s) for s in SPLITS]
        per_split = _singleton_counts(len(free), quotas[i], placed[i], tiebreak)
        labels = np.repeat(np.array(SPLITS, dtype=object), per_split)
        split.loc[free.index] = labels
        counts[i] += per_split
    sampled["split"] = split.astype(str)
    order = {name: i for i, name in enumerate(SPLITS)}
    manifest = (
        sampled.assign(_split_order=sampled["split"].map(order))
        .sort_values(["_split_order", "class", "sha256"], kind="stable")
        .drop(columns=["_split_order", "key"])
        .reset_index(drop=True)
    )
    grouped = sampled[in_group].groupby("class").size()
    return SplitResult(
        manifest=manifest,
        available=available,
        dropped=dropped,
        quotas={
            c: dict(zip(SPLITS, map(int, quotas[i]), strict=True)) for i, c in enumerate(classes)
        },
        counts={
            c: dict(zip(SPLITS, map(int, counts[i]), strict=True)) for i, c in enumerate(classes)
        },
        grouped={c: int(grouped.get(c, 0)) for c in classes},
    )
