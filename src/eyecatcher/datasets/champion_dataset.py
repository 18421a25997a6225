"""Load-only dataset of the retrain check: the champion and what registration recorded for it.

The champion's registry entry is read through this adapter so that the nodes stay pure.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from eyecatcher.monitoring.populations import load_training_population
from eyecatcher.monitoring.reference import load_drift_reference

logger = logging.getLogger(__name__)


class ChampionDataset(AbstractDataset[None, dict[str, Any]]):
    """The registered champion: version, registration time, tags, and what monitoring needs.

    * ``reference``: the drift reference frozen when the version was registered (its test
      split scored by the version itself, at its served precision, with image statistics;
      :mod:`eyecatcher.monitoring.reference`), ``None`` for a version registered without
      one (``reference_note`` says why);
    * ``training_population``: the images it trained or was calibrated on, with pHashes and
      the split's near-duplicate distance (:mod:`eyecatcher.monitoring.populations`), or
      ``None`` when the version records none.

    Examples:
        ```yaml
        champion:
          type: eyecatcher.datasets.champion_dataset.ChampionDataset
          model_name: ${globals:model_name}
          alias: champion
        ```
    """

    def __init__(
        self,
        model_name: str,
        alias: str = "champion",
        *,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            model_name: Registered model name.
            alias: The alias to follow.
            credentials: Unused: the registry is reached through MLflow's own configuration
                (kept so one catalog entry shape fits every dataset of the project).
            fs_args: Unused, as ``credentials``.
            metadata: Free-form metadata for Kedro plugins (kedro-viz layers); not used.
        """
        self.metadata = metadata
        self._model_name = model_name
        self._alias = alias

    def load(self) -> dict[str, Any]:
        """The champion's record, or ``{"version": None, "note": why}`` when there is none."""
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
        reference, note = load_drift_reference(tags)
        return {
            "name": self._model_name,
            "alias": self._alias,
            "version": str(version.version),
            "registered_at": pd.Timestamp(version.creation_timestamp, unit="ms", tz="UTC"),
            "tags": tags,
            "reference": reference,
            "reference_note": note,
            "training_population": load_training_population(tags),
        }

    def save(self, data: None) -> None:
        """Refuse: the registry is written by registration, never by a node here."""
        raise DatasetError("ChampionDataset is read-only")

    def _describe(self) -> dict[str, Any]:
        return {"model_name": self._model_name, "alias": self._alias}
