"""Kedro datasets that put the response cache and the Rekognition endpoint in the catalog.

Both load an object the labelling node uses; neither is saved by a node. The cache writes each
answer itself as it arrives (durability cannot wait for a node to return), which is why it is a
dataset of its own rather than an output.
"""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError

from eyecatcher import storage
from eyecatcher.rekognition.cache import ResponseCache
from eyecatcher.rekognition.client import RekognitionEndpoint
from eyecatcher.rekognition.segments import DEFAULT_SEGMENT_RECORDS, SegmentedResponseCache


class ResponseCacheDataset(AbstractDataset[None, ResponseCache]):
    """Loads a :class:`~eyecatcher.rekognition.cache.ResponseCache`.

    A local ``filepath`` is the append-only JSONL file guarded by ``flock``; an ``s3://`` one
    is kept as one segment object per writing session, merged on read
    (:class:`~eyecatcher.rekognition.segments.SegmentedResponseCache`). Example::

        rekognition_response_cache:
          type: eyecatcher.rekognition.datasets.ResponseCacheDataset
          filepath: data/01_raw/rekognition/responses.jsonl
          seed_filepaths: [data/01_raw/demo/rekognition_responses.jsonl]
          read_only: false
          fs_args: ${globals:storage_options}

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


class RekognitionEndpointDataset(AbstractDataset[None, RekognitionEndpoint]):
    """Loads a :class:`~eyecatcher.rekognition.client.RekognitionEndpoint` from config.

    Example (``conf/aws/catalog_labelling.yml``)::

        rekognition_endpoint:
          type: eyecatcher.rekognition.datasets.RekognitionEndpointDataset
          mode: live
          credentials: aws
          max_attempts: 8

    Args:
        mode: ``live`` or ``offline``.
        region_name: AWS region; the ``region_name`` in ``credentials`` wins when set.
        endpoint_url: Service URL override.
        max_attempts: Attempts per request (botocore ``standard`` retry mode).
        connect_timeout: Seconds.
        read_timeout: Seconds.
        credentials: Resolved from ``conf/*/credentials.yml`` by Kedro.
        metadata: Free-form metadata, ignored.
    """

    def __init__(
        self,
        *,
        mode: str = "offline",
        region_name: str | None = None,
        endpoint_url: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        credentials = dict(credentials or {})
        region = credentials.pop("region_name", None) or region_name or "us-east-1"
        self._endpoint = RekognitionEndpoint(
            mode=mode,
            region_name=str(region),
            endpoint_url=endpoint_url or None,
            credentials=credentials,
            max_attempts=int(max_attempts),
            connect_timeout=float(connect_timeout),
            read_timeout=float(read_timeout),
        )
        self.metadata = metadata

    def load(self) -> RekognitionEndpoint:
        """Return the endpoint description (no connection is made here)."""
        return self._endpoint

    def save(self, data: None) -> None:
        """Refuse: configuration only."""
        raise DatasetError("RekognitionEndpointDataset is load-only")

    def _describe(self) -> dict[str, Any]:
        # Never describe the credentials: this ends up in logs.
        return {
            "mode": self._endpoint.mode,
            "region_name": self._endpoint.region_name,
            "endpoint_url": self._endpoint.endpoint_url,
            "max_attempts": self._endpoint.max_attempts,
        }
