"""The labelling pipeline: offline demo, live runs against a local endpoint, dry runs,
interruptions, and a KedroSession run of ingestion + labelling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from eyecatcher.pipelines.labelling.label_sources import EXTRA_COLUMNS
from eyecatcher.pipelines.labelling.nodes import (
    IMAGE_LABELS_COLUMNS,
    CacheMissError,
    LabellingDryRunError,
    LabellingIncompleteError,
    assign_classes,
    report_label_distribution,
    request_moderation_labels,
)
from eyecatcher.rekognition.cache import CacheLockedError, CacheWriteError, ResponseCache
from eyecatcher.rekognition.client import RekognitionEndpoint
from eyecatcher.rekognition.local_endpoint import LocalRekognition, ScriptedBehaviour
from tests.pipelines.labelling.conftest import (
    DEMO,
    REPO,
    demo_records,
    index_rows,
    labelling_params,
)

FAKE_KEYS = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret"}
SWIMWEAR = {
    "ModerationLabels": [
        {"Confidence": 91.0, "Name": "Swimwear or Underwear", "ParentName": "", "TaxonomyLevel": 1},
        {
            "Confidence": 90.0,
            "Name": "Male Swimwear or Underwear",
            "ParentName": "Swimwear or Underwear",
            "TaxonomyLevel": 2,
        },
    ],
    "ModerationModelVersion": "7.0",
    "ContentTypes": [],
}


def _live(url: str) -> RekognitionEndpoint:
    return RekognitionEndpoint(
        mode="live",
        endpoint_url=url,
        credentials=FAKE_KEYS,
        max_attempts=3,
        connect_timeout=2,
        read_timeout=10,
    )


def _offline_cache() -> ResponseCache:
    return ResponseCache(None, [DEMO / "rekognition_responses.jsonl"], read_only=True)


def _many_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:03d}.png"
        Image.new("RGB", (90, 90), (i % 256, (i * 7) % 256, 128)).save(path)
        paths.append(path)
    return paths


def test_offline_demo_labels_every_image_from_the_seed_cache(demo_index: pd.DataFrame) -> None:
    params = labelling_params()
    results, stats = request_moderation_labels(
        demo_index, _offline_cache(), RekognitionEndpoint(mode="offline"), params
    )
    assert stats["n_cached"] == len(demo_index) == 200
    assert stats["n_requests"] == 0 and stats["estimated_cost_usd"] == 0
    labels, mapping_stats = assign_classes(results, params)
    assert list(labels.columns) == IMAGE_LABELS_COLUMNS
    assert labels["sha256"].tolist() == demo_index["sha256"].tolist()
    expected = {r["sha256"]: r["demo_expected_class"] for r in demo_records()}
    got = {
        sha: (cls if included else None)
        for sha, cls, included in zip(
            labels["sha256"], labels["class"], labels["included"], strict=True
        )
    }
    assert got == expected
    assert labels["included"].sum() == 187
    assert set(labels["label_source"]) == {"cache:synthetic-demo"}
    assert set(labels["moderation_model_version"]) == {"7.0"}
    first = json.loads(labels.loc[labels["class"] == "explicit_nudity", "labels"].iloc[0])
    assert {"Name", "ParentName", "Confidence", "TaxonomyLevel"} == set(first[0])

    figure, metrics = report_label_distribution(labels, stats, mapping_stats)
    # Five safe demo images carry a near miss (a weak Swimwear label): not provably safe.
    assert metrics["class_count.safe"] == {"value": 35.0, "step": 0}
    assert metrics["excluded.excluded_uncertain"]["value"] == 5
    # Illustrated explicit images are excluded by the default illustrated policy.
    assert metrics["excluded.excluded_illustrated"]["value"] == 8
    # Five safe demo images also carry "Alcohol", ignored by the default out-of-scheme policy.
    assert metrics["ignored_out_of_scheme.Alcohol"]["value"] == 5
    assert metrics["n_images_with_ignored_out_of_scheme"]["value"] == 5
    assert metrics["n_excluded"]["value"] == 13
    assert metrics["n_cached_above_min_confidence"]["value"] == 0
    assert figure.axes[0].get_title().startswith("Training classes (187")


def test_offline_cache_miss_names_the_images_and_calls_nothing(
    demo_index: pd.DataFrame, small_images: list[Path]
) -> None:
    index = pd.concat([demo_index.head(3), index_rows(small_images[:2])], ignore_index=True)
    with pytest.raises(CacheMissError) as excinfo:
        request_moderation_labels(
            index, _offline_cache(), RekognitionEndpoint(mode="offline"), labelling_params()
        )
    message = str(excinfo.value)
    assert "2 images" in message
    assert str(small_images[0]) in message and str(small_images[1]) in message


def test_live_run_sends_only_uncached_images_and_converts_what_it_must(
    small_images: list[Path], tmp_path: Path
) -> None:
    index = index_rows(small_images)
    cache_path = tmp_path / "cache.jsonl"
    seeded = ResponseCache(cache_path)
    with seeded.exclusive():
        for sha in index["sha256"][:5]:  # answered by an earlier run
            seeded.append(
                {
                    "sha256": sha,
                    "min_confidence": 20.0,
                    "source": "rekognition",
                    "response": SWIMWEAR,
                }
            )
    webp_sha = index.loc[index["format"] == "WEBP", "sha256"].item()
    with LocalRekognition(ScriptedBehaviour(answer=lambda _: SWIMWEAR)) as server:
        results, stats = request_moderation_labels(
            index, ResponseCache(cache_path), _live(server.url), labelling_params(workers=3)
        )
    sent = {image for image, _ in server.requests}
    assert len(server.requests) == len(index) - 5
    assert not sent & set(index["sha256"][:5])
    # The WebP went as a JPEG re-encoding, so the server saw other bytes than the file's.
    assert webp_sha not in sent
    assert stats["n_converted"] == 1 and stats["n_requests"] == len(index) - 5
    assert stats["estimated_cost_usd"] == pytest.approx(0.001 * (len(index) - 5))
    labels, _ = assign_classes(results, labelling_params())
    assert set(labels["class"]) == {"swimwear_or_underwear"}
    assert (labels["label_source"] == "rekognition").sum() == len(index) - 5
    assert (labels["label_source"] == "cache:rekognition").sum() == 5
    request = ResponseCache(cache_path).lookup(webp_sha, 20.0).record["request"]
    assert (request["prepared"], request["converted_from"]) == ("converted", "WEBP")


def test_image_errors_end_up_in_the_table_and_are_not_resent(
    small_images: list[Path], tmp_path: Path
) -> None:
    index = index_rows(small_images[:4])
    bad = index["sha256"][1]
    behaviour = ScriptedBehaviour(errors_by_image={bad: "InvalidImageFormatException"})
    params = labelling_params(workers=2)
    with LocalRekognition(behaviour) as server:
        results, _ = request_moderation_labels(
            index, ResponseCache(tmp_path / "c.jsonl"), _live(server.url), params
        )
        labels, _ = assign_classes(results, params)
        row = labels.set_index("sha256").loc[bad]
        assert pd.isna(row["class"]) and not row["included"]
        assert row["error_code"] == "InvalidImageFormatException"
        n_first = len(server.requests)
        request_moderation_labels(
            index, ResponseCache(tmp_path / "c.jsonl"), _live(server.url), params
        )
        assert len(server.requests) == n_first  # answers and final errors both cached


def test_images_still_unlabelled_after_retries_fail_the_run_after_the_rest_is_cached(
    small_images: list[Path], tmp_path: Path
) -> None:
    index = index_rows(small_images[:4])
    stubborn = index["sha256"][2]
    behaviour = ScriptedBehaviour(errors_by_image={stubborn: "InternalServerError"})
    with (
        LocalRekognition(behaviour) as server,
        pytest.raises(LabellingIncompleteError, match="1 images are still unlabelled"),
    ):
        request_moderation_labels(
            index,
            ResponseCache(tmp_path / "c.jsonl"),
            _live(server.url),
            labelling_params(workers=2),
        )
    assert ResponseCache(tmp_path / "c.jsonl").n_records == 3


def test_dry_run_prints_count_and_cost_and_calls_nothing(
    small_images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = index_rows(small_images)
    cache_path = tmp_path / "cache.jsonl"
    with LocalRekognition() as server:
        with pytest.raises(LabellingDryRunError):
            request_moderation_labels(
                index,
                ResponseCache(cache_path),
                _live(server.url),
                labelling_params(dry_run=True, price_per_image_usd=0.0012),
            )
        assert server.requests == []
    printed = capsys.readouterr().out
    assert f"{len(index)} of {len(index)} images" in printed
    assert f"USD {0.0012 * len(index):.3f}" in printed
    assert "Credentials: found (explicit)" in printed
    assert not cache_path.exists()


def test_missing_credentials_stop_before_any_image_is_sent(
    small_images: list[Path], tmp_path: Path
) -> None:
    from eyecatcher.rekognition.client import RekognitionCredentialsError

    with LocalRekognition() as server:
        endpoint = RekognitionEndpoint(mode="live", endpoint_url=server.url, credentials={})
        with pytest.raises(RekognitionCredentialsError):
            request_moderation_labels(
                index_rows(small_images[:2]),
                ResponseCache(tmp_path / "c.jsonl"),
                endpoint,
                labelling_params(),
            )
        assert server.requests == []


def _complete_records(path: Path) -> set[str]:
    shas = set()
    for line in path.read_bytes().split(b"\n"):
        try:
            shas.add(json.loads(line)["sha256"])
        except (json.JSONDecodeError, KeyError):
            continue
    return shas


_CHILD = """
import sys, pandas as pd
from eyecatcher.pipelines.labelling.nodes import request_moderation_labels
from eyecatcher.rekognition.cache import CacheLockedError, CacheWriteError, ResponseCache
from eyecatcher.rekognition.client import RekognitionEndpoint
from tests.pipelines.labelling.conftest import labelling_params
index = pd.read_parquet(sys.argv[1])
endpoint = RekognitionEndpoint(mode="live", endpoint_url=sys.argv[3], max_attempts=2,
    credentials={"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret"})
