"""The champion against the candidate: same classes, same unseen test images, paired test."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from eyecatcher.monitoring.populations import (
    SEEN_IMAGES_TAG,
    TrainingPopulation,
    load_training_population,
    mark_seen,
    population_counts,
    unseen,
)
from eyecatcher.pipelines.registration.gate import ChampionComparison, mcnemar_worse_p_value
from eyecatcher.serving.in_process import load_registered_model, predict_rows

logger = logging.getLogger(__name__)


def compare_with_champion(
    champion: ModelVersion | None,
    *,
    model_name: str,
    classes: Sequence[str],
    candidate_predictions: Mapping[str, str],
    split_manifest: pd.DataFrame,
    batch_size: int,
    storage_options: Mapping[str, Any],
    image_phashes: pd.DataFrame | None = None,
) -> ChampionComparison:
    """Score the champion on the test images it never saw and pair it with the candidate.

    "Never saw" leaves out exact copies (sha256) and near-duplicates (pHash within the
    distance the champion's split used, from its recorded training population) of the
    champion's train and validation images. Test images labelled by a human verdict
    (``label_source`` ``human``: appeal- or review-selected, because a model got them wrong)
    are scored too but reported as their own slice, outside the paired test.

    Args:
        champion: The champion version (``None``: nothing to compare).
        model_name: The registered model name.
        classes: The candidate's classes.
        candidate_predictions: The served candidate's test predictions, ``{sha256: class}``.
        split_manifest: The manifest whose test split is compared.
        batch_size: Images per request to the champion.
        storage_options: fsspec options for ``s3://`` URIs.
        image_phashes: Splitting's pHash table (test images found there are not decoded
            again), or ``None``.

    Returns:
        The comparison (``none``, ``not_comparable``, ``unscorable`` or ``paired``).
    """
    if champion is None:
        return ChampionComparison(None, "none")
    version = str(champion.version)
    mismatch = _class_set_mismatch(version, champion.tags.get("classes", "").split(","), classes)
    if mismatch is not None:
        return mismatch
    try:
        population = load_training_population(champion.tags)
        if population is None:
            raise LookupError(f"v{version} records no seen-image list ({SEEN_IMAGES_TAG})")
        kept, human, counts = _unseen_test_rows(
            split_manifest, population, image_phashes, storage_options
        )
        model = load_registered_model(f"models:/{model_name}/{version}")
        predicted = predict_rows(model, kept, batch_size, storage_options)
    except Exception as exc:  # any failure to load or run the old model means "not comparable"
        return ChampionComparison(version, "unscorable", detail=f"{type(exc).__name__}: {exc}")
    return _paired_comparison(
        version,
        kept,
        human,
        predicted=predicted,
        candidate_predictions=candidate_predictions,
        counts=counts,
        population=population,
    )


def _class_set_mismatch(
    version: str, champion_classes: Sequence[str], classes: Sequence[str]
) -> ChampionComparison | None:
    """``not_comparable`` when the champion's classes differ from the candidate's, else None."""
    if sorted(champion_classes) == sorted(classes):
        return None
    added = sorted(set(classes) - set(champion_classes))
    removed = sorted(set(champion_classes) - set(classes))
    return ChampionComparison(
        version,
        "not_comparable",
        detail=f"class sets differ (added {added}, removed {removed})",
    )


def _unseen_test_rows(
    split_manifest: pd.DataFrame,
    population: TrainingPopulation,
    image_phashes: pd.DataFrame | None,
    storage_options: Mapping[str, Any],
) -> tuple[pd.DataFrame, np.ndarray, Mapping[str, int]]:
    """The test rows the champion never saw, which of them are human-labelled, the counts.

    Raises:
        LookupError: If near-duplicates cannot be ruled out, or no row is left to pair.
    """
    rows = split_manifest[split_manifest["split"] == "test"].sort_values("sha256")
    marked = mark_seen(
        rows,
        population,
        uri_column="uri",
        known_phashes=image_phashes,
        storage_options=storage_options,
    )
    counts = population_counts(marked, population)
    if counts["near_duplicate_unchecked"]:
        raise LookupError(
            f"{counts['near_duplicate_unchecked']} test image(s) could not be read for their "
            "pHash, so near-duplicates of the champion's training images cannot be ruled out"
        )
    kept = unseen(marked)
    human = (
        kept["label_source"].astype(str).eq("human").to_numpy()
        if "label_source" in kept
        else np.zeros(len(kept), dtype=bool)
    )
    if not (~human).any():
        raise LookupError(
            "no test image is left for the paired test: every one was seen by the champion "
            "in training (exactly or as a near-duplicate) or is human-labelled"
        )
    return kept, human, counts


def _paired_comparison(
    version: str,
    kept: pd.DataFrame,
    human: np.ndarray,
    *,
    predicted: pd.DataFrame,
    candidate_predictions: Mapping[str, str],
    counts: Mapping[str, int],
    population: TrainingPopulation,
) -> ChampionComparison:
    """The ``paired`` comparison of the champion's and the candidate's answers (logged)."""
    truth = kept["class"].to_numpy()
    champion_right = predicted["class"].to_numpy() == truth
    candidate_right = kept["sha256"].map(candidate_predictions).to_numpy() == truth
    paired = ~human
    candidate_only = int((candidate_right & ~champion_right & paired).sum())
    champion_only = int((champion_right & ~candidate_right & paired).sum())
    human_slice = {
        "n_images": int(human.sum()),
        "champion_accuracy": float(champion_right[human].mean()) if human.any() else None,
        "candidate_accuracy": float(candidate_right[human].mean()) if human.any() else None,
    }
    excluded = counts["excluded_exact"] + counts["excluded_near_duplicate"]
    logger.info(
        "Champion v%s re-scored on %d test images it never saw (%d excluded as seen, %d of them "
        "near-duplicates; %d human-labelled reported apart).",
        version,
        int(paired.sum()),
        excluded,
        counts["excluded_near_duplicate"],
        human_slice["n_images"],
    )
    check = (
        f"sha256 and pHash within {population.max_distance} bits ({population.source})"
        if population.checks_near_duplicates
        else f"sha256 only ({population.source})"
    )
    return ChampionComparison(
        version,
        "paired",
        accuracy=float(champion_right[paired].mean()),
        candidate_accuracy=float(candidate_right[paired].mean()),
        n_images=int(paired.sum()),
        n_excluded=excluded,
        candidate_only=candidate_only,
        champion_only=champion_only,
        p_value=mcnemar_worse_p_value(candidate_only, champion_only),
        n_excluded_near_duplicates=counts["excluded_near_duplicate"],
        human_slice=human_slice,
        near_duplicate_check=check,
    )
