"""A Kedro dataset for a JSON report another pipeline may not have written yet.

Registration reads batch scoring's shadow report through it: a missing file loads as ``None``
(with what would write it logged), a file that is not JSON is a :class:`~kedro.io.DatasetError`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from eyecatcher import storage

logger = logging.getLogger(__name__)


class OptionalJSONDataset(AbstractDataset[None, dict[str, Any] | None]):
    """A JSON report that may not exist yet: ``None`` then, with what would write it logged.

    Read-only: the report is written by another pipeline (batch scoring's shadow report), and
    its absence is an answer ("no evidence"), not an error. A file that exists but is not JSON
    is an error.

    Examples:
        ```yaml
        registration_shadow_evidence:
          type: eyecatcher.datasets.optional_json_dataset.OptionalJSONDataset
          filepath: ${globals:data_root}/08_reporting/shadow_report.json
          missing_hint: written by kedro run --pipelines batch_scoring
          fs_args: ${globals:storage_options}
        ```
    """

    def __init__(
        self,
        filepath: str,
        missing_hint: str = "",
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            filepath: The JSON file (local or ``s3://``).
            missing_hint: What writes the file, said when it is missing.
            credentials: Secrets for an object store (``credentials.yml``), or ``None`` for the
                default chain.
            fs_args: fsspec filesystem arguments (``${globals:storage_options}``).
            metadata: Free-form metadata for Kedro plugins (kedro-viz layers); not used.
        """
        self.metadata = metadata
        self._filepath = filepath
        self._hint = missing_hint
        self._options = {**dict(fs_args or {}), **dict(credentials or {})}

    def load(self) -> dict[str, Any] | None:
        """The report, or ``None`` (logged with ``missing_hint``) when there is none yet."""
        path = self._filepath
        if not storage.exists(path, self._options):
            logger.info("%s does not exist: %s", path, self._hint or "none loaded")
            return None
        try:
            return json.loads(storage.read_bytes(path, self._options).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path} is not a readable JSON report: {exc}") from exc

    def save(self, data: None) -> None:
        """Refuse: the report is written by the pipeline that produces it."""
        raise DatasetError("OptionalJSONDataset is read-only")

    def _exists(self) -> bool:
        return storage.exists(self._filepath, self._options)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath}
