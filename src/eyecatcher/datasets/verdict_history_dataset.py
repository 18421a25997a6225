"""A handle on a verdict table's folder for the batch-scoring job that appends to it.

Before and while it scores, a job asks what its model version already scored (skipped, not
scored again) and stages each finished batch under ``_staging/`` so a job that dies resumes;
the table's layout, manifest and lock are :mod:`eyecatcher.datasets.verdict_table_dataset`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from kedro.io import AbstractDataset, DatasetError

from eyecatcher.datasets.verdict_table_dataset import KEY_COLUMNS, TableFolder
from eyecatcher.storage import dataset_filesystem, full_uri, write_atomic


class VerdictHistory:
    """What a batch-scoring job needs of the table before and while it scores.

    * :meth:`scored`: the images a model version has already scored (committed);
    * :meth:`staged`: the verdicts an earlier, interrupted job of that version finished;
    * :meth:`stage`: persist one finished batch now, so a job killed later keeps it.

    Loaded from the catalog (``batch_verdicts_history``), the folder of ``batch_verdicts``.
    """

    def __init__(self, folder: TableFolder) -> None:
        self._folder = folder

    @property
    def location(self) -> str:
        """The table folder."""
        return full_uri(self._folder.fs, self._folder.root)

    def scored(self, model_name: str, model_version: str) -> set[str]:
        """The sha256 of every image ``model_name`` ``model_version`` has a committed row for."""
        parts = [part["path"] for part in self._folder.manifest()["parts"]]
        table = self._folder.read(parts, columns=list(KEY_COLUMNS))
        if table is None or not set(KEY_COLUMNS) <= set(table.column_names):
            return set()
        frame = table.to_pandas()
        own = (frame["model_name"].astype(str) == str(model_name)) & (
            frame["model_version"].astype(str) == str(model_version)
        )
        return set(frame.loc[own, "sha256"].dropna().astype(str))

    def staged(self, model_name: str, model_version: str) -> pd.DataFrame | None:
        """The rows of every batch staged for this model version (``None`` if there are none)."""
        frames = []
        for path in self._folder.staged_files(model_name, model_version):
            with self._folder.fs.open(path, "rb") as handle:
                frames.append(pq.read_table(handle).to_pandas())
        if not frames:
            return None
        return pd.concat(frames, ignore_index=True)

    def stage(self, model_name: str, model_version: str, rows: pd.DataFrame) -> None:
        """Persist one finished batch (one file, written whole or not at all)."""
        if not len(rows):
            return
        folder = self._folder.staging_folder(model_name, model_version)
        self._folder.fs.makedirs(folder, exist_ok=True)
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), sink)
        write_atomic(
            full_uri(self._folder.fs, f"{folder}/batch-{uuid.uuid4().hex}.parquet"),
            sink.getvalue().to_pybytes(),
            self._folder.options,
        )


class VerdictHistoryDataset(AbstractDataset[VerdictHistory, None]):
    """Catalog entry whose load is a :class:`VerdictHistory` handle on a verdict-table folder.

    The job reads what is scored and stages batches while it runs, so the node gets a handle,
    as the feature cache's dataset gives one; the table itself is saved by
    :class:`~eyecatcher.datasets.verdict_table_dataset.VerdictTableDataset`.

    Examples:
        ```yaml
        batch_verdicts_history:
          type: eyecatcher.datasets.verdict_history_dataset.VerdictHistoryDataset
          filepath: ${globals:data_root}/07_model_output/batch_verdicts
          fs_args: ${globals:storage_options}
        ```

    Args:
        filepath: The verdict table's folder (the ``filepath`` of ``batch_verdicts``).
        fs_args: fsspec filesystem arguments.
        credentials: Secrets from ``credentials.yml``.
        metadata: Free-form metadata for Kedro plugins; not used.
    """

    def __init__(
        self,
        filepath: str,
        *,
        fs_args: Mapping[str, Any] | None = None,
        credentials: Mapping[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.metadata = metadata
        self._path = str(filepath).rstrip("/")
        self._fs_args = dict(fs_args or {})
        self._credentials = dict(credentials or {})

    def load(self) -> VerdictHistory:
        """A handle on the folder (nothing is read until the job asks)."""
        fs, root = dataset_filesystem(self._path, self._credentials, self._fs_args)
        return VerdictHistory(TableFolder(fs, root, {**self._fs_args, **self._credentials}))

    def save(self, data: None) -> None:
        """Refuse: the table is written by saving ``batch_verdicts``."""
        raise DatasetError("the verdict history is written by saving batch_verdicts")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._path}
