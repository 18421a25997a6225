"""The response cache: every paid Rekognition answer, kept verbatim, never lost or poisoned.

The cache is a JSON Lines file, one record per answered request, appended and ``fsync``-ed as
each answer arrives, so an interrupted run (Ctrl-C, crash, ``kill -9``) keeps every response it
had received. A record looks like::

    {"sha256": "...", "min_confidence": 20.0, "project_version": null,
     "source": "rekognition", "received_at": "2026-11-22T01:02:03+00:00",
     "request": {"image": "bytes", "prepared": "as_is"},
     "response": {... the API's answer, verbatim ...}}

Errors the API gave for the image itself (``InvalidImageFormatException`` and friends) are
cached too, as ``{"error": {"code": ..., "message": ...}}`` instead of ``response``, so that the
history of what was asked is complete; see :meth:`ResponseCache.lookup` for when they are
re-sent.

Writing happens only inside :meth:`ResponseCache.exclusive`, which holds an inter-process lock
(``flock`` on ``<cache>.lock``, holding the holder's pid, host and start time), so two runs never
pay for the same images and one run's repair never touches another's records. Around the file:

- ``<cache>.spill-<pid>-<time>.jsonl``: answers that could not be written to the cache (disk
  full, I/O error). Every load reads them; the next writer merges them into the cache.
- ``<cache>.quarantine.jsonl``: lines that are not records (a cut-off write, damage, a
  wrongly typed field such as a text ``min_confidence``, a number or nesting too large to
  parse), skipped with a warning by every load and moved out of the cache by the next writer,
  never silently dropped. Every line is type-checked when read, so one bad line never makes a
  load raise.

What changes an answer is the image (``sha256``), ``MinConfidence`` and the custom-moderation
``ProjectVersion``. An answer obtained at a lower ``MinConfidence`` also answers a request at a
higher one (the API returns every label at or above the threshold), so it is reused with the
weaker labels filtered out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from eyecatcher import storage
from eyecatcher.storage import StorageOptions

logger = logging.getLogger(__name__)

#: Opens the cache file for appending (binary). A seam for tests that simulate a full disk.
Opener = Callable[[Path], IO[bytes]]


class CacheCorruptError(ValueError):
    """A cache file cannot be repaired (its damaged lines could not be quarantined)."""


class ReadOnlyCacheError(RuntimeError):
    """An answer was about to be written to a cache opened read-only."""


class CacheLockedError(RuntimeError):
    """Another process holds the cache's write lock."""


class CacheWriteError(OSError):
    """Writing an answer failed; it was spilled to a side file and sending must stop."""


@dataclass(frozen=True)
class CachedAnswer:
    """A cached record that answers a request.

    Attributes:
        record: The record as stored (``response`` or ``error``).
        response: The response with labels below the requested threshold removed, or ``None``
            for an error record.
        error_code: The API error code for an error record, else ``None``.
        origin: The file the record came from.
        min_confidence: The ``MinConfidence`` the answer was requested with.
        above_requested: The answer was requested at a higher ``MinConfidence`` than asked
            now, so it lacks the weaker labels a request now would return.
    """

    record: dict[str, Any]
    response: dict[str, Any] | None
    error_code: str | None
    origin: str
    min_confidence: float = 50.0
    above_requested: bool = False


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


def _format_error_before_conversion(record: dict[str, Any]) -> bool:
    # Answers recorded before payloads were format-checked sent CMYK JPEG, 16-bit PNG, WebP...
    # as they were; converted now, they may well be accepted, so that error is not final.
    request = record.get("request") or {}
    return record["error"]["code"] == "InvalidImageFormatException" and not request.get(
        "format_checked"
    )


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_number(value: Any) -> bool:
    # bool is an int to Python, and NaN/inf parse from JSON: neither is a confidence.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _optional(record: dict[str, Any], field: str, kinds: type | tuple[type, ...]) -> str | None:
    """Why ``record[field]`` (absent or null is fine) is not of ``kinds``, or ``None``."""
    value = record.get(field)
    if value is None or isinstance(value, kinds):
        return None
    return f"{field} is a JSON {type(value).__name__}, not {_kind_name(kinds)}"


