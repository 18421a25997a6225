"""The serving pipeline against a REAL `mlflow models serve` process on 127.0.0.1.

One temporary registry (the real served pyfunc on a tiny ``test_resnet``) and one server are
started per module; every wait is bounded and the server is always stopped in teardown.
"""

from __future__ import annotations

import _thread
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests

from eyecatcher.images import sha256_bytes
from eyecatcher.pipelines.serving.nodes import (
    SmokeTestFailedError,
    enforce_smoke_test,
    resolve_serving_champion,
    select_smoke_test_images,
    staging_smoke_test,
)
from eyecatcher.pipelines.serving.settings import ServingSettings
from eyecatcher.pipelines.serving.staging import Observations, monitoring_metrics, server_for
from eyecatcher.registry.client import absolute_tracking_uri
from eyecatcher.registry.resolve import ChampionNotFoundError, resolve_champion
from eyecatcher.serving.client import (
    compare_predictions,
    dataframe_split_body,
    latency_summary,
    normalise_prediction,
)
from eyecatcher.serving.probes import bad_request_probes, run_probe, sample_jpeg
from eyecatcher.serving.process import (
    ModelServer,
    ServerStartError,
    _group_alive,
)
from eyecatcher.serving_model.contract import (
    DEFAULT_MAX_EXPLAIN_ROWS,
    DEFAULT_MAX_ROWS,
    encode_image,
)
from tests.pipelines.serving.tiny_champion import (
    MAX_IMAGE_BYTES,
    MODEL_NAME,
    TinyRegistry,
    tiny_registry,
)

REPO = Path(__file__).resolve().parents[3]
DEMO_IMAGES = REPO / "data" / "01_raw" / "demo" / "images"
SERVER_START_TIMEOUT_S = 240
PARAMS = {
    "model_name": MODEL_NAME,
    "alias": "champion",
    "host": "127.0.0.1",
    "port": None,
    "workers": 1,
    "startup_timeout_s": SERVER_START_TIMEOUT_S,
    "client_timeout_s": 60,
    "server_request_timeout_s": 60,
    "smoke_test": {"split": "test", "max_images": 6, "tolerance": 1e-5},
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyRegistry]:
    with tiny_registry(tmp_path_factory.mktemp("serving-registry")) as created:
        yield created


@pytest.fixture(scope="module")
def server(registry: TinyRegistry) -> Iterator[ModelServer]:
    """One real scoring server for the module, serving the champion by alias."""
    served = ModelServer(
        f"models:/{registry.model_name}@champion",
        tracking_uri=registry.tracking_uri,
        log_dir=registry.root / "server-log",
    )
    try:
        served.start()
        served.wait_until_ready(timeout_s=SERVER_START_TIMEOUT_S)
        yield served
    finally:
        served.stop()
        assert not served.is_running()


def demo_manifest(n_per_split: int = 6) -> pd.DataFrame:
    """A split manifest over real demo files (absolute paths), all in the test split."""
    files = sorted(p for p in DEMO_IMAGES.rglob("*") if p.suffix.lower() in {".jpg", ".png"})
    files = files[:n_per_split]
    return pd.DataFrame(
        {
            "sha256": [f"{i:064x}" for i in range(len(files))],
            "uri": [str(p) for p in files],
            "class": ["safe" if i % 2 else "explicit_nudity" for i in range(len(files))],
            "split": ["test"] * len(files),
            "group": list(range(len(files))),
        }
    )


def good_body(seed: int = 3) -> bytes:
    return json.dumps(dataframe_split_body([encode_image(sample_jpeg(seed=seed))], ["ok"])).encode()


# -- units ------------------------------------------------------------------------------------


def test_relative_sqlite_uri_is_made_absolute(tmp_path: Path) -> None:
    assert absolute_tracking_uri("sqlite:///mlruns/mlflow.db", tmp_path) == (
        f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    )
    assert absolute_tracking_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert absolute_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_smoke_images_cover_every_class_within_the_budget() -> None:
    manifest = pd.DataFrame(
        {
            "sha256": [f"{i:02d}" for i in range(12)],
            "uri": [f"img{i}.jpg" for i in range(12)],
            "class": ["a"] * 8 + ["b"] * 2 + ["c"] * 2,
            "split": ["test"] * 10 + ["train"] * 2,
        }
    )
    chosen = select_smoke_test_images(manifest, "test", max_images=3)
    assert len(chosen) == 3
    assert set(chosen["class"]) == {"a", "b"}  # "c" exists only in train
    with pytest.raises(ValueError, match="no 'validation' images"):
        select_smoke_test_images(manifest, "validation", None)
    with pytest.raises(ValueError, match="lacks the columns"):
        select_smoke_test_images(manifest.drop(columns="uri"), "test", None)


