"""Properties and edge cases of the pure splitting function (no image is decoded here)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from eyecatcher.pipelines.splitting.balanced_split import (
    SPLITS,
    SplitConfig,
    SplittingError,
    balanced_split,
    largest_remainder,
)
from eyecatcher.pipelines.splitting.settings import SplittingSettings


def make_images(
    sizes: list[int],
    *,
    grouped_fraction: float = 0.0,
    max_group: int = 4,
    cross_class: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Synthetic rows: ``sizes[i]`` images of class ``c{i}``, some of them in shared groups.

    A ``grouped_fraction`` of the images is gathered into groups of 2..``max_group`` members,
    within one class, or across classes when ``cross_class``.
    """
    rng = np.random.default_rng(seed)
    classes = np.repeat([f"c{i}" for i in range(len(sizes))], sizes)
    n = len(classes)
    sha = [f"{rng.integers(0, 2**63):016x}{i:08d}" for i in range(n)]
    group = list(sha)  # every image its own group to start with
    chosen = rng.permutation(n)[: int(n * grouped_fraction)]
    if not cross_class:
        chosen = chosen[np.argsort(classes[chosen], kind="stable")]
    start = 0
    while start < len(chosen) - 1:
        size = int(rng.integers(2, max_group + 1))
        members = chosen[start : start + size]
        if not cross_class:
            members = members[classes[members] == classes[members[0]]]
        for m in members:
            group[m] = f"g{start}"
        start += size
    return pd.DataFrame({"sha256": sha, "class": classes, "group": group, "uri": sha})


def ideal(n: int, ratio: float) -> Fraction:
    return n * Fraction(repr(ratio))


ratios_strategy = st.sampled_from(
    [
        {"train": 0.8, "validation": 0.1, "test": 0.1},
        {"train": 0.7, "validation": 0.15, "test": 0.15},
        {"train": 0.6, "validation": 0.2, "test": 0.2},
        {"train": 0.5, "validation": 0.3, "test": 0.2},
    ]
)
# Class sizes from 0 to thousands, most of them small so that the edge cases come up often.
class_size = st.one_of(st.integers(0, 30), st.integers(0, 400), st.integers(0, 3000))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[pd.DataFrame, SplitConfig]:
    sizes = draw(st.lists(class_size, min_size=2, max_size=6))
    images = make_images(
        sizes,
        grouped_fraction=draw(st.sampled_from([0.0, 0.0, 0.05, 0.3, 0.9])),
        max_group=draw(st.integers(2, 40)),
        cross_class=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31)),
    )
    min_per_class = draw(st.integers(1, 15))
    config = SplitConfig(
        max_per_class=draw(st.integers(min_per_class, 1200)),
        ratios=draw(ratios_strategy),
        seed=draw(st.integers(0, 2**31)),
        min_per_class=min_per_class,
    )
    return images, config


FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(scenarios())
def test_split_properties(scenario: tuple[pd.DataFrame, SplitConfig]) -> None:
    check_guarantees(*scenario)


@st.composite
def heavily_grouped(draw: st.DrawFn) -> tuple[pd.DataFrame, SplitConfig]:
    """Small classes where most images are near-duplicates: groups beat quotas."""
    sizes = draw(st.lists(st.integers(10, 120), min_size=2, max_size=4))
    images = make_images(
        sizes,
        grouped_fraction=draw(st.sampled_from([0.5, 0.8, 1.0])),
        max_group=draw(st.integers(5, 60)),
        cross_class=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31)),
    )
    config = SplitConfig(
        ratios=draw(ratios_strategy), seed=draw(st.integers(0, 2**31)), min_per_class=10
    )
    return images, config


@settings(FAST, max_examples=50)
@given(heavily_grouped())
def test_split_properties_with_heavy_grouping(scenario: tuple[pd.DataFrame, SplitConfig]) -> None:
    check_guarantees(*scenario)