def _kind_name(kinds: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer"}
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(kind, kind.__name__) for kind in kinds)


def _one_label_problem(label: Any) -> str | None:
    """Why one label (or content type) is not an object with well-typed fields, or ``None``."""
    if not isinstance(label, dict):
        return f"is a JSON {type(label).__name__}, not an object"
    if "Confidence" in label and not _is_number(label["Confidence"]):
        return f".Confidence is {_short(label['Confidence'])}, not a finite number"
    level = label.get("TaxonomyLevel")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
        return f".TaxonomyLevel is {_short(level)}, not an integer"
    problem = _optional(label, "Name", str) or _optional(label, "ParentName", str)
    return f".{problem}" if problem else None


def _response_problem(response: Any) -> str | None:
    """Why a ``response`` is not a well-typed answer, or ``None``."""
    if not isinstance(response, dict):
        return f"response is a JSON {type(response).__name__}, not an object"
    for field in ("ModerationLabels", "ContentTypes"):
        labels = response.get(field)
        if labels is not None and not isinstance(labels, list):
            return f"response.{field} is a JSON {type(labels).__name__}, not a list"
        for index, label in enumerate(labels or []):
            problem = _one_label_problem(label)
            if problem:
                return f"response.{field}[{index}]{'' if problem[0] == '.' else ' '}{problem}"
    return _optional(response, "ModerationModelVersion", str)


def _error_problem(error: Any) -> str | None:
    """Why an ``error`` is not ``{"code": ..., "message": ...}``, or ``None``."""
    if not isinstance(error, dict):
        return f"error is a JSON {type(error).__name__}, not an object"
    if not isinstance(error.get("code"), str) or not error["code"]:
        return f"error.code is {_short(error.get('code'))}, not a non-empty string"
    problem = _optional(error, "message", str)
    return f"error.{problem}" if problem else None


def _record_problem(record: dict[str, Any]) -> str | None:
    """Why a parsed JSON object is not a well-typed cache record, or ``None``.

    Every field that lookups and labelling read is checked here, once, when the line is read:
    a wrongly typed value would otherwise raise later, at every load or deep in labelling
    (``float("fifty")``), instead of the line being quarantined like a damaged one.
    """
    sha = record.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        return f"sha256 is {_short(sha)}, not 64 lowercase hex digits"
    if "min_confidence" in record and not _is_number(record["min_confidence"]):
        return f"min_confidence is {_short(record['min_confidence'])}, not a finite number"
    fields = (
        ("project_version", str),
        ("source", str),
        ("uri", str),
        ("received_at", str),
        ("request", dict),
    )
    problem = next((p for f, kinds in fields if (p := _optional(record, f, kinds))), None)
    if problem:
        return problem
    if "response" in record:
        return _response_problem(record["response"])
    return _error_problem(record["error"])


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters (a bad line may hold anything)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse(raw: bytes) -> dict[str, Any] | str:
    """A record, or why the line is not one."""
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"not JSON ({exc})"
    except ValueError as exc:
        # Python refuses integers of more than 4,300 digits (int-str conversion limit).
        return f"not a cache record ({exc})"
    except RecursionError:
        return "not a cache record (JSON nested too deeply to parse)"
    if not isinstance(record, dict) or "sha256" not in record:
        return "not a cache record (no sha256)"
    if ("response" in record) == ("error" in record):
        return "must hold exactly one of response/error"
    problem = _record_problem(record)
    return f"not a cache record ({problem})" if problem else record


@dataclass
class _Scan:
    """One cache file, read line by line."""

    records: list[dict[str, Any]]
    good_lines: list[bytes]
    bad_lines: list[tuple[int, bytes, str]]  # (line number, raw bytes, why)
    ends_with_newline: bool


def _scan(path: Path) -> _Scan:
    return scan_bytes(path.read_bytes())


