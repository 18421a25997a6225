"""The paid answer cache on S3 (moto): one segment per writer, merged on read, nothing lost."""

from __future__ import annotations

import io
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eyecatcher import storage
from eyecatcher.datasets.response_cache_dataset import ResponseCacheDataset
from eyecatcher.images import sha256_bytes
from eyecatcher.rekognition.batch import ImageTask, RequestSettings, send_images
from eyecatcher.rekognition.cache import CacheWriteError, ReadOnlyCacheError
from eyecatcher.rekognition.client import RekognitionEndpoint
from eyecatcher.rekognition.local_endpoint import LocalRekognition, ScriptedBehaviour

FAKE_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _answer(sha256: str) -> dict:
    """A distinct answer per image, so that a mixed-up record would show."""
    return {
        "ModerationLabels": [
            {"Name": f"L-{sha256[:12]}", "ParentName": "", "Confidence": 88.0, "TaxonomyLevel": 1}
        ],
        "ModerationModelVersion": "7.0",
        "ContentTypes": [],
    }


def _images(folder: Path, count: int) -> list[ImageTask]:
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    for seed in range(count):
        pixels = np.random.default_rng(seed).integers(0, 255, size=(96, 96, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        path = folder / f"{seed}.png"
        path.write_bytes(buffer.getvalue())
        tasks.append(
            ImageTask(sha256_bytes(buffer.getvalue()), str(path), "PNG", path.stat().st_size)
        )
    return tasks


def _dataset(bucket: str, **kwargs) -> ResponseCacheDataset:
    return ResponseCacheDataset(
        filepath=f"{bucket}/01_raw/rekognition/responses.jsonl", read_only=False, **kwargs
    )


def test_two_writers_paying_for_overlapping_images_lose_no_answer(
    s3_bucket: str, tmp_path: Path
) -> None:
    tasks = _images(tmp_path / "images", 12)
    first, second = tasks[:8], tasks[4:]  # images 4..7 are paid for by both
    behaviour = ScriptedBehaviour(answer=_answer, latency_s=0.02)
    with LocalRekognition(behaviour) as server:
        endpoint = RekognitionEndpoint(
            mode="live", endpoint_url=server.url, credentials=FAKE_KEYS, max_attempts=2
        )
        # Both runs open the cache before either writes: neither sees the other's answers.
        caches = [_dataset(s3_bucket, segment_records=3).load() for _ in range(2)]
        start = threading.Barrier(2)
        failures: list[BaseException] = []

        def run(cache, batch: list[ImageTask]) -> None:
            try:
                start.wait(timeout=10)
                send_images(
                    batch,
                    client=endpoint.client(),
                    cache=cache,
                    settings=RequestSettings(),
                    workers=3,
                )
            except BaseException as exc:  # reported below, not lost in the thread
                failures.append(exc)

        threads = [
            threading.Thread(target=run, args=(cache, batch))
            for cache, batch in zip(caches, (first, second), strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        paid = len(server.answered_images())
    assert not failures
    assert paid == 16  # 8 + 8: the overlap was paid twice, so both answers must be kept

    merged = _dataset(s3_bucket).load()
    assert merged.n_records == 16
    for task in tasks:
        hit = merged.lookup(task.sha256, 50.0)
        assert hit is not None, f"answer for {task.uri} lost"
        assert hit.response["ModerationLabels"] == _answer(task.sha256)["ModerationLabels"]
    # Each writer's worker threads fill their own segments of at most 3 answers; the two
    # writers' sessions never share an object.
    contents = [storage.read_bytes(uri).splitlines() for uri in merged.segment_uris()]
    assert sum(map(len, contents)) == 16 and max(map(len, contents)) <= 3
    sessions = {uri.rsplit("-", 2)[0] for uri in merged.segment_uris()}
    assert len(sessions) == 2


def test_each_answer_is_stored_before_the_next_and_a_failed_write_stops_with_it_logged(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = _dataset(s3_bucket).load()
    records = [
        {"sha256": f"{i:064x}", "min_confidence": 50.0, "response": _answer(f"{i:064x}")}
        for i in range(3)
    ]
    real_write = storage.write_atomic
    with cache.exclusive():
        cache.append(records[0])
        # Durable at once: a reader opening the cache now sees the answer.
        assert _dataset(s3_bucket).load().lookup(records[0]["sha256"], 50.0) is not None
        cache.append(records[1])

        def unreachable(uri: str, data: bytes, options=None) -> None:
            raise ConnectionError("S3 unreachable")

        monkeypatch.setattr(storage, "write_atomic", unreachable)
        with caplog.at_level(logging.ERROR), pytest.raises(CacheWriteError, match="in the log"):
            cache.append(records[2])
        monkeypatch.setattr(storage, "write_atomic", real_write)
        with pytest.raises(CacheWriteError):  # the session stays stopped
            cache.append(records[2])
    assert records[2]["sha256"] in caplog.text  # recoverable from the log
    reopened = _dataset(s3_bucket).load()
    assert reopened.n_records == 2
    assert reopened.lookup(records[1]["sha256"], 50.0) is not None


def test_s3_seed_is_read_and_a_read_only_cache_refuses_to_write(
    s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    seed = f"{s3_bucket}/01_raw/demo/rekognition_responses.jsonl"
    record = {"sha256": "a" * 64, "min_confidence": 50.0, "response": _answer("a" * 64)}
    storage.write_atomic(seed, (json.dumps(record) + "\n" + "{not json\n").encode())
    cache = ResponseCacheDataset(filepath=None, seed_filepaths=[seed], read_only=True).load()
    assert cache.lookup("a" * 64, 60.0) is not None
    assert cache.n_skipped_lines == 1
    with pytest.raises(ReadOnlyCacheError), cache.exclusive():
        pass
    remote = _dataset(s3_bucket).load()
    with pytest.raises(ReadOnlyCacheError, match="no writing session"):
        remote.append(record)


_WRITER = """
import json, sys
from eyecatcher.datasets.response_cache_dataset import ResponseCacheDataset

uri, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cache = ResponseCacheDataset(filepath=uri, segment_records=4).load()
with cache.exclusive():
    for i in range(first, last):
        sha = f"{i:064x}"
        answer = {"ModerationLabels": [{"Name": f"L-{i}", "Confidence": 90.0}]}
        cache.append({"sha256": sha, "min_confidence": 50.0, "response": answer})
print(json.dumps({"written": last - first}))
"""


def test_two_writer_processes_lose_no_answer(s3_bucket: str) -> None:
    """Two processes (each its own S3 client and listing cache) write overlapping answers."""
    import os
    import subprocess
    import sys

    uri = f"{s3_bucket}/01_raw/rekognition/responses.jsonl"
    # Not this process's sys.path: a served model loaded by an earlier test puts its partial copy
    # of the package (pyfunc code_paths) on it, which would shadow the installed one.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src")}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, uri, str(first), str(last)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first, last in ((0, 12), (6, 18))  # answers 6..11 come from both
    ]
    for writer in writers:
        out, err = writer.communicate(timeout=90)
        assert writer.returncode == 0, err[-2000:]
        assert json.loads(out.splitlines()[-1]) == {"written": 12}
    merged = _dataset(s3_bucket).load()
    assert merged.n_records == 24
    for i in range(18):
        hit = merged.lookup(f"{i:064x}", 50.0)
        assert hit is not None and hit.response["ModerationLabels"][0]["Name"] == f"L-{i}"