request_moderation_labels(index, ResponseCache(sys.argv[2]), endpoint, labelling_params(workers=2))
"""


def test_a_killed_run_loses_no_answer_and_the_rerun_sends_only_the_rest(tmp_path: Path) -> None:
    index = index_rows(_many_images(tmp_path / "imgs", 30))
    index_path = tmp_path / "index.parquet"
    index.to_parquet(index_path)
    cache_path = tmp_path / "cache.jsonl"
    behaviour = ScriptedBehaviour(answer=lambda _: SWIMWEAR, latency_s=0.1)
    with LocalRekognition(behaviour) as server:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(index_path), str(cache_path), server.url],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        deadline = time.monotonic() + 60
        while len(_complete_records(cache_path) if cache_path.exists() else ()) < 8:
            assert child.poll() is None, "the child finished before it could be killed"
            assert time.monotonic() < deadline, "the child never started answering"
            time.sleep(0.02)
        child.kill()  # SIGKILL: no cleanup code runs in the child
        child.wait(timeout=10)
        # Requests the child had in flight still reach the server (their answers die with the
        # child, which is the one thing no client can keep); let them land before counting.
        time.sleep(0.5)
        answered_before = _complete_records(cache_path)
        assert 8 <= len(answered_before) < len(index)
        n_before = len(server.requests)

        results, stats = request_moderation_labels(
            index, ResponseCache(cache_path), _live(server.url), labelling_params(workers=4)
        )
        resent = [image for image, _ in server.requests[n_before:]]
    assert set(resent) == set(index["sha256"]) - answered_before
    assert len(resent) == len(set(resent))
    assert stats["n_cached"] == len(answered_before)
    assert results["status"].eq("answered").all()


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in a terminal, whatever the shell set.

    Under `nohup`, `&` or a script that backgrounds the suite, SIGINT is ignored and a simulated
    Ctrl-C would do nothing (the test would hang); the test installs the default handler itself.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_ctrl_c_keeps_every_answer_already_received(tmp_path: Path) -> None:
    index = index_rows(_many_images(tmp_path / "imgs", 40))
    cache_path = tmp_path / "cache.jsonl"
    behaviour = ScriptedBehaviour(answer=lambda _: SWIMWEAR, latency_s=0.1)
    with LocalRekognition(behaviour) as server:
        stop = threading.Event()

        def press_ctrl_c_after_some_answers() -> None:
            while not stop.is_set() and len(server.answered_images()) < 5:
                time.sleep(0.01)
            if not stop.is_set():
                os.kill(os.getpid(), signal.SIGINT)

        presser = threading.Thread(target=press_ctrl_c_after_some_answers)
        presser.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                request_moderation_labels(
                    index, ResponseCache(cache_path), _live(server.url), labelling_params(workers=2)
                )
        finally:
            stop.set()
            presser.join()
        answered = {image for image, status in server.requests if status == 200}
        n_before = len(server.requests)
        assert 0 < len(answered) < len(index)
        # Every answer the server gave, in flight at the interrupt included, is in the cache.
        assert _complete_records(cache_path) == answered
        request_moderation_labels(
            index, ResponseCache(cache_path), _live(server.url), labelling_params(workers=4)
        )
        resent = {image for image, _ in server.requests[n_before:]}
    assert resent == set(index["sha256"]) - answered


def test_a_second_run_fails_fast_naming_the_first_and_sends_nothing(tmp_path: Path) -> None:
    index = index_rows(_many_images(tmp_path / "imgs", 4))
    cache_path = tmp_path / "cache.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(cache_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with LocalRekognition(ScriptedBehaviour(answer=lambda _: SWIMWEAR)) as server:
            with pytest.raises(CacheLockedError, match=f'"pid": {holder.pid}'):
                request_moderation_labels(
                    index, ResponseCache(cache_path), _live(server.url), labelling_params()
                )
            assert server.requests == []  # nothing paid for twice
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


_HOLD_LOCK = """
import sys
from eyecatcher.rekognition.cache import CacheLockedError, CacheWriteError, ResponseCache
with ResponseCache(sys.argv[1]).exclusive():
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_full_disk_stops_sending_and_no_answer_is_lost(tmp_path: Path) -> None:
    from tests.pipelines.labelling.test_cache import FullDisk

    index = index_rows(_many_images(tmp_path / "imgs", 30))
    cache_path = tmp_path / "cache.jsonl"
    full = ResponseCache(cache_path, opener=lambda path: FullDisk(path, room=3000))
    behaviour = ScriptedBehaviour(answer=lambda _: SWIMWEAR, latency_s=0.05)
    with LocalRekognition(behaviour) as server:
        with pytest.raises(CacheWriteError):
            request_moderation_labels(index, full, _live(server.url), labelling_params(workers=2))
        answered = {image for image, status in server.requests if status == 200}
        assert 0 < len(answered) < len(index)  # sending stopped
        # Every paid answer is in the cache or its spill file; the next run pays for none again.
        n_before = len(server.requests)
        results, stats = request_moderation_labels(
            index, ResponseCache(cache_path), _live(server.url), labelling_params(workers=2)
        )
        resent = {image for image, _ in server.requests[n_before:]}
    assert resent == set(index["sha256"]) - answered
    assert stats["n_cached"] == len(answered)
    assert results["status"].eq("answered").all()
    assert not list(tmp_path.glob("cache.jsonl.spill-*"))  # merged into the cache


