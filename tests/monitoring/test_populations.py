"""The training population: exact and near-duplicate membership, as the split defined it."""

from __future__ import annotations

import pandas as pd
import pytest

from eyecatcher.monitoring.populations import (
    TrainingPopulation,
    TrainingPopulationError,
    mark_seen,
    population_counts,
)

MANIFEST = pd.DataFrame(
    {
        "sha256": ["t1", "v1", "x1"],
        "split": ["train", "validation", "test"],
    }
)
PHASHES = pd.DataFrame({"sha256": ["t1", "v1", "x1"], "phash": ["0" * 16, "f" * 16, "0f" * 8]})


def test_the_population_is_train_and_validation_with_the_split_distance() -> None:
    population = TrainingPopulation.from_split(
        MANIFEST, PHASHES, {"config": {"near_duplicate_max_distance": 3}}
    )
    assert population.sha256 == frozenset({"t1", "v1"})
    assert population.max_distance == 3
    # Within 3 bits of 0x0 (3 bits set) is near; 4 bits is not; missing is never near.
    near = population.near(pd.Series(["0000000000000007", "000000000000000f", None]))
    assert near.tolist() == [True, False, False]
    again = TrainingPopulation.from_dict(population.to_dict(), "artifact")
    assert again.sha256 == population.sha256 and again.max_distance == 3


def test_without_phashes_or_distance_only_exact_copies_and_it_is_said() -> None:
    population = TrainingPopulation.from_split(MANIFEST, None, None)
    assert not population.checks_near_duplicates
    assert "exact copies only" in population.source
    marked = mark_seen(
        pd.DataFrame({"sha256": ["t1", "zz"], "path": ["a", "b"]}), population, uri_column="path"
    )
    assert marked["seen_in_training"].tolist() == ["exact", None]
    counts = population_counts(marked, population)
    assert (counts["excluded_exact"], counts["kept"]) == (1, 1)


def test_a_stale_phash_table_is_refused() -> None:
    with pytest.raises(TrainingPopulationError, match="no pHash"):
        TrainingPopulation.from_split(
            MANIFEST,
            PHASHES[PHASHES["sha256"] != "v1"],
            {"config": {"near_duplicate_max_distance": 3}},
        )


def test_an_unreadable_image_is_counted_not_hidden(tmp_path) -> None:
    population = TrainingPopulation.from_split(
        MANIFEST, PHASHES, {"config": {"near_duplicate_max_distance": 3}}
    )
    marked = mark_seen(
        pd.DataFrame({"sha256": ["new"], "path": [str(tmp_path / "missing.png")]}),
        population,
        uri_column="path",
    )
    assert marked["seen_in_training"].tolist() == [None]
    assert population_counts(marked, population)["near_duplicate_unchecked"] == 1


def test_rows_that_failed_to_score_are_not_read_again() -> None:
    population = TrainingPopulation.from_split(
        MANIFEST, PHASHES, {"config": {"near_duplicate_max_distance": 3}}
    )
    failed = pd.DataFrame({"sha256": [None], "path": ["gone.png"], "error": ["unreadable: x"]})
    marked = mark_seen(failed, population, uri_column="path")
    assert population_counts(marked, population)["near_duplicate_unchecked"] == 0
