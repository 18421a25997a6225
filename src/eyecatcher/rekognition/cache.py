"""The response cache: every paid Rekognition answer, kept verbatim, never lost.

The cache is a JSON Lines file, one record per answered request, appended and ``fsync``-ed as
each answer arrives, so an interrupted run (Ctrl-C, crash, ``kill -9``) keeps every response it
had received. A record looks like::

    {"sha256": "...", "min_confidence": 50.0, "project_version": null,
     "source": "rekognition", "received_at": "2026-11-22T01:02:03+00:00",
     "request": {"image": "bytes", "prepared": "as_is"},
     "response": {... the API's answer, verbatim ...}}

Errors the API gave for the image itself (``InvalidImageFormatException`` and friends) are
cached too, as ``{"error": {"code": ..., "message": ...}}`` instead of ``response``, so that the
history of what was asked is complete; see :meth:`ResponseCache.lookup` for when they are
re-sent.

What changes an answer is the image (``sha256``), ``MinConfidence`` and the custom-moderation
``ProjectVersion``. An answer obtained at a lower ``MinConfidence`` also answers a request at a
higher one (the API returns every label at or above the threshold), so it is reused with the
weaker labels filtered out.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class CacheCorruptError(ValueError):
    """A cache file holds a line that is not a record (other than a cut-off last line)."""


class ReadOnlyCacheError(RuntimeError):
    """An answer was about to be written to a cache opened read-only."""


@dataclass(frozen=True)
class CachedAnswer:
    """A cached record that answers a request.

    Attributes:
        record: The record as stored (``response`` or ``error``).
        response: The response with labels below the requested threshold removed, or ``None``
            for an error record.
        error_code: The API error code for an error record, else ``None``.
        origin: The file the record came from.
    """

    record: dict[str, Any]
    response: dict[str, Any] | None
    error_code: str | None
    origin: str


def _key(sha256: str, project_version: str | None) -> tuple[str, str]:
    return sha256, project_version or ""


def _filter_response(response: dict[str, Any], min_confidence: float) -> dict[str, Any]:
    filtered = dict(response)
    filtered["ModerationLabels"] = [
        label
        for label in response.get("ModerationLabels", [])
        if float(label.get("Confidence", 0.0)) >= min_confidence
    ]
    return filtered


def _read_records(path: Path) -> tuple[list[dict[str, Any]], str]:
    """Read every record; tolerate only a cut-off final line (a write killed midway).

    Returns:
        The records and the state of the file's end: ``clean`` (ends with a newline or is
        empty), ``no_newline`` (the last record is complete but lacks its newline) or
        ``cut_off`` (the last line is a fragment that holds no record).
    """
    records: list[dict[str, Any]] = []
    lines = path.read_bytes().split(b"\n")
    ends_cleanly = lines[-1] == b""
    if ends_cleanly:
        lines = lines[:-1]
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            if number == len(lines) and not ends_cleanly:
                logger.warning(
                    "%s: the last line was cut off (a run killed while writing it); "
                    "that one image will be asked again",
                    path,
                )
                return records, "cut_off"
            raise CacheCorruptError(f"{path}:{number} is not a JSON record: {exc}") from exc
        if not isinstance(record, dict) or "sha256" not in record:
            raise CacheCorruptError(f"{path}:{number} is not a cache record (no sha256)")
        if ("response" in record) == ("error" in record):
            raise CacheCorruptError(f"{path}:{number} must hold exactly one of response/error")
        records.append(record)
    return records, "clean" if ends_cleanly else "no_newline"


class ResponseCache:
    """Append-only store of Rekognition answers keyed by image and request settings.

    Args:
        path: The writable JSONL file (created on the first append), or ``None`` for a cache
            that only reads ``seed_paths``.
        seed_paths: Read-only JSONL files consulted as well (e.g. the committed demo answers).
        read_only: Never write, even to ``path`` (the offline demo).

    Thread-safe: workers append concurrently; each append is one ``write`` + ``flush`` +
    ``fsync`` under a lock, so records never interleave.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        seed_paths: Iterable[str | os.PathLike[str]] = (),
        *,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.seed_paths = [Path(p) for p in seed_paths]
        self.read_only = read_only or self.path is None
        self._lock = threading.Lock()
        self._handle: Any = None
        self._tail = "clean"
        # key -> list of (min_confidence, record, origin), in file order
        self._answers: dict[tuple[str, str], list[tuple[float, dict[str, Any], str]]] = {}
        self._errors: dict[tuple[str, str], list[tuple[float, dict[str, Any], str]]] = {}
        self.n_records = 0
        for seed in self.seed_paths:
            if not seed.exists():
                raise FileNotFoundError(f"seed cache {seed} does not exist")
            self._ingest(seed)
        if self.path is not None and self.path.exists():
            self._tail = self._ingest(self.path)

    def _ingest(self, path: Path) -> str:
        records, tail = _read_records(path)
        for record in records:
            self._index(record, str(path))
        return tail

    def _index(self, record: dict[str, Any], origin: str) -> None:
        key = _key(record["sha256"], record.get("project_version"))
        target = self._answers if "response" in record else self._errors
        target.setdefault(key, []).append(
            (float(record.get("min_confidence", 50.0)), record, origin)
        )
        self.n_records += 1

    def lookup(
        self,
        sha256: str,
        min_confidence: float,
        project_version: str | None = None,
        resend_error_codes: Iterable[str] = (),
    ) -> CachedAnswer | None:
        """Find what the cache knows about a request, if anything.

        An answer at ``min_confidence`` or below wins (the latest such record, labels below
        ``min_confidence`` filtered out). Otherwise an error record for the same settings is
        returned unless its code is in ``resend_error_codes`` (errors that depend on state that
        may have been fixed since, such as S3 permissions).

        Args:
            sha256: The image's identity.
            min_confidence: The requested ``MinConfidence``.
            project_version: The custom-moderation adapter, or ``None``.
            resend_error_codes: Error codes that do not count as an answer.

        Returns:
            The cached answer, or ``None`` when the request must be sent.
        """
        key = _key(sha256, project_version)
        usable = [item for item in self._answers.get(key, []) if item[0] <= min_confidence + 1e-9]
        if usable:
            # Closest threshold first (fewest labels to drop), then the latest record.
            best = max(enumerate(usable), key=lambda pair: (pair[1][0], pair[0]))[1]
            _, record, origin = best
            return CachedAnswer(
                record, _filter_response(record["response"], min_confidence), None, origin
            )
        resend = set(resend_error_codes)
        errors = [
            item
            for item in self._errors.get(key, [])
            if abs(item[0] - min_confidence) < 1e-9 and item[1]["error"]["code"] not in resend
        ]
        if errors:
            _, record, origin = errors[-1]
            return CachedAnswer(record, None, record["error"]["code"], origin)
        return None

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (flushed and fsync-ed before returning).

        Args:
            record: A record with ``sha256`` and exactly one of ``response`` / ``error``.
                ``received_at`` is added when missing.

        Raises:
            ReadOnlyCacheError: When the cache was opened read-only.
        """
        if self.read_only or self.path is None:
            raise ReadOnlyCacheError(
                "this response cache is read-only (offline mode); refusing to record an answer"
            )
        record = {"received_at": datetime.now(UTC).isoformat(timespec="seconds"), **record}
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self._tail == "cut_off":
                    self._drop_cut_off_tail()
                self._handle = self.path.open("a", encoding="utf-8")
                if self._tail == "no_newline":
                    # The last record is complete and paid for: end its line, keep it.
                    self._handle.write("\n")
                    self._tail = "clean"
            self._handle.write(line)
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._index(record, str(self.path))

    def _drop_cut_off_tail(self) -> None:
        # The fragment of a record a killed run left half-written holds no usable answer
        # (that image is simply asked again); cut it so the next record starts a clean line.
        assert self.path is not None
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: removing a %d-byte cut-off last line", self.path, len(data) - keep)
        with self.path.open("r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
        self._tail = "clean"

    def close(self) -> None:
        """Close the writable file (appends reopen it)."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def __repr__(self) -> str:
        return (
            f"ResponseCache(path={self.path}, seeds={[str(p) for p in self.seed_paths]}, "
            f"read_only={self.read_only}, records={self.n_records})"
        )
