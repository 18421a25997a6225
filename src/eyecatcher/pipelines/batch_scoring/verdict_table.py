"""The verdict table as a partitioned Parquet dataset: a folder of part files, local or ``s3://``.

``pd.read_parquet(folder)`` (or any Parquet reader: Spark, DuckDB, Athena) reads the part
files as one table. A save writes the new parts into a ``_staging-<token>`` folder first, which
Parquet readers skip (their names start with ``_``), and swaps them in only once all are
written: a run that dies while writing leaves the previous table whole.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from kedro.io import AbstractDataset, DatasetError

from eyecatcher.storage import dataset_filesystem

logger = logging.getLogger(__name__)

#: Rows per part file: big enough for efficient Parquet, small enough to write in bounded memory.
DEFAULT_ROWS_PER_PART = 100_000
_PART = "part-{index:05d}.parquet"


def part_names(n_rows: int, rows_per_part: int) -> list[str]:
    """The part-file names of a table of ``n_rows`` (one, empty, for an empty table)."""
    n_parts = max(1, -(-n_rows // rows_per_part))
    return [_PART.format(index=index) for index in range(n_parts)]


class VerdictTableDataset(AbstractDataset[pd.DataFrame, pd.DataFrame | None]):
    """A pandas table saved as ``part-00000.parquet``, ``part-00001.parquet``… in one folder.

    Readers downstream (the retrain check) declare the same folder with ``optional: true``:
    no table yet then loads as ``None``, with ``missing_hint`` logged, instead of an error.

    Args:
        filepath: The folder: a local path or an fsspec URL (``s3://bucket/verdicts``).
        fs_args: fsspec filesystem arguments, usually ``${globals:storage_options}``.
        credentials: Secrets from ``credentials.yml``; without them, the AWS default chain.
        rows_per_part: Rows per part file.
        load_args: Passed to ``pyarrow.parquet.ParquetDataset.read`` (e.g. ``columns``).
        optional: Load ``None`` when there is no table yet, rather than raising.
        missing_hint: What produces the table, said when an optional one is missing.
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
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if int(rows_per_part) < 1:
            raise ValueError(f"rows_per_part must be >= 1, got {rows_per_part}")
        self.metadata = metadata
        self._path = str(filepath).rstrip("/")
        self._fs_args = dict(fs_args or {})
        self._credentials = dict(credentials or {})
        self._rows_per_part = int(rows_per_part)
        self._load_args = dict(load_args or {})
        self._optional = bool(optional)
        self._hint = missing_hint

    def _filesystem(self) -> tuple[Any, str]:
        return dataset_filesystem(self._path, self._credentials, self._fs_args)

    def _parts(self) -> tuple[Any, list[str]]:
        fs, root = self._filesystem()
        if not fs.isdir(root):
            return fs, []
        names = fs.ls(root, detail=False)
        return fs, sorted(
            p for p in names if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet")
        )

    def _load(self) -> pd.DataFrame | None:
        fs, parts = self._parts()
        if not parts and self._optional:
            logger.warning("No verdict table at %s: %s", self._path, self._hint or "skipped")
            return None
        if not parts:
            raise DatasetError(f"no verdict table at {self._path} (no part-*.parquet files)")
        # The parts in name order: the rows come back in the order they were saved.
        table = pq.ParquetDataset(parts, filesystem=fs).read(**self._load_args)
        return table.to_pandas()

    def _save(self, data: pd.DataFrame) -> None:
        fs, root = self._filesystem()
        staging = f"{root}/_staging-{uuid.uuid4().hex[:12]}"
        fs.makedirs(staging, exist_ok=True)
        # One schema for every part: a part whose errors are all null must not type the column
        # differently from one with errors, or the parts no longer read as one table.
        schema = pa.Schema.from_pandas(data, preserve_index=False)
        names = part_names(len(data), self._rows_per_part)
        for index, name in enumerate(names):
            chunk = data.iloc[index * self._rows_per_part : (index + 1) * self._rows_per_part]
            with fs.open(f"{staging}/{name}", "wb") as handle:
                pq.write_table(
                    pa.Table.from_pandas(chunk, schema=schema, preserve_index=False), handle
                )
        _, old_parts = self._parts()
        # Each new part replaces its namesake; only then do the old surplus parts go, so a
        # reader never finds the folder empty.
        for name in names:
            fs.mv(f"{staging}/{name}", f"{root}/{name}")
        kept = {f"{root}/{name}" for name in names}
        for old in old_parts:
            if old not in kept:
                fs.rm(old)
        if fs.exists(staging):  # object stores have no empty folders left to remove
            fs.rm(staging, recursive=True)
        logger.info("Verdict table: %d rows in %d part files at %s", len(data), len(names), root)

    def _exists(self) -> bool:
        return bool(self._parts()[1])

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._path, "rows_per_part": self._rows_per_part}
