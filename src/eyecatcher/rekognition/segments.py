"""The response cache on an object store (``s3://``): one segment per writer, merged on read.

S3 has neither append nor ``flock``, so the local cache's single append-only file cannot be
shared there. Instead every writing session (one :meth:`SegmentedResponseCache.exclusive`
block: one labelling run) writes its own objects, and readers merge them all::

    <cache>                       optional JSONL file, read only (e.g. a local cache synced up)
    <cache>.segments/<started>-<host>-<pid>-<random>-w<thread>-<n>.jsonl

- **Durable as they arrive.** Each answer rewrites the current segment object of the worker
  thread that received it with one ``PUT`` of the whole segment (atomic on S3: readers see the
  previous version or the new one, whole) before :meth:`~SegmentedResponseCache.append`
  returns, so a crash loses nothing that was paid for. Each worker thread fills its own
  segments, so uploads run in parallel and no object is written by two threads. A segment is
  closed after ``segment_records`` answers and the next one starts, which bounds what each
  ``PUT`` re-uploads.
- **Two writers never lose an answer.** Sessions never write the same key (the name holds the
  start time, host, pid and a random part), so nothing is overwritten and no lock is needed.
  Two runs labelling overlapping images at the same time may both pay for an image; both
  answers are kept, and lookups choose between them with the local cache's rules (the lowest
  usable ``MinConfidence``, then the latest record, segments ordered by name).
- **Damage is skipped, never rewritten.** A line that is not a record is reported and skipped
  on every load; no writer rewrites another's objects, so nothing is moved to a quarantine.
- **A failed write stops sending.** The answer that could not be stored is written to the log
  in full (where a person can recover it) and
  :class:`~eyecatcher.rekognition.cache.CacheWriteError` is raised, as for the local cache.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from eyecatcher import storage
from eyecatcher.rekognition.cache import CacheWriteError, ReadOnlyCacheError, ResponseCache
from eyecatcher.storage import StorageOptions

logger = logging.getLogger(__name__)

#: Answers per segment object before the session starts its next one.
DEFAULT_SEGMENT_RECORDS = 200


@dataclass
class _Segment:
    """The object a worker thread is filling: ``<name>-<number>.jsonl`` holding ``lines``."""

    name: str
    number: int = 0
    lines: list[bytes] = field(default_factory=list)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-") or "host"


class SegmentedResponseCache(ResponseCache):
    """A :class:`ResponseCache` kept on an object store as per-session segment objects.

    Args:
        uri: The cache's name, e.g. ``s3://bucket/01_raw/rekognition/responses.jsonl``; the
            segments live under ``<uri>.segments/``.
        seed_paths: Read-only JSONL files consulted as well (local or remote).
        read_only: Never write.
        storage_options: fsspec options (and credentials, from the dataset) for ``uri``.
        segment_records: Answers per segment object.
    """

    def __init__(
        self,
        uri: str,
        seed_paths: Iterable[str | os.PathLike[str]] = (),
        *,
        read_only: bool = False,
        storage_options: StorageOptions | None = None,
        segment_records: int = DEFAULT_SEGMENT_RECORDS,
    ) -> None:
        if segment_records < 1:
            raise ValueError(f"segment_records must be at least 1, got {segment_records}")
        self.uri = str(uri).rstrip("/")
        self.segments_prefix = f"{self.uri}.segments"
        self.segment_records = int(segment_records)
        self._writing = False
        self._session = ""
        self._open_segments: dict[int, _Segment] = {}
        super().__init__(None, seed_paths, read_only=True, storage_options=storage_options)
        self.read_only = read_only

    def _sources(self) -> Iterator[tuple[Path | str, bytes]]:
        for seed in self.seed_paths:
            yield seed, storage.read_bytes(str(seed), self.storage_options)
        if storage.exists(self.uri, self.storage_options):
            yield self.uri, storage.read_bytes(self.uri, self.storage_options)
        for segment in self.segment_uris():
            yield segment, storage.read_bytes(segment, self.storage_options)

    def segment_uris(self) -> list[str]:
        """Every segment object, in name order (session start time first)."""
        return storage.list_files(
            self.segments_prefix, self.storage_options, extensions=[".jsonl"], recursive=False
        )

    def _bad_line_fate(self, path: Path | str) -> str:
        return "kept in place: object-store segments are never rewritten"

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[SegmentedResponseCache]:
        """A writing session: appends go to this session's own segments (re-entrant).

        On entry the cache is brought up to date with what other sessions wrote. No lock is
        taken: sessions never write the same object.

        Raises:
            ReadOnlyCacheError: When the cache is read-only.
        """
        if self.read_only:
            raise ReadOnlyCacheError(
                "this response cache is read-only (offline mode); refusing to record an answer"
            )
        if self._writing:
            yield self
            return
        self._load()
        started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        host = _safe(socket.gethostname())[:40]
        self._session = f"{started}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._open_segments = {}
        self._failed = None
        self._writing = True
        try:
            yield self
        finally:
            self._writing = False
            self._open_segments = {}

    def _segment_of_this_thread(self) -> _Segment | None:
        """The calling thread's open segment, or ``None`` once a write of the session failed."""
        # One segment per worker thread: uploads run in parallel, and an object is only ever
        # written by one thread, so an older upload can never overwrite a newer one.
        with self._lock:
            if self._failed is not None:
                return None
            segment = self._open_segments.get(threading.get_ident())
            if segment is None:
                writer = f"w{len(self._open_segments):03d}"
                segment = _Segment(f"{self._session}-{writer}")
                self._open_segments[threading.get_ident()] = segment
            return segment

    def append(self, record: dict[str, Any]) -> None:
        """Store one record durably: its segment is re-uploaded before this returns.

        Args:
            record: A record with ``sha256`` and exactly one of ``response`` / ``error``.
                ``received_at`` is added when missing.

        Raises:
            ReadOnlyCacheError: When the cache is read-only or no writing session is open.
            CacheWriteError: When the object store refused the write: the answer is logged in
                full and later appends of this session are refused the same way.
        """
        if self.read_only or not self._writing:
            raise ReadOnlyCacheError(
                "refusing to record an answer: the cache is read-only or no writing session "
                "is open (use `with cache.exclusive():`)"
            )
        record = {"received_at": datetime.now(UTC).isoformat(timespec="seconds"), **record}
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        segment = self._segment_of_this_thread()
        if segment is None:
            self._refuse(record, line)
        if len(segment.lines) >= self.segment_records:
            segment.number += 1
            segment.lines = []
        target = storage.join(self.segments_prefix, f"{segment.name}-{segment.number:05d}.jsonl")
        try:
            storage.write_atomic(target, b"".join([*segment.lines, line]), self.storage_options)
        except Exception as exc:  # any failure to store a paid answer must stop sending
            with self._lock:
                if self._failed is None:
                    self._failed = exc if isinstance(exc, OSError) else OSError(str(exc))
            self._refuse(record, line)
        segment.lines.append(line)
        with self._lock:
            self._index(record, target)

    def _refuse(self, record: dict[str, Any], line: bytes) -> NoReturn:
        """Log an answer that could not be stored, in full, and stop the session's writing."""
        assert self._failed is not None
        # The answer cannot be stored: the log is where a person can recover it.
        logger.error(
            "could not store an answer in %s (%s); the answer is: %s",
            self.segments_prefix,
            self._failed,
            line.decode().strip(),
        )
        with self._lock:
            self._index(record, "memory")
        raise CacheWriteError(
            self._failed.errno or errno.EIO,
            f"writing to {self.segments_prefix} failed ({self._failed}); this answer is in "
            "the log (error level); answers stored before it are safe",
        )

    def close(self) -> None:
        """Nothing to close: every answer is already stored."""

    def __repr__(self) -> str:
        return (
            f"SegmentedResponseCache(uri={self.uri}, seeds={[str(p) for p in self.seed_paths]}, "
            f"read_only={self.read_only}, records={self.n_records})"
        )