def test_answers_cached_at_a_higher_min_confidence_are_counted_and_resent_only_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = index_rows(_many_images(tmp_path / "imgs", 3))
    cache_path = tmp_path / "cache.jsonl"
    old = ResponseCache(cache_path)
    with old.exclusive():
        for sha in index["sha256"]:
            old.append(
                {
                    "sha256": sha,
                    "min_confidence": 50.0,
                    "response": {
                        "ModerationLabels": [],
                        "ModerationModelVersion": "7.0",
                        "ContentTypes": [],
                    },
                }
            )
    with LocalRekognition(ScriptedBehaviour(answer=lambda _: SWIMWEAR)) as server:
        results, stats = request_moderation_labels(
            index, ResponseCache(cache_path), _live(server.url), labelling_params()
        )
        assert server.requests == [] and stats["n_cached_above_min_confidence"] == 3
        labels, _ = assign_classes(results, labelling_params())
        assert labels["class_reason"].str.startswith("excluded_unproven_safe").all()
        with pytest.raises(LabellingDryRunError):
            request_moderation_labels(
                index,
                ResponseCache(cache_path),
                _live(server.url),
                labelling_params(dry_run=True, resend_higher_min_confidence=True),
            )
        assert "3 cached answers were requested at a MinConfidence above 20" in (
            capsys.readouterr().out
        )
        request_moderation_labels(
            index,
            ResponseCache(cache_path),
            _live(server.url),
            labelling_params(resend_higher_min_confidence=True),
        )
        assert len(server.requests) == 3


