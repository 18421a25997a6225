"""A Kedro dataset: every feedback file in a folder or under an ``s3://`` prefix, as bytes."""

from __future__ import annotations

import functools
import logging
import posixpath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from eyecatcher.pipelines.feedback.files import FeedbackFile, is_feedback_file
from eyecatcher.storage import filesystem

logger = logging.getLogger(__name__)


class FeedbackFilesDataset(AbstractDataset[None, dict[str, FeedbackFile]]):
    """Load-only: ``{relative file name: FeedbackFile}`` for each CSV/JSONL/Parquet file.

    Files are listed with their sizes and read later, like ``PartitionedDataset``'s lazy
    partitions: the node refuses a file over ``feedback.max_file_bytes`` (a parameter) without
    reading it. A missing folder loads as no feedback, with a warning naming it (a moderation
    team starts without any); other files in the folder (a README) are skipped and counted.
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

    def _load(self) -> dict[str, FeedbackFile]:
        fs, root = filesystem(self._path, self._options)
        if not fs.exists(root):
            logger.warning("Feedback folder %s does not exist: no human verdicts", self._path)
            return {}
        found = fs.find(root, detail=True)
        files = {}
        skipped = 0
        for path in sorted(found):
            name = posixpath.relpath(path, root)
            if not is_feedback_file(name):
                skipped += 1
                continue
            files[name] = FeedbackFile(
                size=int(found[path]["size"]), opener=functools.partial(fs.open, path, "rb")
            )
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