def check_guarantees(images: pd.DataFrame, config: SplitConfig) -> None:
    """Assert every guarantee of ``balanced_split`` (see its module docstring)."""
    available = images["class"].value_counts()
    kept = sorted(c for c, n in available.items() if n >= config.min_per_class)
    if len(kept) < 2:
        event("fewer than two classes kept: error")
        with pytest.raises(SplittingError):
            balanced_split(images, config)
        return
    result = balanced_split(images, config)
    manifest = result.manifest
    # Say which edge cases the examples reached (pytest --hypothesis-show-statistics).
    event(f"capped: {any(available[c] > config.max_per_class for c in kept)}")
    event(f"dropped a class: {bool(result.dropped)}")
    event(f"groups moved a class off its quota: {bool(result.deviations())}")
    event(f"largest class >= 1000: {max(available) >= 1000}")

    # No leakage: one row per sha256, one split per group.
    assert manifest["sha256"].is_unique
    assert (manifest.groupby("group")["split"].nunique() == 1).all()
    assert set(manifest["split"]) <= set(SPLITS)
    # Rows come from the input, unchanged.
    original = images.set_index("sha256")
    assert (original.loc[manifest["sha256"], "class"].to_numpy() == manifest["class"]).all()

    # Caps and small classes.
    assert sorted(result.quotas) == kept
    assert result.dropped == {c: int(n) for c, n in available.items() if c not in kept}
    per_class = manifest["class"].value_counts()
    for cls in kept:
        n = min(int(available[cls]), config.max_per_class)
        assert per_class[cls] == n

        counts = manifest[manifest["class"] == cls]["split"].value_counts()
        # Sampled images of the class sharing a group with another sampled image.
        shared = manifest["group"].map(manifest["group"].value_counts()) > 1
        grouped = int((shared & (manifest["class"] == cls)).sum())
        assert grouped == result.grouped[cls]
        for split in SPLITS:
            count = int(counts.get(split, 0))
            quota = result.quotas[cls][split]
            assert count == result.counts[cls][split]
            assert abs(quota - ideal(n, config.ratios[split])) < 1
            if grouped == 0:
                # Ratios within one image per class, and presence when the quota allows it.
                assert count == quota
                if ideal(n, config.ratios[split]) >= 1:
                    assert count >= 1
            else:
                assert abs(count - quota) <= grouped


@settings(FAST, max_examples=40)
@given(scenarios(), st.randoms(use_true_random=False))
def test_split_is_deterministic_and_independent_of_row_order(
    scenario: tuple[pd.DataFrame, SplitConfig], random
) -> None:
    images, config = scenario
    if sum(n >= config.min_per_class for n in images["class"].value_counts()) < 2:
        return
    first = balanced_split(images, config).manifest
    order = list(range(len(images)))
    random.shuffle(order)
    shuffled = balanced_split(images.iloc[order].reset_index(drop=True), config).manifest
    pd.testing.assert_frame_equal(first, shuffled)


def test_different_seeds_give_different_splits() -> None:
    images = make_images([200, 200])
    a = balanced_split(images, SplitConfig(seed=1)).manifest.set_index("sha256")["split"]
    b = balanced_split(images, SplitConfig(seed=2)).manifest.set_index("sha256")["split"]
    assert (a.sort_index() != b.sort_index()).any()


def test_default_split_is_80_10_10_with_cap() -> None:
    images = make_images([5000, 40, 9])
    result = balanced_split(images, SplitConfig())
    assert result.counts == {
        "c0": {"train": 800, "validation": 100, "test": 100},
        "c1": {"train": 32, "validation": 4, "test": 4},
    }
    assert result.dropped == {"c2": 9}
    assert result.available == {"c0": 5000, "c1": 40, "c2": 9}


def test_ten_images_reach_every_split_at_10_percent() -> None:
    # 10 * 0.1 must be exactly one image, not 0.999…: quotas use exact fractions.
    result = balanced_split(make_images([10, 10]), SplitConfig())
    assert result.counts["c0"] == {"train": 8, "validation": 1, "test": 1}


def test_capping_prefers_distinct_near_duplicate_groups() -> None:
    # 30 images in 10 groups of 3: a cap of 10 keeps one image of each group.
    rows = [
        {"sha256": f"{g:02d}{k}", "class": "a", "group": f"g{g}"}
        for g in range(10)
        for k in range(3)
    ] + [{"sha256": f"b{i:03d}", "class": "b", "group": f"b{i:03d}"} for i in range(20)]
    result = balanced_split(pd.DataFrame(rows), SplitConfig(max_per_class=10, min_per_class=1))
    sampled = result.manifest[result.manifest["class"] == "a"]
    assert len(sampled) == 10
    assert sampled["group"].nunique() == 10
    assert result.grouped["a"] == 0  # one member per group left: nothing constrains them


def test_cross_class_group_stays_in_one_split() -> None:
    rows = [{"sha256": f"a{i:03d}", "class": "a", "group": f"a{i:03d}"} for i in range(30)]
    rows += [{"sha256": f"b{i:03d}", "class": "b", "group": f"b{i:03d}"} for i in range(30)]
    for sha in ("a000", "a001", "b000"):
        next(r for r in rows if r["sha256"] == sha)["group"] = "shared"
    result = balanced_split(pd.DataFrame(rows), SplitConfig())
    shared = result.manifest[result.manifest["group"] == "shared"]
    assert len(shared) == 3
    assert shared["split"].nunique() == 1