def test_a_misspelt_serving_key_is_refused_before_the_registry_is_asked() -> None:
    with pytest.raises(ValueError, match=r"'foregrond' \(did you mean 'foreground'\?\)"):
        resolve_serving_champion({**PARAMS, "foregrond": True})
    with pytest.raises(ValueError, match=r"serving.smoke_test parameter\(s\) 'max_imags'"):
        resolve_serving_champion({**PARAMS, "smoke_test": {"max_imags": 3}})


def test_the_server_gets_the_settings_and_its_environment_as_text(tmp_path: Path) -> None:
    settings = ServingSettings.parse({**PARAMS, "workers": 2, "server_env": {"OMP_NUM_THREADS": 1}})
    champion = {
        "model_uri": f"models:/{MODEL_NAME}/1",
        "tracking_uri": "sqlite:///a.db",
        "registry_uri": "sqlite:///b.db",
    }
    server = server_for(champion, settings, str(tmp_path))  # not started
    assert (server.host, server.workers, server.request_timeout_s) == ("127.0.0.1", 2, 60)
    assert server.extra_env == {"OMP_NUM_THREADS": "1", "MLFLOW_REGISTRY_URI": "sqlite:///b.db"}


def test_compare_predictions_names_each_difference() -> None:
    local = normalise_prediction(
        {
            "class": "safe",
            "probabilities": {"safe": 0.7, "explicit": 0.3},
            "unsafe_score": 0.3,
            "decision": "allow",
            "model_version": "1",
            "error": None,
        }
    )
    same = normalise_prediction({**local, "probabilities": json.dumps(local["probabilities"])})
    assert compare_predictions(same, local, 1e-6) == []
    other = normalise_prediction(
        {
            **local,
            "class": "explicit",
            "probabilities": {"safe": 0.4, "explicit": 0.6},
            "unsafe_score": 0.6,
        }
    )
    problems = compare_predictions(other, local, 1e-6)
    assert any(p.startswith("class:") for p in problems)
    assert any(p.startswith("probabilities[safe]") for p in problems)
    assert any(p.startswith("unsafe_score") for p in problems)


def test_latency_summary_percentiles() -> None:
    summary = latency_summary([float(v) for v in range(1, 101)])
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p95_ms"] == pytest.approx(95.05)
    assert summary["mean_ms"] == pytest.approx(50.5)


def test_failed_report_fails_the_run_with_every_reason() -> None:
    report = {
        "model_uri": "models:/m/1",
        "passed": False,
        "failures": ["2 predictions differ", "bad request 'not_json' was not handled"],
    }
    with pytest.raises(SmokeTestFailedError, match=r"2 predictions differ.*not_json"):
        enforce_smoke_test(report)


# -- registry ---------------------------------------------------------------------------------


def test_monitoring_metrics_count_failed_requests_as_errors() -> None:
    seen = Observations(latencies=[10.0, 30.0, 20.0])
    seen.answers = [
        {"id": "a", "class": "safe", "unsafe_score": 0.1, "decision": "allow", "error": None},
        {"id": "b", "class": "explicit", "unsafe_score": 0.9, "decision": "block", "error": None},
        {"id": "c", "class": "safe", "unsafe_score": 0.2, "decision": "allow", "error": None},
        {"id": "d", "error": "HTTP 500"},
    ]
    metrics = {k: v["value"] for k, v in monitoring_metrics(seen).items()}
    assert metrics["items"] == 4
    assert metrics["error_rate"] == 0.25
    assert metrics["decision_rate.allow"] == pytest.approx(2 / 3)
    assert metrics["decision_rate.block"] == pytest.approx(1 / 3)
    assert metrics["decision_rate.review"] == 0.0
    assert metrics["unsafe_score.p50"] == pytest.approx(0.2)
    assert metrics["latency_ms.p50"] == 20.0
    assert metrics["latency_ms.p95"] == pytest.approx(29.0)


def test_champion_is_resolved_to_a_pinned_version(registry: TinyRegistry) -> None:
    champion = resolve_champion(PARAMS)
    assert champion["version"] == "1"
    assert champion["model_uri"] == f"models:/{MODEL_NAME}/1"
    assert champion["alias_uri"] == f"models:/{MODEL_NAME}@champion"
    assert champion["tracking_uri"] == registry.tracking_uri


def test_missing_champion_is_a_clear_error(registry: TinyRegistry) -> None:
    with pytest.raises(ChampionNotFoundError, match=r"has the alias 'champion'.*kedro run"):
        resolve_champion({**PARAMS, "model_name": "no-such-model"})
    with pytest.raises(ChampionNotFoundError, match="alias 'production'"):
        resolve_champion({**PARAMS, "alias": "production"})


