"""What registration records for monitoring a version: its training population, its drift reference.

One call from the registration node, after the version exists (the reference is scored by the
version itself); see :mod:`eyecatcher.monitoring.populations` and
:mod:`eyecatcher.monitoring.reference`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import mlflow
import pandas as pd

from eyecatcher.monitoring.populations import TrainingPopulation, record_training_population
from eyecatcher.monitoring.reference import freeze_drift_reference, record_drift_reference

logger = logging.getLogger(__name__)


def record_monitoring_baseline(
    client: mlflow.MlflowClient,
    model_name: str,
    version: str,
    split_manifest: pd.DataFrame,
    *,
    image_phashes: pd.DataFrame | None,
    split_summary: Mapping[str, Any] | None,
    batch_size: int,
    storage_options: Mapping[str, Any],
) -> dict[str, Any]:
    """Log the version's training population and frozen drift reference, and tag the version.

    Args:
        client: The registry client.
        model_name: The registered model.
        version: The new version (already logged: the reference is scored through it).
        split_manifest: The manifest it was built on.
        image_phashes: Splitting's pHash table (``None``: exact copies only, said).
        split_summary: Splitting's summary (its near-duplicate distance).
        batch_size: Images per request when scoring the reference.
        storage_options: fsspec options for ``s3://`` URIs.

    Returns:
        For the registration report: both URIs, the population's size and distance, and the
        reference's size, or ``drift_reference_error`` when the version could not score it
        (a version that cannot score its own test split also fails its staging test).
    """
    population = TrainingPopulation.from_split(split_manifest, image_phashes, split_summary)
    out: dict[str, Any] = {
        "training_population_uri": record_training_population(
            client, model_name, version, population
        ),
        "training_images": len(population.sha256),
        "near_duplicate_max_distance": population.max_distance,
        "training_population_source": population.source,
    }
    try:
        table = freeze_drift_reference(
            f"models:/{model_name}/{version}",
            split_manifest,
            batch_size=batch_size,
            storage_options=storage_options,
        )
    except Exception as exc:  # recorded and said; the staging test judges the version itself
        logger.warning(
            "No drift reference frozen for v%s: %s: %s", version, type(exc).__name__, exc
        )
        return {**out, "drift_reference_error": f"{type(exc).__name__}: {exc}"}
    out["drift_reference_uri"] = record_drift_reference(client, model_name, version, table)
    out["drift_reference_images"] = int(table["error"].isna().sum())
    return out
