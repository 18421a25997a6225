"""The champion against the candidate: same classes, same unseen test images, paired test."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from eyecatcher.pipelines.registration.gate import ChampionComparison, mcnemar_worse_p_value
from eyecatcher.pipelines.registration.staging import predict_rows
from eyecatcher.registry.versions import Registry

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
) -> ChampionComparison:
    """Score the champion on the test images it never saw and pair it with the candidate.

    Args:
        champion: The champion version (``None``: nothing to compare).
        model_name: The registered model name.
        classes: The candidate's classes.
        candidate_predictions: The served candidate's test predictions, ``{sha256: class}``.
        split_manifest: The manifest whose test split is compared.
        batch_size: Images per request to the champion.
        storage_options: fsspec options for ``s3://`` URIs.

    Returns:
        The comparison (``none``, ``not_comparable``, ``unscorable`` or ``paired``).
    """
    if champion is None:
        return ChampionComparison(None, "none")
    version = str(champion.version)
    champion_classes = champion.tags.get("classes", "").split(",")
    if sorted(champion_classes) != sorted(classes):
        added = sorted(set(classes) - set(champion_classes))
        removed = sorted(set(champion_classes) - set(classes))
        return ChampionComparison(
            version,
            "not_comparable",
            detail=f"class sets differ (added {added}, removed {removed})",
        )
    try:
        seen = Registry.seen_images(champion)
        rows = split_manifest[split_manifest["split"] == "test"].sort_values("sha256")
        unseen = rows[~rows["sha256"].isin(seen)]
        if unseen.empty:
            raise LookupError("every test image was seen by the champion in training")
        model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
        predicted = predict_rows(model, unseen, batch_size, storage_options)
    except Exception as exc:  # any failure to load or run the old model means "not comparable"
        return ChampionComparison(version, "unscorable", detail=f"{type(exc).__name__}: {exc}")
    truth = unseen["class"].to_numpy()
    champion_right = predicted["class"].to_numpy() == truth
    candidate_right = unseen["sha256"].map(candidate_predictions).to_numpy() == truth
    candidate_only = int((candidate_right & ~champion_right).sum())
    champion_only = int((champion_right & ~candidate_right).sum())
    logger.info(
        "Champion v%s re-scored on %d test images it never saw (%d excluded as seen).",
        version,
        len(unseen),
        len(rows) - len(unseen),
    )
    return ChampionComparison(
        version,
        "paired",
        accuracy=float(champion_right.mean()),
        candidate_accuracy=float(candidate_right.mean()),
        n_images=len(unseen),
        n_excluded=len(rows) - len(unseen),
        candidate_only=candidate_only,
        champion_only=champion_only,
        p_value=mcnemar_worse_p_value(candidate_only, champion_only),
    )
