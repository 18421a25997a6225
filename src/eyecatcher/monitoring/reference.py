"""The drift reference: a snapshot frozen at registration, re-weighted to production's class mix.

Drift compares production traffic with a reference. Two things made the old reference (the
test split's fp32 predictions, read at check time) the wrong population:

* **precision**: production is scored by the served model (int8 when int8 won), so the
  reference is scored by the registered version itself, through the same pyfunc, when the
  version is registered; it is logged with the version (run artifact
  ``monitoring/drift_reference_v<N>.parquet``, version tag ``drift_reference_uri``) and
  never recomputed, so a later training run cannot change it;
* **class mix**: the test split is class-balanced, production is mostly safe. The class mix
  alone would keep the score PSI above any threshold. So each reference row gets an
  importance weight, ``share of its predicted class in the current batch / share in the
  reference``: the weighted reference has the current class mix and the same score and image
  distributions within each class, and drift measures change *within* classes. The class
  mix itself (prevalence) is reported beside the drift, not alerted on.

Predicted classes are used on both sides (production has no true class); the reference's true
classes are kept in the snapshot for reports.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from eyecatcher.monitoring.image_stats import image_statistics

logger = logging.getLogger(__name__)

#: Version tag naming the frozen reference.
DRIFT_REFERENCE_TAG = "drift_reference_uri"
#: Columns of the snapshot (image statistics as :func:`image_statistics` measures them).
REFERENCE_COLUMNS = (
    "sha256",
    "uri",
    "true_class",
    "class",
    "unsafe_score",
    "width",
    "height",
    "megapixels",
    "brightness",
    "format",
    "error",
)


class DriftReferenceError(RuntimeError):
    """The reference snapshot could not be made or read."""


def drift_reference_table(
    test_rows: pd.DataFrame,
    predicted: pd.DataFrame,
    images: pd.DataFrame,
) -> pd.DataFrame:
    """One row per test image: the served model's answer and the image's statistics.

    Args:
        test_rows: The test split (``sha256``, ``uri``, ``class``), in scoring order.
        predicted: The served model's answers for those rows, in the same order (``class``,
            ``unsafe_score``, ``error``).
        images: :func:`image_statistics` of those rows' URIs.

    Returns:
        Columns :data:`REFERENCE_COLUMNS` (``error``: the model's or the measurement's).

    Raises:
        DriftReferenceError: If the answers do not line up with the rows.
    """
    if len(predicted) != len(test_rows):
        raise DriftReferenceError(
            f"{len(predicted)} answers for {len(test_rows)} test images: cannot freeze the "
            "drift reference"
        )
    stats = images.drop_duplicates("uri").set_index("uri")
    uris = test_rows["uri"].astype(str)
    model_error = predicted["error"].reindex(range(len(predicted))).to_numpy(dtype=object)
    stats_error = uris.map(stats["error"]).to_numpy(dtype=object)
    table = pd.DataFrame(
        {
            "sha256": test_rows["sha256"].astype(str).to_numpy(),
            "uri": uris.to_numpy(),
            "true_class": test_rows["class"].astype(str).to_numpy(),
            "class": predicted["class"].to_numpy(dtype=object),
            "unsafe_score": pd.to_numeric(predicted["unsafe_score"], errors="coerce").to_numpy(),
        }
    )
    for column in ("width", "height", "megapixels", "brightness", "format"):
        table[column] = uris.map(stats[column]).to_numpy()
    table["error"] = [
        m if isinstance(m, str) else s for m, s in zip(model_error, stats_error, strict=True)
    ]
    return table[list(REFERENCE_COLUMNS)]


def freeze_drift_reference(
    model_uri: str,
    split_manifest: pd.DataFrame,
    *,
    batch_size: int,
    storage_options: Mapping[str, Any],
) -> pd.DataFrame:
    """Score the test split with the registered version (its served precision) and measure it.

    Args:
        model_uri: The pinned ``models:/<name>/<version>`` URI.
        split_manifest: The manifest the version was built on.
        batch_size: Images per request.
        storage_options: fsspec options for ``s3://`` URIs.

    Returns:
        The snapshot (:func:`drift_reference_table`).

    Raises:
        DriftReferenceError: If no test image could be scored.
    """
    from eyecatcher.serving.in_process import load_registered_model, predict_rows

    rows = split_manifest[split_manifest["split"] == "test"].sort_values("sha256")
    if rows.empty:
        raise DriftReferenceError("the split has no test image to freeze as the drift reference")
    model = load_registered_model(model_uri)
    predicted = predict_rows(model, rows, batch_size, storage_options)
    images = image_statistics(rows["uri"].astype(str).tolist(), storage_options)
    table = drift_reference_table(rows.reset_index(drop=True), predicted, images)
    if table["error"].notna().all():
        raise DriftReferenceError(
            f"none of the {len(table)} test images could be scored or measured, e.g. "
            f"{table['error'].iloc[0]}"
        )
    return table


def record_drift_reference(
    client: mlflow.MlflowClient, model_name: str, version: str, table: pd.DataFrame
) -> str:
    """Log the snapshot to the active run and tag the version with its URI.

    Returns:
        The artifact's ``runs:/`` URI.
    """
    name = f"drift_reference_v{version}.parquet"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        table.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), "monitoring")
    uri = f"runs:/{mlflow.active_run().info.run_id}/monitoring/{name}"
    client.set_model_version_tag(model_name, version, DRIFT_REFERENCE_TAG, uri)
    return uri


def load_drift_reference(tags: Mapping[str, str]) -> tuple[pd.DataFrame | None, str]:
    """The snapshot a version's tags point at, with a sentence saying what it is.

    Returns:
        ``(table, note)``; ``(None, why)`` when the version records none (registered before
        references were frozen: drift is then not measured, and the report says so).
    """
    uri = tags.get(DRIFT_REFERENCE_TAG)
    if not uri:
        return None, (
            f"the champion records no frozen drift reference ({DRIFT_REFERENCE_TAG}; versions "
            "registered before it existed have none): register a new version"
        )
    with tempfile.TemporaryDirectory() as folder:
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
        table = pd.read_parquet(path)
    return table, f"test split scored by the registered version at registration ({uri})"


def class_mix_weights(
    reference_classes: pd.Series, current_classes: pd.Series
) -> tuple[np.ndarray, dict[str, Any]]:
    """Importance weights that give the reference the current batch's class mix.

    ``w(c) = share of c in current / share of c in reference``, per reference row of class
    ``c``. A class the current batch has but the reference lacks cannot be represented (its
    share is listed under ``unrepresented``); a reference class absent from the current batch
    gets weight 0.

    Args:
        reference_classes: Predicted class per reference row.
        current_classes: Predicted class per current row.

    Returns:
        ``(weights, report)``; the report has both class mixes, the weight per class and the
        effective reference size ``(sum w)^2 / sum w^2``.

    Raises:
        ValueError: If the reference shares no class with the current batch.
    """
    ref = reference_classes.astype(str).value_counts(normalize=True)
    cur = current_classes.astype(str).value_counts(normalize=True)
    per_class = {str(c): float(cur.get(c, 0.0) / ref[c]) for c in ref.index}
    weights = reference_classes.astype(str).map(per_class).to_numpy(dtype=float)
    if not weights.sum() > 0:
        raise ValueError(
            f"the reference's classes {sorted(ref.index)} share none with the current batch's "
            f"{sorted(cur.index)}: it cannot be re-weighted to them"
        )
    unrepresented = {str(c): float(cur[c]) for c in cur.index if c not in ref.index}
    return weights, {
        "reference_class_mix": {str(c): float(v) for c, v in ref.sort_index().items()},
        "current_class_mix": {str(c): float(v) for c, v in cur.sort_index().items()},
        "weight_per_class": dict(sorted(per_class.items())),
        "unrepresented_current_classes": unrepresented,
        "effective_reference_size": float(weights.sum() ** 2 / np.sum(weights**2)),
    }
