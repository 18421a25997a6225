"""A Kedro dataset: every feedback file in a folder or under an ``s3://`` prefix, as bytes."""

from __future__ import annotations

import logging
import posixpath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from eyecatcher.pipelines.feedback.files import is_feedback_file
from eyecatcher.storage import filesystem

logger = logging.getLogger(__name__)


class FeedbackFilesDataset(AbstractDataset[None, dict[str, bytes]]):
    """Load-only: ``{relative file name: bytes}`` for each CSV/JSONL/Parquet file under ``path``.

    A missing folder loads as no feedback, with a warning naming it (a moderation team starts
    without any); other files in the folder (a README) are skipped and counted.
    """

    def __init__(
        self,
        path: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            path: A local folder (relative to the project root, or absolute) or ``s3://`` prefix.
            credentials: Secrets for an object store (``credentials.yml``), or ``None`` for the
                default chain.
            fs_args: fsspec filesystem arguments (``${globals:storage_options}``).
            metadata: Free-form metadata for Kedro plugins (kedro-viz layers); not used.
        """
        self.metadata = metadata
        self._path = path
        self._options = {**dict(fs_args or {}), **dict(credentials or {})}

    def _load(self) -> dict[str, bytes]:
        fs, root = filesystem(self._path, self._options)
        if not fs.exists(root):
            logger.warning("Feedback folder %s does not exist: no human verdicts", self._path)
            return {}
        found = sorted(fs.find(root))
        files = {}
        skipped = 0
        for path in found:
            name = posixpath.relpath(path, root)
            if not is_feedback_file(name):
                skipped += 1
                continue
            with fs.open(path, "rb") as fh:
                files[name] = fh.read()
        if skipped:
            logger.info(
                "Feedback folder %s: %d file(s) without a feedback extension skipped",
                self._path,
                skipped,
            )
        return files

    def _save(self, data: None) -> None:
        raise DatasetError("FeedbackFilesDataset is read-only: moderators' files are raw data")

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}
