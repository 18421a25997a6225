"""The verdict table as partitioned Parquet: part files that read back as one table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DatasetError

from eyecatcher.pipelines.batch_scoring.verdict_table import VerdictTableDataset, part_names


def _verdicts(n: int) -> pd.DataFrame:
    """``n`` verdict-like rows; only the last ones carry an error (null-only parts)."""
    table = pd.DataFrame(
        {
            "path": [f"images/{i:04d}.jpg" for i in range(n)],
            "class": ["safe" if i % 3 else "explicit" for i in range(n)],
            "unsafe_score": [i / max(1, n) for i in range(n)],
            "error": [None if i < n - 2 else "truncated: cut" for i in range(n)],
        }
    )
    table["scored_at"] = pd.Timestamp("2026-12-02T10:00:00", tz="UTC")
    return table


def _parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_part_names_cover_every_row() -> None:
    assert part_names(0, 10) == ["part-00000.parquet"]
    assert part_names(10, 10) == ["part-00000.parquet"]
    assert part_names(11, 10) == ["part-00000.parquet", "part-00001.parquet"]


def test_a_table_saved_in_parts_reads_back_whole_by_the_dataset_and_by_pandas(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "batch_verdicts"
    dataset = VerdictTableDataset(str(folder), rows_per_part=4)
    table = _verdicts(23)
    dataset.save(table)
    assert _parts(folder) == [f"part-{i:05d}.parquet" for i in range(6)]
    pd.testing.assert_frame_equal(dataset.load(), table)  # same rows, same order
    pd.testing.assert_frame_equal(pd.read_parquet(folder), table)
    assert dataset.exists()


def test_a_smaller_table_replaces_every_old_part(tmp_path: Path) -> None:
    folder = tmp_path / "batch_verdicts"
    dataset = VerdictTableDataset(str(folder), rows_per_part=4)
    dataset.save(_verdicts(23))
    dataset.save(_verdicts(5))
    assert _parts(folder) == ["part-00000.parquet", "part-00001.parquet"]
    assert len(pd.read_parquet(folder)) == 5
    dataset.save(_verdicts(0))
    assert _parts(folder) == ["part-00000.parquet"]
    assert list(dataset.load().columns) == list(_verdicts(0).columns)


def test_an_unfinished_save_is_invisible_to_readers(tmp_path: Path) -> None:
    """Parts are staged in a ``_staging-*`` folder: a run that dies there leaves the old table."""
    folder = tmp_path / "batch_verdicts"
    dataset = VerdictTableDataset(str(folder), rows_per_part=4)
    dataset.save(_verdicts(6))
    staging = folder / "_staging-dead"
    staging.mkdir()
    _verdicts(9).to_parquet(staging / "part-00000.parquet")
    assert len(dataset.load()) == len(pd.read_parquet(folder)) == 6


def test_no_table_yet_is_a_clear_error(tmp_path: Path) -> None:
    dataset = VerdictTableDataset(str(tmp_path / "none"))
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="no verdict table at"):
        dataset.load()
    with pytest.raises(ValueError, match="rows_per_part must be >= 1"):
        VerdictTableDataset(str(tmp_path), rows_per_part=0)


def test_the_table_lives_on_s3_with_the_configured_storage_options(moto_s3: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1").create_bucket(
        Bucket="verdicts"
    )
    options = {"client_kwargs": {"endpoint_url": moto_s3}}
    dataset = VerdictTableDataset("s3://verdicts/batch", fs_args=options, rows_per_part=5)
    table = _verdicts(12)
    dataset.save(table)
    pd.testing.assert_frame_equal(dataset.load(), table)
    pd.testing.assert_frame_equal(
        pd.read_parquet("s3://verdicts/batch", storage_options=options), table
    )
    dataset.save(_verdicts(3))
    listed = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1").list_objects_v2(
        Bucket="verdicts"
    )
    assert sorted(o["Key"] for o in listed["Contents"]) == ["batch/part-00000.parquet"]


def test_an_optional_reader_loads_none_until_a_table_exists(tmp_path: Path) -> None:
    """How the retrain check declares the table: no batch scored yet is not an error."""
    folder = tmp_path / "batch_verdicts"
    reader = VerdictTableDataset(str(folder), optional=True, missing_hint="score a batch first")
    assert reader.load() is None
    table = _verdicts(9)
    VerdictTableDataset(str(folder), rows_per_part=4).save(table)
    pd.testing.assert_frame_equal(reader.load(), table)