def test_a_min_confidence_above_safe_below_is_refused(demo_index: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="no image could be proven safe"):
        request_moderation_labels(
            demo_index,
            _offline_cache(),
            RekognitionEndpoint(mode="offline"),
            labelling_params(min_confidence=50),
        )


@pytest.mark.slow
def test_kedro_run_of_ingestion_and_labelling_on_the_demo(kedro_project: Path) -> None:
    import mlflow
    from kedro.framework.session import KedroSession

    with KedroSession.create(project_path=kedro_project, env="test") as session:
        session.run(pipeline_names=["ingestion", "labelling"])
    index = pd.read_parquet(kedro_project / "data/02_intermediate/image_index.parquet")
    labels = pd.read_parquet(kedro_project / "data/03_primary/image_labels.parquet")
    assert list(labels.columns) == [*IMAGE_LABELS_COLUMNS, *EXTRA_COLUMNS]
    assert labels["sha256"].tolist() == index["sha256"].tolist()
    # No feedback folder in this copy: every label is Rekognition's.
    assert set(labels["label_source"]) == {"rekognition"}
    assert set(labels["answer_source"]) == {"cache:synthetic-demo"}
    expected = {r["sha256"]: r["demo_expected_class"] for r in demo_records()}
    rows = zip(labels["sha256"], labels["class"], labels["included"], strict=True)
    assert all(expected[s] == (c if included else None) for s, c, included in rows)
    # 8 per class, less the demo's illustrated explicit images and its safe near miss.
    assert labels["class"].value_counts().to_dict() == {
        "non_explicit_nudity": 8,
        "swimwear_or_underwear": 8,
        "explicit_nudity": 7,
        "explicit_sexual_activity": 7,
        "safe": 7,
    }
    assert (kedro_project / "data/08_reporting/label_distribution.png").stat().st_size > 0
    assert not (kedro_project / "data/01_raw/rekognition").exists()  # offline writes nothing

    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    assert run.data.metrics["labelling.n_requests"] == 0
    assert run.data.metrics["labelling.class_count.safe"] == 7
    assert run.data.metrics["labelling.label_source.human"] == 0
    assert run.data.metrics["labelling.label_source.rekognition"] == 37
    assert run.data.metrics["labelling.excluded.excluded_uncertain"] == 1
    # kedro-mlflow records the mapping that produced the labels as run parameters.
    assert run.data.params["labelling.min_confidence"] == "20"
    assert run.data.params["labelling.taxonomy.out_of_scheme.default"] == "not_safe"
    assert run.data.params["labelling.taxonomy.thresholds.positive"] == "50"
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "labelling")]
    assert artifacts == ["labelling/label_distribution.png"]


