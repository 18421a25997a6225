"""The verdict table: an append-only history by scoring day, committed atomically, two writers."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DatasetError

from eyecatcher.datasets.verdict_history_dataset import VerdictHistoryDataset
from eyecatcher.datasets.verdict_table_dataset import VerdictTableDataset, part_names


def _verdicts(n: int, day: str = "2026-12-02", start: int = 0, version: str = "1") -> pd.DataFrame:
    """``n`` verdict-like rows scored on ``day``; only the last ones carry an error."""
    table = pd.DataFrame(
        {
            "path": [f"images/{i:04d}.jpg" for i in range(start, start + n)],
            "sha256": [f"{i:064x}" for i in range(start, start + n)],
            "class": ["safe" if i % 3 else "explicit" for i in range(n)],
            "unsafe_score": [i / max(1, n) for i in range(n)],
            "model_name": ["eyecatcher-moderation"] * n,
            "model_version": [version] * n,
            "error": [None if i < n - 2 else "truncated: cut" for i in range(n)],
        }
    )
    table["scored_at"] = pd.Timestamp(f"{day}T10:00:00", tz="UTC")
    return table


def _with_day(table: pd.DataFrame, day: str) -> pd.DataFrame:
    return table.assign(scored_day=day)


def _files(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*.parquet") if "_" not in p.parts[-2][:1]
    )


def test_part_names_cover_every_row() -> None:
    assert part_names(0, 10) == ["part-00000001-00000.parquet"]
    assert part_names(11, 10, version=3) == [
        "part-00000003-00000.parquet",
        "part-00000003-00001.parquet",
    ]


def test_saves_append_by_scoring_day_and_read_back_as_one_table(tmp_path: Path) -> None:
    """Two runs on two days: one table with both days, each day in its own folder."""
    folder = tmp_path / "batch_verdicts"
    dataset = VerdictTableDataset(str(folder), rows_per_part=4)
    first, second = _verdicts(9, "2026-12-06"), _verdicts(5, "2026-12-07", start=100)
    dataset.save(first)
    dataset.save(second)
    loaded = dataset.load()
    expected = pd.concat(
        [_with_day(first, "2026-12-06"), _with_day(second, "2026-12-07")], ignore_index=True
    )
    pd.testing.assert_frame_equal(loaded, expected)
    assert loaded.groupby("scored_day").size().to_dict() == {"2026-12-06": 9, "2026-12-07": 5}
    assert _files(folder) == [
        *(f"2026-12-06/part-00000001-0000{i}.parquet" for i in range(3)),
        *(f"2026-12-07/part-00000002-0000{i}.parquet" for i in range(2)),
    ]
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert manifest["version"] == 2 and len(manifest["parts"]) == 5
    # Any Parquet reader finds the same rows (files and folders starting with _ are skipped).
    assert len(pd.read_parquet(folder)) == 14
    assert dataset.exists()


def test_rows_already_committed_for_the_same_model_version_are_not_appended_twice(
    tmp_path: Path,
) -> None:
    dataset = VerdictTableDataset(str(tmp_path / "t"), rows_per_part=4)
    dataset.save(_verdicts(6))
    dataset.save(_verdicts(8, "2026-12-03"))  # 6 of them are the same images and version
    dataset.save(_verdicts(3, "2026-12-03", version="2"))  # another version: all new
    loaded = dataset.load()
    assert len(loaded) == 6 + 2 + 3
    assert loaded.groupby(["model_version", "scored_day"]).size().to_dict() == {
        ("1", "2026-12-02"): 6,
        ("1", "2026-12-03"): 2,
        ("2", "2026-12-03"): 3,
    }


def test_a_save_that_dies_half_way_leaves_the_previous_version_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "batch_verdicts"
    dataset = VerdictTableDataset(str(folder), rows_per_part=2)
    dataset.save(_verdicts(5))
    before = dataset.load()
    written = []
    real_write = VerdictTableDataset._write_part

    def dies_after_two_parts(folder_, path, chunk, schema):
        if len(written) == 2:
            raise OSError("disk full (simulated) after two parts")
        written.append(path)
        real_write(folder_, path, chunk, schema)

    monkeypatch.setattr(VerdictTableDataset, "_write_part", staticmethod(dies_after_two_parts))
    with pytest.raises(DatasetError, match="disk full"):
        dataset.save(_verdicts(9, "2026-12-03", start=50))
    assert len(written) == 2  # the save did write parts before it died
    monkeypatch.undo()
    pd.testing.assert_frame_equal(dataset.load(), before)
    assert len(pd.read_parquet(folder)) == 5  # nothing of the dead save is visible
    assert not (folder / "_lock").exists() and not list((folder / "_pending").glob("*"))
    # The next save works and the table has both.
    dataset.save(_verdicts(9, "2026-12-03", start=50))
    assert len(dataset.load()) == 14


def test_parts_moved_in_by_a_save_killed_before_its_manifest_are_never_read(
    tmp_path: Path,
) -> None:
    """A kill between moving parts in and writing the manifest: readers go by the manifest,
    and the next commit (holding the lock) removes the orphans."""
    folder = tmp_path / "batch_verdicts"
    dataset = VerdictTableDataset(str(folder))
    dataset.save(_verdicts(4))
    orphan = folder / "2026-12-02" / "part-00000002-00000.parquet"
    _verdicts(7, start=20).to_parquet(orphan)
    assert len(dataset.load()) == 4
    dataset.save(_verdicts(1, "2026-12-05", start=90))
    assert not orphan.exists() and len(dataset.load()) == 5


def _save_in_a_process(folder: str, start: int, day: str) -> None:
    VerdictTableDataset(folder, rows_per_part=3).save(_verdicts(10, day, start=start))


def test_two_writers_at_once_both_land_their_rows(tmp_path: Path) -> None:
    """Threads and processes saving together: the lock serialises the commits."""
    folder = str(tmp_path / "batch_verdicts")
    errors: list[BaseException] = []

    def save_in_a_thread(start: int) -> None:
        try:
            _save_in_a_process(folder, start, "2026-12-04")
        except BaseException as exc:  # a thread's error is otherwise only printed
            errors.append(exc)

    threads = [threading.Thread(target=save_in_a_thread, args=(s,)) for s in (0, 1000, 2000, 3000)]
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_save_in_a_process, args=(folder, start, "2026-12-05"))
        for start in (4000, 5000)
    ]
    for worker in [*threads, *processes]:
        worker.start()
    for worker in [*threads, *processes]:
        worker.join(timeout=120)
    assert not errors, errors
    assert [p.exitcode for p in processes] == [0, 0]
    loaded = VerdictTableDataset(folder).load()
    assert len(loaded) == 60 and loaded["sha256"].is_unique
    manifest = json.loads((Path(folder) / "_manifest.json").read_text())
    assert manifest["version"] == 6


def test_a_lock_left_by_a_killed_writer_is_broken_once_stale(tmp_path: Path) -> None:
    folder = tmp_path / "batch_verdicts"
    folder.mkdir()
    (folder / "_lock").write_text("host pid 1 dead")
    with pytest.raises(DatasetError, match="locked by another writer"):
        VerdictTableDataset(str(folder), lock_timeout_s=0.3).save(_verdicts(2))
    VerdictTableDataset(str(folder), lock_timeout_s=5, stale_lock_s=0).save(_verdicts(2))
    assert len(VerdictTableDataset(str(folder)).load()) == 2


def test_a_table_written_before_manifests_is_kept_as_the_first_version(tmp_path: Path) -> None:
    folder = tmp_path / "batch_verdicts"
    folder.mkdir()
    old = _verdicts(3)
    old.to_parquet(folder / "part-00000.parquet", index=False)
    dataset = VerdictTableDataset(str(folder))
    pd.testing.assert_frame_equal(dataset.load(), old)
    dataset.save(_verdicts(2, "2026-12-03", start=10))
    loaded = dataset.load()
    assert len(loaded) == 5 and loaded["scored_day"].tolist()[-2:] == ["2026-12-03"] * 2


def test_no_table_yet_is_a_clear_error(tmp_path: Path) -> None:
    dataset = VerdictTableDataset(str(tmp_path / "none"))
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="no verdict table at"):
        dataset.load()
    with pytest.raises(ValueError, match="rows_per_part must be >= 1"):
        VerdictTableDataset(str(tmp_path), rows_per_part=0)
    with pytest.raises(DatasetError, match="needs a scored_at column"):
        VerdictTableDataset(str(tmp_path / "t")).save(_verdicts(2).drop(columns="scored_at"))


def test_the_history_handle_sees_scored_and_staged_rows(tmp_path: Path) -> None:
    folder = str(tmp_path / "batch_verdicts")
    history = VerdictHistoryDataset(folder).load()
    assert history.scored("eyecatcher-moderation", "1") == set()
    assert history.staged("eyecatcher-moderation", "1") is None
    batch = _verdicts(4, start=10).drop(columns="scored_at")
    history.stage("eyecatcher-moderation", "1", batch)
    pd.testing.assert_frame_equal(history.staged("eyecatcher-moderation", "1"), batch)
    # Committing the staged rows (with more) clears the staged batch: its job is done.
    VerdictTableDataset(folder).save(_verdicts(20))
    assert history.staged("eyecatcher-moderation", "1") is None
    assert history.scored("eyecatcher-moderation", "1") == {f"{i:064x}" for i in range(20)}
    assert history.scored("eyecatcher-moderation", "2") == set()


def test_the_table_lives_on_s3_with_the_configured_storage_options(moto_s3: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    s3.create_bucket(Bucket="verdicts")
    options = {"client_kwargs": {"endpoint_url": moto_s3}}
    dataset = VerdictTableDataset("s3://verdicts/batch", fs_args=options, rows_per_part=5)
    first, second = _verdicts(12), _verdicts(3, "2026-12-03", start=40)
    dataset.save(first)
    dataset.save(second)
    expected = pd.concat(
        [_with_day(first, "2026-12-02"), _with_day(second, "2026-12-03")], ignore_index=True
    )
    pd.testing.assert_frame_equal(dataset.load(), expected)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="verdicts")["Contents"])
    assert keys == [
        "batch/2026-12-02/part-00000001-00000.parquet",
        "batch/2026-12-02/part-00000001-00001.parquet",
        "batch/2026-12-02/part-00000001-00002.parquet",
        "batch/2026-12-03/part-00000002-00000.parquet",
        "batch/_manifest.json",
    ]  # no lock and no pending parts left behind


def test_an_optional_reader_loads_none_until_a_table_exists(tmp_path: Path) -> None:
    """How the retrain check declares the table: no batch scored yet is not an error."""
    folder = tmp_path / "batch_verdicts"
    reader = VerdictTableDataset(str(folder), optional=True, missing_hint="score a batch first")
    assert reader.load() is None
    table = _verdicts(9)
    VerdictTableDataset(str(folder), rows_per_part=4).save(table)
    pd.testing.assert_frame_equal(reader.load(), _with_day(table, "2026-12-02"))