# -- the real server --------------------------------------------------------------------------


def test_server_answers_a_base64_jpeg(server: ModelServer) -> None:
    response = requests.post(
        server.url + "/invocations",
        data=good_body(),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    (row,) = response.json()["predictions"]
    assert row["id"] == "ok"
    assert row["error"] is None
    assert row["model_version"] == "1"
    assert row["decision"] in {"allow", "review", "block"}
    assert sum(row["probabilities"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "probe",
    bad_request_probes(MAX_IMAGE_BYTES, DEFAULT_MAX_ROWS, DEFAULT_MAX_EXPLAIN_ROWS),
    ids=lambda probe: probe.name,
)
def test_bad_request_is_named_and_server_survives(server: ModelServer, probe) -> None:
    result = run_probe(server.url, probe, timeout_s=60)
    assert result["handled"], result
    if probe.row_level:
        assert result["status"] == 200
    else:
        assert 400 <= result["status"] < 500
    # The server is still up and a good request still works.
    assert server.is_running()
    response = requests.post(
        server.url + "/invocations",
        data=good_body(),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.json()["predictions"][0]["error"] is None


def test_a_heatmap_is_served_only_for_the_row_that_asks(server: ModelServer) -> None:
    images = [encode_image(sample_jpeg(seed=1)), encode_image(sample_jpeg(seed=2))]
    body = json.dumps(dataframe_split_body(images, ["a", "b"], explain=[True, None])).encode()
    response = requests.post(
        server.url + "/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert first["error"] is None and first["heatmap_png"]
    assert f"class '{first['class']}'" in first["heatmap_info"]
    assert second["error"] is None and second.get("heatmap_png") is None


def test_one_bad_row_does_not_fail_the_others(server: ModelServer) -> None:
    images = [encode_image(sample_jpeg(seed=1)), "%%%", encode_image(sample_jpeg(seed=2))]
    body = json.dumps(dataframe_split_body(images, ["a", "b", "c"])).encode()
    response = requests.post(
        server.url + "/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    rows = response.json()["predictions"]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["error"] is None and rows[2]["error"] is None
    assert rows[1]["error"].startswith("invalid_base64:")


def test_a_server_that_cannot_start_fails_fast_with_its_log(registry: TinyRegistry) -> None:
    broken = ModelServer(f"models:/{MODEL_NAME}/99", tracking_uri=registry.tracking_uri)
    with broken, pytest.raises(ServerStartError, match="exited with code") as caught:
        broken.wait_until_ready(timeout_s=SERVER_START_TIMEOUT_S)
    # The reason is in the quoted log, not only "it died".
    assert "99" in str(caught.value)
    assert not broken.is_running()


def _project_manifest(project: Path) -> pd.DataFrame:
    """A split manifest over the project's demo slice, relative URIs as splitting writes them."""
    files = sorted((project / "data" / "01_raw" / "demo" / "images").rglob("*.*"))[:6]
    return pd.DataFrame(
        {
            "sha256": [sha256_bytes(p.read_bytes()) for p in files],
            "uri": [str(p.relative_to(project)) for p in files],
            "class": ["safe" if i % 2 else "explicit_nudity" for i in range(len(files))],
            "split": ["test"] * len(files),
            "group": list(range(len(files))),
        }
    )


def test_serving_pipeline_smoke_tests_then_serves_until_interrupted(
    registry: TinyRegistry, kedro_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kedro run --pipeline serving` with foreground on: smoke test, serve, Ctrl-C, stop.

    The whole path of the product in one server start: catalog, parameters, the report in
    data/08_reporting and in MLflow, and no orphan process after the interrupt.
    """
    from kedro.framework.session import KedroSession

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    _project_manifest(kedro_project).to_parquet(
        kedro_project / "data" / "05_model_input" / "split_manifest.parquet"
    )
    serving, finished = threading.Event(), threading.Event()

    class _WhenServing(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "foreground mode" in record.getMessage():
                serving.set()

    def interrupt_when_serving() -> None:
        if serving.wait(timeout=SERVER_START_TIMEOUT_S + 120) and not finished.is_set():
            _thread.interrupt_main()  # what Ctrl-C does

    serving_logger = logging.getLogger("eyecatcher.pipelines.serving")
    handler = _WhenServing()
    serving_logger.addHandler(handler)
    # Ctrl-C must raise KeyboardInterrupt however pytest was launched: under `nohup`, CI or
    # `trap '' INT` SIGINT is ignored and interrupt_main() would do nothing.
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_when_serving, daemon=True).start()
    runtime = {
        "serving": {
            "model_name": MODEL_NAME,
            "foreground": True,
            **{k: PARAMS[k] for k in ("startup_timeout_s", "smoke_test")},
        }
    }
    try:
        with KedroSession.create(
            project_path=kedro_project, env="test", runtime_params=runtime
        ) as session:
            session.run(pipeline_names=["serving"])
    finally:
        finished.set()
        serving.set()
        serving_logger.removeHandler(handler)
        signal.signal(signal.SIGINT, previous_sigint)

    report = json.loads((kedro_project / "data/08_reporting/serving_smoke_test.json").read_text())
    assert report["passed"], report["failures"]
    assert report["served_until"] == "interrupted"
    assert report["model_uri"] == f"models:/{MODEL_NAME}/1"
    assert report["n_images"] == 6
    assert report["n_errors"] == 0 and report["n_mismatches"] == 0
    assert 0 < report["latency_ms"]["p50_ms"] <= report["latency_ms"]["p95_ms"]
    names = {probe["name"] for probe in report["bad_request_probes"]}
    assert {
        "invalid_base64",
        "decompression_bomb",
        "extreme_aspect_ratio",
        "too_large_image",
        "too_many_rows",
        "empty_payload",
    } <= names
    assert all(p["handled"] and p["server_alive_after"] for p in report["bad_request_probes"])
    assert (kedro_project / "data/08_reporting/serving_latency.png").stat().st_size > 0
    # No orphan: the server's whole process group is gone.
    assert not _group_alive(int(report["server_pid"]))

    # The same figures are in the MLflow run of this `kedro run`.
    client = mlflow.tracking.MlflowClient(tracking_uri=registry.tracking_uri)
    experiment = client.get_experiment_by_name("eyecatcher")
    (run,) = client.search_runs([experiment.experiment_id], max_results=1)
    metrics = run.data.metrics
    assert metrics["serving.smoke_test.latency_p50_ms"] == pytest.approx(
        report["latency_ms"]["p50_ms"]
    )
    assert metrics["serving.smoke_test.passed"] == 1.0
    # Monitoring: the champion's behaviour on the sent images, as every scoring run logs it.
    n = report["n_images"]
    assert metrics["monitoring.items"] == n
    assert metrics["monitoring.error_rate"] == 0.0
    assert metrics["monitoring.latency_ms.p50"] == pytest.approx(report["latency_ms"]["p50_ms"])
    assert metrics["monitoring.latency_ms.p95"] == pytest.approx(report["latency_ms"]["p95_ms"])
    rates = [v for k, v in metrics.items() if k.startswith("monitoring.decision_rate.")]
    assert len(rates) == 3 and sum(rates) == pytest.approx(1.0)
    assert 0.0 <= metrics["monitoring.unsafe_score.p10"] <= metrics["monitoring.unsafe_score.p90"]
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id, "serving")}
    assert {"serving/serving_smoke_test.json", "serving/serving_latency.png"} <= artefacts


def test_smoke_test_failure_is_reported_then_raised(registry: TinyRegistry) -> None:
    """A manifest pointing at missing files: the report says so and the run fails."""
    champion = resolve_champion(PARAMS)
    manifest = demo_manifest(2).assign(uri=lambda df: df["uri"] + ".missing")
    report, metrics, _, monitoring = staging_smoke_test(
        champion,
        manifest,
        {**PARAMS, "smoke_test": {**PARAMS["smoke_test"], "bad_request_probes": False}},
    )
    assert not report["passed"]
    assert len(report["unreadable_images"]) == 2
    assert any("readable test images" in failure for failure in report["failures"])
    with pytest.raises(SmokeTestFailedError, match="readable test images"):
        enforce_smoke_test(report)
    assert metrics["passed"]["value"] == 0.0
    # Nothing was sent: no rate over nothing is reported as a number.
    assert monitoring == {"items": {"value": 0.0, "step": 0}}
    assert os.environ.get("MLFLOW_TRACKING_URI") == registry.tracking_uri


def test_foreground_mode_refuses_to_serve_a_failed_smoke_test(registry: TinyRegistry) -> None:
    from eyecatcher.pipelines.serving.staging import serve_in_foreground

    never_started = ModelServer(f"models:/{MODEL_NAME}/1", tracking_uri=registry.tracking_uri)
    interim = {"passed": False, "failures": ["1 predictions differ"], "model_uri": "m"}
    assert serve_in_foreground(never_started, interim) == "not served: smoke test failed"
    assert not never_started.is_running()


def test_a_port_already_in_use_is_refused_before_starting() -> None:
    # Otherwise /ping would reach the process already listening there, and the smoke test
    # would judge that server instead of ours.
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        server = ModelServer(f"models:/{MODEL_NAME}/1", port=port)
        with pytest.raises(ServerStartError, match=f"127.0.0.1:{port} is already in use"):
            server.start()
        assert server.pid is None and not server.is_running()
    assert server.stop() is None
