"""A catalog output that a node may leave unwritten, saying why.

Kedro refuses to save ``None``; a shadow output of a run without a shadow model must not be
saved at all, because an empty ``shadow_report.json`` would erase the evidence a real shadow run
left for registration (a scheduled plain batch run would otherwise wipe it every hour).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """What a node returns for an output it has nothing to write to, and why."""

    reason: str


class SkippableDataset(AbstractDataset[Any, Any]):
    """Wraps any dataset; saving a :class:`Skipped` writes nothing and logs the reason.

    Examples:
        ```yaml
        shadow_metrics:
          type: eyecatcher.datasets.skippable_dataset.SkippableDataset
          dataset:
            type: kedro_mlflow.io.metrics.MlflowMetricsHistoryDataset
            prefix: shadow
        ```

    Args:
        dataset: The wrapped dataset's configuration (as in the catalog, with ``type``).
        metadata: Free-form metadata for Kedro plugins (kedro-viz layers); not used.
    """

    def __init__(self, dataset: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        self.metadata = metadata
        self._config = dict(dataset)
        self._dataset = AbstractDataset.from_config("skippable", dict(dataset))

    def save(self, data: Any) -> None:
        """Save through the wrapped dataset, or, for a :class:`Skipped`, log why not."""
        if isinstance(data, Skipped):
            logger.info("Not written (%s): %s", self._config.get("type"), data.reason)
            return
        self._dataset.save(data)

    def load(self) -> Any:
        """What the wrapped dataset loads; an error says no run has written it yet."""
        try:
            return self._dataset.load()
        except DatasetError as exc:
            raise DatasetError(f"nothing written yet by a run that produced it: {exc}") from exc

    def _describe(self) -> dict[str, Any]:
        return {"dataset": self._config}
