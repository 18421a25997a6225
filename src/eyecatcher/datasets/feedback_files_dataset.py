"""A Kedro dataset: every feedback file in a folder or under an ``s3://`` prefix, listed lazily.

Which files are feedback (their extensions) and how a listed file is read (:class:`FeedbackFile`,
at most a cap's worth of bytes) live here, with the listing; what a file's rows mean is the
feedback pipeline's (``pipelines/feedback/files.py`` parses them).
"""

from __future__ import annotations

import functools
import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from kedro.io import AbstractDataset, DatasetError

from eyecatcher.storage import filesystem

logger = logging.getLogger(__name__)

#: Extension of Label Studio JSON exports in the feedback folder.
EXPORT_EXTENSION = ".json"
#: Extensions read as feedback (``.json``: a Label Studio JSON export); other files in the
#: folder are ignored (and counted).
FEEDBACK_EXTENSIONS = (".csv", ".jsonl", ".ndjson", ".parquet", EXPORT_EXTENSION)


@dataclass(frozen=True)
class FeedbackFile:
    """A feedback file listed but not read yet, so a file over the size cap is never read.

    Attributes:
        size: The size the store reported when the folder was listed, in bytes.
        opener: Opens the file for binary reading.
    """

    size: int
    opener: Callable[[], IO[bytes]]

    def read(self, limit: int) -> bytes:
        """At most ``limit + 1`` bytes: one more than the cap shows that the file grew past it."""
        with self.opener() as handle:
            return handle.read(limit + 1)


def is_feedback_file(name: str) -> bool:
    """Whether a file name has one of :data:`FEEDBACK_EXTENSIONS` (case-insensitive)."""
    return name.lower().endswith(FEEDBACK_EXTENSIONS)


class FeedbackFilesDataset(AbstractDataset[None, dict[str, FeedbackFile]]):
    """Load-only: ``{relative file name: FeedbackFile}`` for each CSV/JSONL/Parquet file.

    Files are listed with their sizes and read later, like ``PartitionedDataset``'s lazy
    partitions: the node refuses a file over ``feedback.max_file_bytes`` (a parameter) without
    reading it. A missing folder loads as no feedback, with a warning naming it (a moderation
    team starts without any); other files in the folder (a README) are skipped and counted.

    Examples:
        ```yaml
        feedback_files:
          type: eyecatcher.datasets.feedback_files_dataset.FeedbackFilesDataset
          path: s3://my-bucket/moderation/feedback/
          fs_args: ${globals:storage_options}
        ```
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

    def load(self) -> dict[str, FeedbackFile]:
        """``{name relative to path: FeedbackFile}`` (empty, with a warning, without a folder)."""
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

    def save(self, data: None) -> None:
        """Refuse: moderators' files are raw data, never written by a node."""
        raise DatasetError("FeedbackFilesDataset is read-only: moderators' files are raw data")

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}
