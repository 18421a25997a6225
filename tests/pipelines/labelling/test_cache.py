"""The response cache: durable appends, lookups by request settings, damaged files."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from eyecatcher.rekognition.cache import CacheCorruptError, ReadOnlyCacheError, ResponseCache
from eyecatcher.rekognition.datasets import ResponseCacheDataset
from tests.pipelines.labelling.conftest import DEMO, demo_records


def _answer(*confidences: float) -> dict:
    return {
        "ModerationLabels": [
            {"Name": f"L{c}", "ParentName": "", "Confidence": c, "TaxonomyLevel": 1}
            for c in confidences
        ],
        "ModerationModelVersion": "7.0",
        "ContentTypes": [],
    }


def test_appended_answers_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    cache = ResponseCache(path)
    cache.append({"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer(80.0)})
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
    cache.append({"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer(55.0, 90.0)})
    higher = cache.lookup("a" * 64, 70.0)
    assert higher is not None
    assert [label["Confidence"] for label in higher.response["ModerationLabels"]] == [90.0]
    assert cache.lookup("a" * 64, 40.0) is None  # labels between 40 and 50 were never asked for


def test_project_version_is_part_of_the_key(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.jsonl")
    cache.append({"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer()})
    assert cache.lookup("a" * 64, 50.0, project_version="arn:adapter/1") is None


def test_errors_are_cached_but_resendable_codes_do_not_count_as_answers(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.jsonl")
    for sha, code in (("a", "InvalidImageFormatException"), ("b", "AccessDeniedException")):
        cache.append(
            {"sha256": sha * 64, "min_confidence": 50.0, "error": {"code": code, "message": "x"}}
        )
    resend = ["AccessDeniedException"]
    hit = cache.lookup("a" * 64, 50.0, resend_error_codes=resend)
    assert hit is not None and hit.error_code == "InvalidImageFormatException"
    assert cache.lookup("b" * 64, 50.0, resend_error_codes=resend) is None
    # A later answer beats an earlier error.
    cache.append({"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer()})
    assert cache.lookup("a" * 64, 50.0).response is not None


def test_a_cut_off_last_line_is_skipped_and_the_next_append_starts_a_new_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.jsonl"
    good = json.dumps({"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer()})
    path.write_text(good + "\n" + good[:40])  # a run killed in the middle of a write
    cache = ResponseCache(path)
    assert cache.n_records == 1
    cache.append({"sha256": "b" * 64, "min_confidence": 50.0, "response": _answer()})
    reopened = ResponseCache(path)
    assert reopened.n_records == 2
    assert reopened.lookup("b" * 64, 50.0) is not None


def test_a_damaged_line_in_the_middle_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    good = json.dumps({"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer()})
    path.write_text(good + "\n{broken\n" + good + "\n")
    with pytest.raises(CacheCorruptError, match=r"c.jsonl:2"):
        ResponseCache(path)


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
        hit = cache.lookup(record["sha256"], 50.0)
        assert hit is not None and hit.response == record["response"]


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    cache = ResponseCache(path)

    def write(worker: int) -> None:
        for i in range(25):
            sha = f"{worker:02d}{i:062d}"
            cache.append({"sha256": sha, "min_confidence": 50.0, "response": _answer(60.0)})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
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
    cache.append({"sha256": "c" * 64, "min_confidence": 50.0, "response": _answer()})
    reopened = ResponseCache(path)
    assert reopened.n_records == 3
    assert reopened.lookup("b" * 64, 50.0).response == _answer(70.0)
    assert reopened.lookup("c" * 64, 50.0) is not None