def test_offline_kedro_run_with_an_unlabelled_image_fails_naming_it(kedro_project: Path) -> None:
    from kedro.framework.session import KedroSession

    extra = kedro_project / "data/01_raw/demo/images/new_upload.png"
    Image.new("RGB", (100, 100), (1, 2, 3)).save(extra)
    with (
        KedroSession.create(project_path=kedro_project, env="test") as session,
        pytest.raises(CacheMissError, match=r"new_upload\.png"),
    ):
        session.run(pipeline_names=["ingestion", "labelling"])


def test_s3_images_go_by_reference_or_are_read_and_converted(
    small_images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        s3_url = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
        s3.create_bucket(Bucket="uploads")
        local = index_rows([small_images[0], small_images[12]])  # a JPEG and a WebP
        keys = ["a/photo.jpg", "a/sticker.webp"]
        for path, key in zip([small_images[0], small_images[12]], keys, strict=True):
            s3.put_object(Bucket="uploads", Key=key, Body=path.read_bytes())
        index = local.assign(uri=[f"s3://uploads/{key}" for key in keys])
        params = labelling_params(
            workers=2, storage_options={"client_kwargs": {"endpoint_url": s3_url}}
        )
        with LocalRekognition(ScriptedBehaviour(answer=lambda _: SWIMWEAR)) as server:
            results, stats = request_moderation_labels(
                index, ResponseCache(tmp_path / "c.jsonl"), _live(server.url), params
            )
            sent = {image for image, _ in server.requests}
    finally:
        moto.stop()
    # The JPEG is passed by reference; the WebP had to be downloaded and re-encoded as JPEG.
    assert "uploads/a/photo.jpg" in sent
    assert len(sent) == 2 and stats["n_converted"] == 1
    assert results["status"].eq("answered").all()


def test_label_names_mlflow_refuses_become_valid_metric_names() -> None:
    # Real v7 labels such as "Drugs & Tobacco" and "Blood & Gore" (out of scheme; ignored by
    # default and by configuration here) became metric names with "&", which MLflow rejects:
    # the run failed at the metrics, after every answer had been paid for.
    from mlflow.utils.validation import _validate_metric_name

    response = {
        "ModerationModelVersion": "7.0",
        "ContentTypes": [],
        "ModerationLabels": [
            {"Name": "Drugs & Tobacco", "ParentName": "", "Confidence": 91.0, "TaxonomyLevel": 1},
            {"Name": "Blood & Gore", "ParentName": "Violence", "Confidence": 88.0,
             "TaxonomyLevel": 2},
        ],
    }  # fmt: skip
    results = pd.DataFrame(
        [{"sha256": "a" * 64, "uri": "x.jpg", "status": "answered",
          "response": json.dumps(response), "error_code": None, "label_source": "rekognition"}]
    )  # fmt: skip
    params = labelling_params()
    params["taxonomy"]["out_of_scheme"]["per_label"]["Violence"] = "ignore"
    labels, mapping_stats = assign_classes(results, params)
    assert labels["class"].tolist() == ["safe"]
    _, metrics = report_label_distribution(labels, {}, mapping_stats)
    assert mapping_stats["ignored_out_of_scheme.Drugs and Tobacco"] == 1.0
    assert "ignored_out_of_scheme.Blood and Gore" in metrics
    for name in metrics:
        _validate_metric_name(f"labelling.{name}")  # raises on a name MLflow refuses


def test_s3_references_pin_the_version_and_refuse_an_object_changed_since_ingestion(
    small_images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        s3_url = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
        for bucket, versioned in (("versioned", True), ("plain", False)):
            s3.create_bucket(Bucket=bucket)
            if versioned:
                s3.put_bucket_versioning(
                    Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
                )
        jpeg, other = small_images[0], small_images[2]
        version = s3.put_object(Bucket="versioned", Key="a.jpg", Body=jpeg.read_bytes())
        # Overwritten after ingestion hashed it: a wrong answer must not be paid and cached.
        s3.put_object(Bucket="plain", Key="b.jpg", Body=other.read_bytes())
        index = index_rows([jpeg])
        changed = index_rows([small_images[4]]).assign(uri="s3://plain/b.jpg")
        index = pd.concat([index.assign(uri="s3://versioned/a.jpg"), changed], ignore_index=True)
        params = labelling_params(storage_options={"client_kwargs": {"endpoint_url": s3_url}})
        with LocalRekognition(ScriptedBehaviour(answer=lambda _: SWIMWEAR)) as server:
            results, _ = request_moderation_labels(
                index, ResponseCache(tmp_path / "c.jsonl"), _live(server.url), params
            )
            sent = [image for image, _ in server.requests]
    finally:
        moto.stop()
    assert sent == ["versioned/a.jpg"]
    record = ResponseCache(tmp_path / "c.jsonl").lookup(index["sha256"][0], 20.0).record
    assert record["request"]["s3_object"]["version_id"] == version["VersionId"]
    by_uri = results.set_index("uri")
    assert by_uri.loc["s3://plain/b.jpg", "error_code"] == "prepare:changed_since_ingestion"
