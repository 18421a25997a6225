"""The verdict table: an append-only history of Parquet parts, one folder per scoring day.

Layout of the table folder (a local path or an ``s3://`` prefix)::

    _manifest.json                     the committed version: its number and every part it holds
    2026-12-06/part-00000001-00000.parquet
    2026-12-07/part-00000002-00000.parquet
    _pending/<token>/...               parts of a save not yet committed (or of one that died)
    _staging/<model>/<version>/*.parquet   batches a running job has finished (resumable jobs)
    _lock                              held by the writer committing a version

A save **appends**: the new rows (already-committed ``(sha256, model_name, model_version)`` keys
are dropped, so two jobs scoring the same images add them once) are written under
``_pending/``, moved into their day folder, and made visible in one step by replacing
``_manifest.json`` (``os.replace`` locally, one ``PUT`` on S3). Readers read only the parts
the manifest lists, so a save that dies anywhere before that step leaves the previous version
whole and readable. Parts are never rewritten or deleted once listed, so a reader holding an
older manifest still finds every part it names.

Two writers are serialised by the ``_lock`` file, created exclusively (``O_CREAT | O_EXCL``
locally; ``If-None-Match: *`` on S3, which AWS S3 honours since 2024 — other S3-compatible
stores may not, see docs/feedback-loop.md). A lock older than ``stale_lock_s`` (a writer that
was killed) is broken with a warning.

A folder written before the manifest existed (``part-*.parquet`` at its root) is read as
version 0 and kept as the first parts of the history.

The batch-scoring job reads and stages through a handle on the same folder:
:mod:`eyecatcher.datasets.verdict_history_dataset`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from kedro.io import AbstractDataset, DatasetError

from eyecatcher.storage import dataset_filesystem, full_uri, write_atomic

logger = logging.getLogger(__name__)

#: Rows per part file: big enough for efficient Parquet, small enough to write in bounded memory.
DEFAULT_ROWS_PER_PART = 100_000
#: The columns that identify a verdict: the same image bytes scored by the same model version.
KEY_COLUMNS = ("sha256", "model_name", "model_version")
#: The partition column, the UTC date of ``scored_at`` (``YYYY-MM-DD``).
DAY_COLUMN = "scored_day"
MANIFEST = "_manifest.json"
LOCK = "_lock"
PENDING = "_pending"
STAGING = "_staging"
_PART = "part-{version:08d}-{index:05d}.parquet"
_LEGACY_PART = re.compile(r"part-\d{5}\.parquet$")


def part_names(n_rows: int, rows_per_part: int, version: int = 1) -> list[str]:
    """The part-file names of ``n_rows`` rows of one day in version ``version``."""
    n_parts = max(1, -(-n_rows // rows_per_part))
    return [_PART.format(version=version, index=index) for index in range(n_parts)]


def scored_day(scored_at: pd.Series) -> pd.Series:
    """The UTC date (``YYYY-MM-DD``) of each ``scored_at`` time (naive times are UTC)."""
    stamps = pd.to_datetime(scored_at, utc=True)
    return stamps.dt.strftime("%Y-%m-%d")


def _key_strings(frame: pd.DataFrame) -> pd.Series:
    """One string per row naming its key; ``None`` where the row has no sha256 (unread file)."""
    keys = frame["sha256"].astype(object).where(frame["sha256"].notna(), None)
    joined = keys.astype(str) + "\0" + frame["model_name"].astype(str)
    joined = joined + "\0" + frame["model_version"].astype(str)
    return joined.where(keys.notna(), None)


class TableFolder:
    """The files of one verdict-table folder: manifest, parts, lock and staged batches.

    Args:
        fs: The fsspec filesystem.
        root: The folder's path on ``fs``.
        options: The storage options ``fs`` was built with (for atomic writes).
    """

    def __init__(self, fs: Any, root: str, options: Mapping[str, Any]) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.options = dict(options)

    def path(self, *parts: str) -> str:
        """A path under the folder."""
        return "/".join([self.root, *parts])

    @property
    def local(self) -> bool:
        """Whether the folder is on local disk (the lock then uses ``O_EXCL``)."""
        return isinstance(self.fs, LocalFileSystem)

    # -- reading ---------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The committed version: ``{"version": n, "parts": [...]}`` (version 0 when none)."""
        try:
            with self.fs.open(self.path(MANIFEST), "rb") as handle:
                return json.loads(handle.read())
        except FileNotFoundError:
            pass
        # A table written before manifests: its root part files are version 0.
        legacy = []
        if self.fs.isdir(self.root):
            legacy = sorted(
                p.rsplit("/", 1)[-1]
                for p in self.fs.ls(self.root, detail=False)
                if _LEGACY_PART.search(p.rsplit("/", 1)[-1])
            )
        return {"version": 0, "parts": [{"path": name} for name in legacy]}

    def read(self, parts: list[str], columns: list[str] | None = None) -> pa.Table | None:
        """The listed parts as one table (schemas unified: a shadow run adds columns)."""
        tables = []
        for relative in parts:
            with self.fs.open(self.path(relative), "rb") as handle:
                table = pq.read_table(handle)
            if columns is not None:
                table = table.select([c for c in columns if c in table.column_names])
            tables.append(table)
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")

    def committed_keys(self, parts: list[str]) -> set[str]:
        """The verdict keys already in ``parts``."""
        table = self.read(parts, columns=list(KEY_COLUMNS))
        if table is None or not set(KEY_COLUMNS) <= set(table.column_names):
            return set()
        return {k for k in _key_strings(table.to_pandas()) if k is not None}

    # -- the lock ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, timeout_s: float, stale_s: float) -> Iterator[None]:
        """Hold the folder's lock for a block: exclusive create, retried until ``timeout_s``.

        Raises:
            TimeoutError: If another writer held it for ``timeout_s`` (and it is not stale).
        """
        lock = self.path(LOCK)
        token = f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex}"
        self.fs.makedirs(self.root, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        pause = 0.05
        while not self._create_exclusive(lock, token.encode()):
            self._break_if_stale(lock, stale_s)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the verdict table {self.root} is locked by another writer ({lock}) for "
                    f"more than {timeout_s:g} s"
                )
            time.sleep(pause)
            pause = min(1.0, pause * 2)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                with self.fs.open(lock, "rb") as handle:
                    holder = handle.read().decode(errors="replace")
                # Never remove a lock another writer took after ours was broken as stale.
                if holder == token:
                    self.fs.rm_file(lock)

    def _create_exclusive(self, path: str, content: bytes) -> bool:
        if self.local:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            return True
        try:
            # s3fs sends If-None-Match: * for mode "xb": the PUT fails if the key exists.
            with self.fs.open(path, "xb") as handle:
                handle.write(content)
        except FileExistsError:
            return False
        return True

    def _break_if_stale(self, lock: str, stale_s: float) -> None:
        try:
            info = self.fs.info(lock)
        except FileNotFoundError:
            return
        modified = info.get("mtime") or info.get("LastModified") or info.get("created")
        if hasattr(modified, "timestamp"):
            modified = modified.timestamp()
        if modified is None or time.time() - float(modified) < stale_s:
            return
        logger.warning(
            "Verdict table %s: breaking a lock older than %g s (a writer that was killed)",
            self.root,
            stale_s,
        )
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(lock)

    # -- staged batches of running jobs ---------------------------------------------------------
    def staging_folder(self, model_name: str, model_version: str) -> str:
        """Where finished batches of ``model_name`` version ``model_version`` wait."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(model_name))
        return self.path(STAGING, safe, f"v{model_version}")

    def staged_files(self, model_name: str, model_version: str) -> list[str]:
        """The staged batch files of a model version, sorted."""
        folder = self.staging_folder(model_name, model_version)
        if not self.fs.isdir(folder):
            return []
        return sorted(p for p in self.fs.ls(folder, detail=False) if str(p).endswith(".parquet"))


class VerdictTableDataset(AbstractDataset[pd.DataFrame, pd.DataFrame | None]):
    """The verdict history: saving appends a version, loading reads the committed one.

    Readers downstream (the retrain check, the online metrics) declare the same folder with
    ``optional: true``: no table yet then loads as ``None``, with ``missing_hint`` logged.

    Examples:
        ```yaml
        batch_verdicts:
          type: eyecatcher.datasets.verdict_table_dataset.VerdictTableDataset
          filepath: ${globals:data_root}/07_model_output/batch_verdicts
          fs_args: ${globals:storage_options}
          rows_per_part: 100000
        ```

    Args:
        filepath: The folder: a local path or an fsspec URL (``s3://bucket/verdicts``).
        fs_args: fsspec filesystem arguments, usually ``${globals:storage_options}``.
        credentials: Secrets from ``credentials.yml``; without them, the AWS default chain.
        rows_per_part: Rows per part file.
        load_args: ``columns``: read only these columns.
        optional: Load ``None`` when there is no table yet, rather than raising.
        missing_hint: What produces the table, said when an optional one is missing.
        lock_timeout_s: How long a save waits for another writer's lock.
        stale_lock_s: Age after which a lock is taken to be a killed writer's, and broken.
        metadata: Free-form metadata for Kedro plugins (kedro-viz layers); not used.
    """

    def __init__(
        self,
        filepath: str,
        *,
        fs_args: Mapping[str, Any] | None = None,
        credentials: Mapping[str, Any] | None = None,
        rows_per_part: int = DEFAULT_ROWS_PER_PART,
        load_args: Mapping[str, Any] | None = None,
        optional: bool = False,
        missing_hint: str = "",
        lock_timeout_s: float = 300.0,
        stale_lock_s: float = 3600.0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if int(rows_per_part) < 1:
            raise ValueError(f"rows_per_part must be >= 1, got {rows_per_part}")
        unknown = sorted(set(load_args or {}) - {"columns"})
        if unknown:
            raise ValueError(f"unknown load_args {unknown} for the verdict table; known: columns")
        self.metadata = metadata
        self._path = str(filepath).rstrip("/")
        self._fs_args = dict(fs_args or {})
        self._credentials = dict(credentials or {})
        self._rows_per_part = int(rows_per_part)
        self._load_args = dict(load_args or {})
        self._optional = bool(optional)
        self._hint = missing_hint
        self._lock_timeout_s = float(lock_timeout_s)
        self._stale_lock_s = float(stale_lock_s)

    def _folder(self) -> TableFolder:
        fs, root = dataset_filesystem(self._path, self._credentials, self._fs_args)
        return TableFolder(fs, root, {**self._fs_args, **self._credentials})

    def load(self) -> pd.DataFrame | None:
        """The committed version's rows (``None`` for an optional table that does not exist)."""
        folder = self._folder()
        parts = [part["path"] for part in folder.manifest()["parts"]]
        if not parts and self._optional:
            logger.warning("No verdict table at %s: %s", self._path, self._hint or "skipped")
            return None
        if not parts:
            raise DatasetError(f"no verdict table at {self._path} (no committed parts)")
        # The parts in the manifest's order: the rows come back in the order they were saved.
        table = folder.read(parts, columns=self._load_args.get("columns"))
        return table.to_pandas()

    def save(self, data: pd.DataFrame) -> None:
        """Append ``data`` as a new committed version (keys already committed are dropped)."""
        if "scored_at" not in data.columns and DAY_COLUMN not in data.columns:
            raise DatasetError("a verdict table needs a scored_at column (to partition by day)")
        data = data.reset_index(drop=True)
        if DAY_COLUMN not in data.columns:
            data[DAY_COLUMN] = scored_day(data["scored_at"])
        folder = self._folder()
        token = uuid.uuid4().hex[:12]
        pending = folder.path(PENDING, token)
        try:
            with folder.locked(self._lock_timeout_s, self._stale_lock_s):
                self._commit(folder, data, pending)
        finally:
            if folder.fs.exists(pending):  # object stores have no empty folders left
                folder.fs.rm(pending, recursive=True)

    def _commit(self, folder: TableFolder, data: pd.DataFrame, pending: str) -> None:
        manifest = folder.manifest()
        listed = [part["path"] for part in manifest["parts"]]
        if set(KEY_COLUMNS) <= set(data.columns) and len(data):
            # Rows another writer committed meanwhile (same image, same model version) are
            # theirs already: appending them again would count the image twice.
            committed = folder.committed_keys(listed)
            keys = _key_strings(data)
            fresh = ~keys.isin(committed) | keys.isna()
            if (~fresh).any():
                logger.warning(
                    "Verdict table %s: %d rows already committed (same sha256, model version) "
                    "are not appended again",
                    self._path,
                    int((~fresh).sum()),
                )
            data = data[fresh.to_numpy()].reset_index(drop=True)
        if not len(data):
            # Nothing new (a rerun of the same images and model version): no new version.
            logger.info(
                "Verdict table %s: nothing to append (version %s stays)",
                self._path,
                manifest["version"],
            )
            return
        version = int(manifest["version"]) + 1
        new_parts: list[dict[str, Any]] = []
        if len(data):
            # One schema for every part: a part whose errors are all null must not type the
            # column differently from one with errors, or the parts no longer read as one table.
            schema = pa.Schema.from_pandas(data, preserve_index=False)
            for day, rows in data.groupby(DAY_COLUMN, sort=True):
                names = part_names(len(rows), self._rows_per_part, version)
                for index, name in enumerate(names):
                    chunk = rows.iloc[
                        index * self._rows_per_part : (index + 1) * self._rows_per_part
                    ]
                    self._write_part(folder, f"{pending}/{day}/{name}", chunk, schema)
                    new_parts.append({"path": f"{day}/{name}", "rows": len(chunk), "day": day})
            for part in new_parts:
                folder.fs.makedirs(folder.path(part["day"]), exist_ok=True)
                folder.fs.mv(f"{pending}/{part['path']}", folder.path(part["path"]))
        new_manifest = {
            "version": version,
            "committed_at": pd.Timestamp.now(tz="UTC").isoformat(),
            "parts": [*manifest["parts"], *new_parts],
        }
        # The single step that makes the version visible.
        write_atomic(
            full_uri(folder.fs, folder.path(MANIFEST)),
            json.dumps(new_manifest, indent=1).encode(),
            folder.options,
        )
        self._remove_orphans(folder, {part["path"] for part in new_manifest["parts"]})
        self._clear_staged(folder, data)
        logger.info(
            "Verdict table: version %d, %d rows appended in %d parts at %s (%d parts in all)",
            version,
            len(data),
            len(new_parts),
            self._path,
            len(new_manifest["parts"]),
        )

    @staticmethod
    def _write_part(folder: TableFolder, path: str, chunk: pd.DataFrame, schema: Any) -> None:
        folder.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with folder.fs.open(path, "wb") as handle:
            pq.write_table(pa.Table.from_pandas(chunk, schema=schema, preserve_index=False), handle)

    def _remove_orphans(self, folder: TableFolder, listed: set[str]) -> None:
        """Delete day-folder parts no manifest lists: moved in by a save that died before
        its manifest. Only the lock holder moves parts in, so none of these is in flight."""
        for day in folder.fs.ls(folder.root, detail=False):
            name = day.rstrip("/").rsplit("/", 1)[-1]
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", name) or not folder.fs.isdir(day):
                continue
            for part in folder.fs.ls(day, detail=False):
                relative = f"{name}/{part.rsplit('/', 1)[-1]}"
                if relative not in listed:
                    logger.warning("Verdict table: removing %s (an unfinished save's)", relative)
                    folder.fs.rm_file(part)

    @staticmethod
    def _clear_staged(folder: TableFolder, data: pd.DataFrame) -> None:
        """Remove staged batches whose rows are all in the table now (their job is done)."""
        if not set(KEY_COLUMNS) <= set(data.columns) or not len(data):
            return
        versions = data[["model_name", "model_version"]].drop_duplicates()
        committed: set[str] | None = None
        for name, version in versions.itertuples(index=False):
            files = folder.staged_files(str(name), str(version))
            if not files:
                continue
            if committed is None:
                committed = folder.committed_keys(
                    [part["path"] for part in folder.manifest()["parts"]]
                )
            for path in files:
                with folder.fs.open(path, "rb") as handle:
                    staged = pq.read_table(handle).to_pandas()
                keys = _key_strings(staged)
                # Rows without sha256 (unreadable files) are rescored by the next run anyway.
                if keys.dropna().isin(committed).all():
                    folder.fs.rm_file(path)

    def _exists(self) -> bool:
        return bool(self._folder().manifest()["parts"])

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._path, "rows_per_part": self._rows_per_part}
