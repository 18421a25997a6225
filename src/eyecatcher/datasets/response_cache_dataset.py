"""A Kedro dataset that puts the Rekognition response cache in the catalog.

It loads an object the labelling node uses and is never saved by a node: the cache writes each
answer itself as it arrives (durability cannot wait for a node to return), which is why it is a
dataset of its own rather than an output.
"""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError

from eyecatcher import storage
from eyecatcher.rekognition.cache import ResponseCache
from eyecatcher.rekognition.segments import DEFAULT_SEGMENT_RECORDS, SegmentedResponseCache


class ResponseCacheDataset(AbstractDataset[None, ResponseCache]):
    """Loads a :class:`~eyecatcher.rekognition.cache.ResponseCache`.

    A local ``filepath`` is the append-only JSONL file guarded by ``flock``; an ``s3://`` one
    is kept as one segment object per writing session, merged on read
    (:class:`~eyecatcher.rekognition.segments.SegmentedResponseCache`).

    Examples:
        ```yaml
        rekognition_response_cache:
          type: eyecatcher.datasets.response_cache_dataset.ResponseCacheDataset
          filepath: data/01_raw/rekognition/responses.jsonl
          seed_filepaths: [data/01_raw/demo/rekognition_responses.jsonl]
          read_only: false
          fs_args: ${globals:storage_options}
        ```

    Args:
        filepath: The cache (``null`` for a purely read-only seed cache).
        seed_filepaths: Read-only JSONL files consulted as well (local or ``s3://``).
        read_only: Never write (offline mode).
        credentials: Secrets for an object store (``credentials.yml``), or ``None`` for the
            default chain.
        fs_args: fsspec filesystem arguments (``${globals:storage_options}``).
        segment_records: Answers per segment object on an object store.
        metadata: Free-form metadata, ignored.
    """

    def __init__(
        self,
        *,
        filepath: str | None = None,
        seed_filepaths: list[str] | None = None,
        read_only: bool = False,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        segment_records: int = DEFAULT_SEGMENT_RECORDS,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._filepath = filepath
        self._seed_filepaths = list(seed_filepaths or [])
        self._read_only = read_only
        self._options = {**dict(fs_args or {}), **dict(credentials or {})}
        self._segment_records = int(segment_records)
        self.metadata = metadata

    def load(self) -> ResponseCache:
        """Open the cache (reads every record into memory)."""
        if self._filepath is not None and not storage.is_local(self._filepath):
            return SegmentedResponseCache(
                self._filepath,
                self._seed_filepaths,
                read_only=self._read_only,
                storage_options=self._options,
                segment_records=self._segment_records,
            )
        return ResponseCache(
            self._filepath,
            self._seed_filepaths,
            read_only=self._read_only,
            storage_options=self._options,
        )

    def save(self, data: None) -> None:
        """Refuse: the cache is written record by record by the labelling node."""
        raise DatasetError("ResponseCacheDataset is load-only; answers are appended as they arrive")

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "seed_filepaths": self._seed_filepaths,
            "read_only": self._read_only,
        }