def test_a_group_larger_than_a_quota_is_reported_not_broken() -> None:
    # 20 images of class a, 15 of them near-duplicates of each other: the group must go to
    # train (quota 16); the class is still in every split and the deviation is reported.
    rows = [{"sha256": f"a{i:03d}", "class": "a", "group": "big" if i < 15 else f"a{i:03d}"}
            for i in range(20)]  # fmt: skip
    rows += [{"sha256": f"b{i:03d}", "class": "b", "group": f"b{i:03d}"} for i in range(20)]
    result = balanced_split(pd.DataFrame(rows), SplitConfig())
    assert result.counts["a"]["train"] >= 15
    assert result.manifest.groupby("group")["split"].nunique().max() == 1
    assert result.counts["a"]["validation"] >= 1
    assert result.counts["a"]["test"] >= 1
    assert result.quotas["a"] == {"train": 16, "validation": 2, "test": 2}
    assert sum(result.counts["a"].values()) == 20
    assert result.missing() == []


def test_class_held_by_one_group_is_reported_missing() -> None:
    rows = [{"sha256": f"a{i:03d}", "class": "a", "group": "one"} for i in range(12)]
    rows += [{"sha256": f"b{i:03d}", "class": "b", "group": f"b{i:03d}"} for i in range(20)]
    result = balanced_split(pd.DataFrame(rows), SplitConfig())
    assert result.counts["a"] == {"train": 12, "validation": 0, "test": 0}
    assert ("a", "validation") in result.missing()
    assert result.deviations()["a"] == {"train": 2, "validation": -1, "test": -1}


def test_small_classes_fail_the_run_when_configured() -> None:
    images = make_images([50, 50, 3, 0, 7])
    with pytest.raises(SplittingError, match=r"c2 \(3\), c4 \(7\)"):
        balanced_split(images, SplitConfig(on_small_class="fail"))


def test_small_classes_are_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    result = balanced_split(make_images([50, 50, 3]), SplitConfig())
    assert result.dropped == {"c2": 3}
    assert "c2 (3)" in caplog.text


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ([], "empty"),
        ([3, 4], "every class has fewer than"),
        ([100], "only one class"),
        ([100, 2], "only one class"),
    ],
)
def test_empty_or_single_class_result_is_a_clear_error(sizes: list[int], message: str) -> None:
    with pytest.raises(SplittingError, match=message):
        balanced_split(make_images(sizes), SplitConfig())


def test_the_same_sha256_on_two_rows_is_an_error() -> None:
    images = make_images([20, 20])
    images.loc[1, "sha256"] = images.loc[0, "sha256"]
    with pytest.raises(SplittingError, match="more than one row"):
        balanced_split(images, SplitConfig())


def test_missing_columns_and_nulls_are_errors() -> None:
    images = make_images([20, 20])
    with pytest.raises(SplittingError, match="group"):
        balanced_split(images.drop(columns="group"), SplitConfig())
    images.loc[3, "class"] = None
    with pytest.raises(SplittingError, match="null"):
        balanced_split(images, SplitConfig())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ratios": {"train": 0.8, "validation": 0.2}},
        {"ratios": {"train": 0.8, "validation": 0.1, "test": 0.2}},
        {"ratios": {"train": 1.0, "validation": 0.0, "test": 0.0}},
        {"max_per_class": 0},
        {"min_per_class": 0},
        {"min_per_class": 20, "max_per_class": 10},
        {"on_small_class": "ignore"},
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict) -> None:
    with pytest.raises(SplittingError):
        SplitConfig(**kwargs)


def test_config_from_params_reads_the_parameters_block() -> None:
    config = SplittingSettings.parse(
        {"seed": 3, "max_per_class": 50, "ratios": {"train": 0.6, "validation": 0.2, "test": 0.2},
         "min_per_class": 5, "on_small_class": "fail", "near_duplicates": {"max_distance": 4}}
    ).split_config()  # fmt: skip
    assert (config.seed, config.max_per_class, config.min_per_class) == (3, 50, 5)
    assert config.on_small_class == "fail"
    assert config.exact_ratios() == [Fraction(3, 5), Fraction(1, 5), Fraction(1, 5)]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 5000),
    # At least one positive weight, anywhere in the list.
    st.tuples(st.integers(1, 1000), st.lists(st.integers(0, 1000), max_size=4), st.randoms()).map(
        lambda t: t[2].sample([t[0], *t[1]], len(t[1]) + 1)
    ),
)
def test_largest_remainder_is_floor_or_ceiling_and_sums(total: int, weights: list[int]) -> None:
    shares = largest_remainder(total, weights, list(range(len(weights))))
    assert sum(shares) == total
    for share, weight in zip(shares, weights, strict=True):
        exact = Fraction(total * weight, sum(weights))
        assert exact - 1 < share < exact + 1
