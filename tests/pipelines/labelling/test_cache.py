"""The response cache: durable appends, lookups by request settings, damaged files."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from eyecatcher.datasets.response_cache_dataset import ResponseCacheDataset
from eyecatcher.rekognition.cache import (
    CacheLockedError,
    CacheWriteError,
    ReadOnlyCacheError,
    ResponseCache,
)
from tests.pipelines.labelling.conftest import DEMO, REPO, demo_records


def _answer(*confidences: float) -> dict:
    return {
        "ModerationLabels": [
            {"Name": f"L{c}", "ParentName": "", "Confidence": c, "TaxonomyLevel": 1}
            for c in confidences
        ],
        "ModerationModelVersion": "7.0",
        "ContentTypes": [],
    }


def _append(cache: ResponseCache, record: dict) -> None:
    with cache.exclusive():
        cache.append(record)


def test_appended_answers_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    cache = ResponseCache(path)
    _append(cache, {"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer(80.0)})
    # Readable by another process at once: flushed and fsync-ed, not buffered.
    assert json.loads(path.read_text())["sha256"] == "a" * 64
    reopened = ResponseCache(path)
    hit = reopened.lookup("a" * 64, 50.0)
    assert hit is not None and hit.response == _answer(80.0)
    assert reopened.lookup("b" * 64, 50.0) is None


def test_lower_threshold_answers_serve_higher_thresholds_but_not_the_reverse(
    tmp_path: Path,
) -> None:
    cache = ResponseCache(tmp_path / "c.jsonl")
    _append(cache, {"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer(55.0, 90.0)})
    higher = cache.lookup("a" * 64, 70.0)
    assert higher is not None
    assert [label["Confidence"] for label in higher.response["ModerationLabels"]] == [90.0]
    assert cache.lookup("a" * 64, 40.0) is None  # labels between 40 and 50 were never asked for


def test_project_version_is_part_of_the_key(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.jsonl")
    _append(cache, {"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer()})
    assert cache.lookup("a" * 64, 50.0, project_version="arn:adapter/1") is None


def test_errors_are_cached_but_resendable_codes_do_not_count_as_answers(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.jsonl")
    for sha, code in (("a", "InvalidImageFormatException"), ("b", "AccessDeniedException")):
        _append(
            cache,
            {
                "sha256": sha * 64,
                "min_confidence": 50.0,
                "request": {"format_checked": True},
                "error": {"code": code, "message": "x"},
            },
        )
    # A format error from before payloads were format-checked (sent as they were) is resent.
    _append(
        cache,
        {
            "sha256": "e" * 64,
            "min_confidence": 50.0,
            "request": {"image": "bytes", "prepared": "as_is"},
            "error": {"code": "InvalidImageFormatException", "message": "x"},
        },
    )
    assert cache.lookup("e" * 64, 50.0) is None
    resend = ["AccessDeniedException"]
    hit = cache.lookup("a" * 64, 50.0, resend_error_codes=resend)
    assert hit is not None and hit.error_code == "InvalidImageFormatException"
    assert cache.lookup("b" * 64, 50.0, resend_error_codes=resend) is None
    # A later answer beats an earlier error.
    _append(cache, {"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer()})
    assert cache.lookup("a" * 64, 50.0).response is not None


def test_a_cut_off_last_line_is_skipped_and_the_next_writer_quarantines_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.jsonl"
    good = json.dumps({"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer()})
    path.write_text(good + "\n" + good[:40])  # a run killed in the middle of a write
    cache = ResponseCache(path)
    assert cache.n_records == 1
    _append(cache, {"sha256": "b" * 64, "min_confidence": 50.0, "response": _answer()})
    reopened = ResponseCache(path)
    assert reopened.n_records == 2 and reopened.n_skipped_lines == 0
    assert reopened.lookup("b" * 64, 50.0) is not None
    quarantine = (tmp_path / "c.jsonl.quarantine.jsonl").read_text()
    assert json.loads(quarantine)["raw"] == good[:40]


def test_a_damaged_line_in_the_middle_is_quarantined_and_never_blocks_the_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.jsonl"
    first = json.dumps({"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer()})
    last = json.dumps({"sha256": "b" * 64, "min_confidence": 50.0, "response": _answer()})
    path.write_text(first + "\n{broken\n" + last + "\n")
    cache = ResponseCache(path)  # reading never fails on it: it is skipped with a warning
    assert cache.n_records == 2 and cache.n_skipped_lines == 1
    assert "c.jsonl:2" in caplog.text
    assert path.read_text().count("\n") == 3  # a reader changes nothing
    _append(cache, {"sha256": "c" * 64, "min_confidence": 50.0, "response": _answer()})
    # The writer moved the damaged line out, kept every record, and said so.
    quarantine = [json.loads(line) for line in (tmp_path / "c.jsonl.quarantine.jsonl").open()]
    assert [(q["line"], q["raw"]) for q in quarantine] == [(2, "{broken")]
    assert "moved to" in caplog.text
    reopened = ResponseCache(path)
    assert reopened.n_records == 3 and reopened.n_skipped_lines == 0


class FullDisk:
    """A cache file whose writes fail with ENOSPC once ``room`` bytes have been written."""

    def __init__(self, path: Path, room: int) -> None:
        self._file = path.open("ab")
        self._room = room

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            self._file.write(bytes(data[: self._room]))  # the part that fit, as a real disk
            self._file.flush()
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()


def test_a_write_error_cuts_back_spills_and_the_next_load_merges(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    first = {"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer(70.0)}
    cache = ResponseCache(path, opener=lambda p: FullDisk(p, room=len(json.dumps(first)) + 80))
    with cache.exclusive():
        cache.append(first)
        for sha in ("b", "c"):
            with pytest.raises(CacheWriteError, match="merged by the next run"):
                cache.append({"sha256": sha * 64, "min_confidence": 50.0, "response": _answer()})
    # Cut back to the last complete record: no fragment for the next append to glue onto.
    assert path.read_bytes().endswith(b"\n")
    assert [json.loads(line)["sha256"] for line in path.open()] == ["a" * 64]
    spills = list(tmp_path.glob("c.jsonl.spill-*.jsonl"))
    assert len(spills) == 1 and cache.n_spilled == 2
    # The next load sees every answer; the next writer merges the spill into the cache.
    reopened = ResponseCache(path)
    assert all(reopened.lookup(sha * 64, 50.0) for sha in "abc")
    _append(reopened, {"sha256": "d" * 64, "min_confidence": 50.0, "response": _answer()})
    assert not list(tmp_path.glob("c.jsonl.spill-*.jsonl"))
    assert sorted(json.loads(line)["sha256"][0] for line in path.open()) == list("abcd")


_HOLDER = """
import sys, time
from eyecatcher.rekognition.cache import ResponseCache
with ResponseCache(sys.argv[1]).exclusive():
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the parent closes our stdin
"""


def test_a_second_process_fails_fast_naming_the_lock_holder(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(CacheLockedError) as caught, ResponseCache(path).exclusive():
            pass
        assert time.monotonic() - started < 5  # fails fast, never waits
        message = str(caught.value)
        assert f'"pid": {holder.pid}' in message and socket.gethostname() in message
        assert "started_at" in message
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    # Released when the holder ends: the next run writes.
    _append(ResponseCache(path), {"sha256": "a" * 64, "min_confidence": 50.0, "response": {}})


def test_read_only_seed_cache_never_writes(tmp_path: Path) -> None:
    cache = ResponseCacheDataset(
        seed_filepaths=[str(DEMO / "rekognition_responses.jsonl")], read_only=True
    ).load()
    assert cache.n_records == len(demo_records())
    with pytest.raises(ReadOnlyCacheError):
        cache.append({"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer()})


def test_demo_seed_answers_every_demo_record() -> None:
    cache = ResponseCache(None, [DEMO / "rekognition_responses.jsonl"])
    for record in demo_records():
        hit = cache.lookup(record["sha256"], 20.0)
        assert hit is not None and hit.response == record["response"]


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    cache = ResponseCache(path)

    def write(worker: int) -> None:
        for i in range(25):
            sha = f"{worker:02d}{i:062d}"
            cache.append({"sha256": sha, "min_confidence": 50.0, "response": _answer(60.0)})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    with cache.exclusive():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    cache.close()
    assert ResponseCache(path).n_records == 200


def test_a_complete_last_record_without_newline_is_kept_when_appending(tmp_path: Path) -> None:
    # A cache whose last record lacks only its newline (hand-merged files, an editor that
    # strips it) holds a paid answer: appending must add the newline, not cut that record off.
    path = tmp_path / "c.jsonl"
    first = json.dumps({"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer()})
    last = json.dumps({"sha256": "b" * 64, "min_confidence": 50.0, "response": _answer(70.0)})
    path.write_text(first + "\n" + last)
    cache = ResponseCache(path)
    assert cache.n_records == 2
    _append(cache, {"sha256": "c" * 64, "min_confidence": 50.0, "response": _answer()})
    reopened = ResponseCache(path)
    assert reopened.n_records == 3
    assert reopened.lookup("b" * 64, 50.0).response == _answer(70.0)
    assert reopened.lookup("c" * 64, 50.0) is not None
