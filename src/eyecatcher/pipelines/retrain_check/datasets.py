"""Load-only dataset of the retrain check: the champion and its reference scores.

The champion's registry entry is read through this adapter so that the nodes stay pure.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from eyecatcher import storage

logger = logging.getLogger(__name__)


class ChampionDataset(AbstractDataset[None, dict[str, Any]]):
    """The registered champion (version, registration time, tags) and its reference scores.

    The reference is the test split's per-image predictions that training wrote for the
    champion's candidate, used only when they belong to the champion: the bundle fingerprint
    quantization recorded for that candidate must equal the version's ``bundle_fingerprint``
    tag (a later, refused training run overwrites them).
    """

    def __init__(
        self,
        model_name: str,
        alias: str = "champion",
        reference_predictions: str = "data/07_model_output/{candidate}/test_predictions.parquet",
        quantization_decision: str = "data/08_reporting/quantization_decision.json",
        *,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            model_name: Registered model name.
            alias: The alias to follow.
            reference_predictions: Path template of training's test predictions.
            quantization_decision: Quantization's decision (bundle fingerprints).
            credentials: Secrets for an object store, or ``None`` for the default chain.
            fs_args: fsspec filesystem arguments (``${globals:storage_options}``) for both files.
            metadata: Free-form metadata for Kedro plugins (kedro-viz layers); not used.
        """
        self.metadata = metadata
        self._model_name = model_name
        self._alias = alias
        self._predictions = reference_predictions
        self._decision = quantization_decision
        self._options = {**dict(fs_args or {}), **dict(credentials or {})}

    def _load(self) -> dict[str, Any]:
        from mlflow.exceptions import MlflowException

        from eyecatcher.registry.resolve import ChampionNotFoundError, resolve_champion

        try:
            found = resolve_champion({"model_name": self._model_name, "alias": self._alias})
        except ChampionNotFoundError as exc:
            return {"version": None, "note": str(exc)}
        from mlflow.tracking import MlflowClient

        client = MlflowClient(
            tracking_uri=found["tracking_uri"], registry_uri=found["registry_uri"]
        )
        try:
            version = client.get_model_version(self._model_name, found["version"])
        except MlflowException as exc:  # the alias moved or the version vanished meanwhile
            raise DatasetError(f"cannot read {found['model_uri']}: {exc.message}") from exc
        tags = dict(version.tags)
        reference, note = self._reference(tags)
        return {
            "name": self._model_name,
            "alias": self._alias,
            "version": str(version.version),
            "registered_at": pd.Timestamp(version.creation_timestamp, unit="ms", tz="UTC"),
            "tags": tags,
            "reference": reference,
            "reference_note": note,
        }

    def _reference(self, tags: dict[str, str]) -> tuple[pd.DataFrame | None, str]:
        candidate = tags.get("candidate")
        if not candidate:
            return None, "the champion has no `candidate` tag"
        path = self._predictions.format(candidate=candidate)
        if not storage.exists(path, self._options):
            return None, f"{path} does not exist (train the champion's candidate again)"
        recorded = None
        if storage.exists(self._decision, self._options):
            decision = json.loads(storage.read_bytes(self._decision, self._options))
            entry = decision.get("candidates", {}).get(candidate, {})
            recorded = (entry.get("fingerprints") or {}).get("bundle")
        if recorded is None or recorded != tags.get("bundle_fingerprint"):
            return None, (
                f"{path} belongs to another bundle than the champion's (a later training run); "
                "no reference until the champion's test predictions are available"
            )
        table = pd.read_parquet(io.BytesIO(storage.read_bytes(path, self._options)))
        return table, f"test split predictions of {candidate} ({path})"

    def _save(self, data: None) -> None:
        raise DatasetError("ChampionDataset is read-only")

    def _describe(self) -> dict[str, Any]:
        return {"model_name": self._model_name, "alias": self._alias}