def scan_bytes(data: bytes) -> _Scan:
    """Split a JSON Lines cache file into records and lines that are not records."""
    lines = data.split(b"\n")
    ends = lines[-1] == b""
    if ends:
        lines = lines[:-1]
    scan = _Scan([], [], [], ends or not data)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        parsed = _parse(raw)
        if isinstance(parsed, str):
            scan.bad_lines.append((number, raw, parsed))
        else:
            scan.records.append(parsed)
            scan.good_lines.append(raw)
    return scan


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_open(path: Path) -> IO[bytes]:
    return path.open("ab")


class ResponseCache:
    """Append-only store of Rekognition answers keyed by image and request settings.

    Args:
        path: The writable JSONL file (created on the first append), or ``None`` for a cache
            that only reads ``seed_paths``.
        seed_paths: Read-only JSONL files consulted as well (e.g. the committed demo answers).
        read_only: Never write, even to ``path`` (the offline demo).
        opener: Opens ``path`` for binary appending; tests pass one that fails like a full disk.
        storage_options: fsspec options for seed files on an object store (``s3://``).

    Thread-safe: workers append concurrently; each append is one ``write`` + ``flush`` +
    ``fsync`` under a lock, so records never interleave.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        seed_paths: Iterable[str | os.PathLike[str]] = (),
        *,
        read_only: bool = False,
        opener: Opener = _append_open,
        storage_options: StorageOptions | None = None,
    ) -> None:
        self.storage_options = dict(storage_options or {})
        self.path = Path(path) if path is not None else None
        # Seeds may live on an object store (the demo answers synced to S3).
        self.seed_paths: list[Path | str] = [
            Path(p) if storage.is_local(str(p)) else str(p) for p in seed_paths
        ]
        self.read_only = read_only or self.path is None
        self._opener = opener
        self._lock = threading.Lock()
        self._handle: IO[bytes] | None = None
        self._lock_handle: IO[str] | None = None
        self._good_size = 0
        self._failed: OSError | None = None
        self._spill: Path | None = None
        self.n_spilled = 0
        for seed in self.seed_paths:
            if not storage.exists(str(seed), self.storage_options):
                raise FileNotFoundError(f"seed cache {seed} does not exist")
        self._load()

    # -- reading -------------------------------------------------------------------------

    def _load(self) -> None:
        # key -> list of (min_confidence, record, origin), in file order
        self._answers: dict[tuple[str, str], list[tuple[float, dict[str, Any], str]]] = {}
        self._errors: dict[tuple[str, str], list[tuple[float, dict[str, Any], str]]] = {}
        self.n_records = 0
        self.n_skipped_lines = 0
        for path, data in self._sources():
            scan = scan_bytes(data)
            for number, _, why in scan.bad_lines:
                self.n_skipped_lines += 1
                logger.warning(
                    "%s:%d is %s; skipped (%s)", path, number, why, self._bad_line_fate(path)
                )
            for record in scan.records:
                self._index(record, str(path))

    def _bad_line_fate(self, path: Path | str) -> str:
        """What happens to a damaged line of ``path``, for the warning that reports it."""
        return (
            f"a writer moves it to {self._quarantine_path() if path == self.path else 'quarantine'}"
        )

    def _sources(self) -> Iterator[tuple[Path | str, bytes]]:
        """Every file to read, in order (seeds first, then this cache's own), with its bytes."""
        for seed in self.seed_paths:
            yield seed, storage.read_bytes(str(seed), self.storage_options)
        for own in self._own_files():
            yield own, own.read_bytes()

    def _own_files(self) -> list[Path]:
        if self.path is None:
            return []
        files = [self.path] if self.path.exists() else []
        return files + self._spill_files()

    def _spill_files(self) -> list[Path]:
        assert self.path is not None
        return sorted(self.path.parent.glob(f"{self.path.name}.spill-*.jsonl"))

    def _quarantine_path(self) -> Path | None:
        return (
            None if self.path is None else self.path.with_name(self.path.name + ".quarantine.jsonl")
        )

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
        *,
        accept_higher: bool = False,
    ) -> CachedAnswer | None:
        """Find what the cache knows about a request, if anything.

        An answer at ``min_confidence`` or below wins (the latest such record, labels below
        ``min_confidence`` filtered out). Otherwise, with ``accept_higher``, the answer
        requested at the lowest ``MinConfidence`` above it (``above_requested`` is true: it
        lacks the weaker labels). Otherwise an error record for the same settings is returned
        unless its code is in ``resend_error_codes`` (errors that depend on state that may have
        been fixed since, such as S3 permissions).

        Args:
            sha256: The image's identity.
            min_confidence: The requested ``MinConfidence``.
            project_version: The custom-moderation adapter, or ``None``.
            resend_error_codes: Error codes that do not count as an answer.
            accept_higher: Also return answers requested at a higher ``MinConfidence``.

        Returns:
            The cached answer, or ``None`` when the request must be sent.
        """
        key = _key(sha256, project_version)
        answers = list(enumerate(self._answers.get(key, [])))
        usable = [pair for pair in answers if pair[1][0] <= min_confidence + 1e-9]
        if usable:
            # Closest threshold first (fewest labels to drop), then the latest record.
            _, (threshold, record, origin) = max(usable, key=lambda p: (p[1][0], p[0]))
            return CachedAnswer(
                record,
                _filter_response(record["response"], min_confidence),
                None,
                origin,
                threshold,
            )
        if accept_higher and answers:
            _, (threshold, record, origin) = min(answers, key=lambda p: (p[1][0], -p[0]))
            return CachedAnswer(
                record, dict(record["response"]), None, origin, threshold, above_requested=True
            )
        resend = set(resend_error_codes)
        errors = [
            item
            for item in self._errors.get(key, [])
            if abs(item[0] - min_confidence) < 1e-9
            and item[1]["error"]["code"] not in resend
            and not _format_error_before_conversion(item[1])
        ]
        if errors:
            threshold, record, origin = errors[-1]
            return CachedAnswer(record, None, record["error"]["code"], origin, threshold)
        return None

    # -- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[ResponseCache]:
        """Hold the inter-process write lock (re-entrant); appends are allowed only inside.

        On entry the cache is brought up to date with what other runs wrote, damaged lines are
        quarantined, and spilled answers are merged into the cache file.

        Raises:
            ReadOnlyCacheError: When the cache is read-only.
            CacheLockedError: At once, when another process holds the lock (naming it).
        """
        if self.read_only or self.path is None:
            raise ReadOnlyCacheError(
                "this response cache is read-only (offline mode); refusing to record an answer"
            )
        if self._lock_handle is not None:  # already held by this object: re-entrant
            yield self
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = lock_path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown holder"
            handle.close()
            raise CacheLockedError(
                f"{self.path} is being written by another labelling run ({holder}); wait for "
                "it to finish. The lock is released when that process ends; "
                f"{lock_path} only notes who holds it."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
        handle.flush()
        self._lock_handle = handle
        try:
            self._repair_and_merge()
            self._load()
            yield self
        finally:
            self._close_handle()
            self._lock_handle = None
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    def _repair_and_merge(self) -> None:
        assert self.path is not None
        if self.path.exists():
            scan = _scan(self.path)
            if scan.bad_lines:
                self._quarantine(scan)
            elif not scan.ends_with_newline:
                # The last record is complete and paid for: end its line, keep it.
                with self.path.open("ab") as handle:
                    handle.write(b"\n")
                    handle.flush()
                    os.fsync(handle.fileno())
        known = set(_scan(self.path).good_lines) if self.path.exists() else set()
        for spill in self._spill_files():
            scan = _scan(spill)
            new = [line for line in scan.good_lines if line not in known]
            if new:
                with self.path.open("ab") as handle:
                    handle.write(b"".join(line + b"\n" for line in new))
                    handle.flush()
                    os.fsync(handle.fileno())
                known.update(new)
            if scan.bad_lines:
                self._write_quarantine(spill, scan.bad_lines)
            logger.warning("merged %d spilled answers from %s into %s", len(new), spill, self.path)
            spill.unlink()
        self._good_size = self.path.stat().st_size if self.path.exists() else 0

    def _write_quarantine(self, source: Path, bad: list[tuple[int, bytes, str]]) -> None:
        quarantine = self._quarantine_path()
        assert quarantine is not None
        moved_at = datetime.now(UTC).isoformat(timespec="seconds")
        with quarantine.open("a", encoding="utf-8") as handle:
            for number, raw, why in bad:
                entry = {
                    "source": str(source),
                    "line": number,
                    "why": why,
                    "moved_at": moved_at,
                    "raw": raw.decode("utf-8", errors="backslashreplace"),
                }
                handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _quarantine(self, scan: _Scan) -> None:
        assert self.path is not None
        self._write_quarantine(self.path, scan.bad_lines)
        for number, _, why in scan.bad_lines:
            logger.warning(
                "%s:%d is %s; moved to %s", self.path, number, why, self._quarantine_path()
            )
        # Rewrite without the bad lines, atomically: a crash leaves the old or the new file.
        tmp = self.path.with_name(self.path.name + ".rewrite")
        try:
            with tmp.open("wb") as handle:
                handle.write(b"".join(line + b"\n" for line in scan.good_lines))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CacheCorruptError(
                f"{self.path}: could not rewrite the cache without its {len(scan.bad_lines)} "
                f"damaged lines ({exc}); they are copied to {self._quarantine_path()}"
            ) from exc

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (flushed and fsync-ed before returning).

        Args:
            record: A record with ``sha256`` and exactly one of ``response`` / ``error``.
                ``received_at`` is added when missing.

        Raises:
            ReadOnlyCacheError: When the cache is read-only or the write lock is not held.
            CacheWriteError: When the write failed: the file is cut back to its last complete
                record and the answer is spilled to a side file that the next load merges.
        """
        if self.read_only or self.path is None or self._lock_handle is None:
            raise ReadOnlyCacheError(
                "refusing to record an answer: the cache is read-only or its write lock is not "
                "held (use `with cache.exclusive():`)"
            )
        record = {"received_at": datetime.now(UTC).isoformat(timespec="seconds"), **record}
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        with self._lock:
            if self._failed is None:
                try:
                    self._write(line)
                except OSError as exc:
                    self._failed = exc
                    self._cut_back()
                else:
                    self._index(record, str(self.path))
                    return
            self._spill_line(line)
            self._index(record, str(self._spill or "memory"))
            raise CacheWriteError(
                self._failed.errno or errno.EIO,
                f"writing to {self.path} failed ({self._failed}); this answer and any later "
                f"one are kept in {self._spill or 'the log'} and merged by the next run",
            )

    def _write(self, line: bytes) -> None:
        if self._handle is None:
            assert self.path is not None
            self._handle = self._opener(self.path)
        self._handle.write(line)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._good_size += len(line)

    def _cut_back(self) -> None:
        # A failed write may have left part of a line; the next append would glue onto it.
        assert self.path is not None
        self._close_handle()
        try:
            with self.path.open("r+b") as handle:
                handle.truncate(self._good_size)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            # The fragment then stays; the next writer quarantines it.
            logger.error("could not cut %s back to its last complete record: %s", self.path, exc)

    def _spill_line(self, line: bytes) -> None:
        assert self.path is not None
        if self._spill is None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            self._spill = self.path.with_name(f"{self.path.name}.spill-{os.getpid()}-{stamp}.jsonl")
        try:
            with self._spill.open("ab") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            self.n_spilled += 1
            logger.error("answer spilled to %s (the cache file cannot be written)", self._spill)
        except OSError as exc:
            # Last resort: the answer goes to the log, where a person can recover it.
            logger.error(
                "could not spill an answer either (%s); the answer is: %s",
                exc,
                line.decode().strip(),
            )

    def _close_handle(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError, ValueError):
                self._handle.close()
            self._handle = None

    def close(self) -> None:
        """Close the writable file (appends reopen it)."""
        with self._lock:
            self._close_handle()

    def __repr__(self) -> str:
        return (
            f"ResponseCache(path={self.path}, seeds={[str(p) for p in self.seed_paths]}, "
            f"read_only={self.read_only}, records={self.n_records})"
        )
