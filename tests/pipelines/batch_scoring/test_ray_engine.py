"""Batch scoring on Ray (local mode): same verdicts as the local engine, crashes, bad files, S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eyecatcher.distributed.session import check_pool_fits, ray_session
from eyecatcher.pipelines.batch_scoring.nodes import list_images_to_score, score_images
from eyecatcher.pipelines.batch_scoring.ray_engine import RegistryChampionScorer, score_with_ray
from eyecatcher.pipelines.batch_scoring.scoring import VERDICT_COLUMNS, batch_summary
from eyecatcher.pipelines.batch_scoring.settings import BatchScoringSettings
from eyecatcher.pipelines.batch_scoring.shadow import resolve_shadow, score_shadow
from eyecatcher.registry.resolve import resolve_champion
from tests.image_factory import good_images
from tests.pipelines.batch_scoring.test_pipeline import run_metrics
from tests.pipelines.batch_scoring.test_shadow import SHADOW_COLUMNS, register_challenger
from tests.pipelines.serving.tiny_champion import CLASSES, MODEL_NAME, TinyRegistry, tiny_registry

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")

REPO = Path(__file__).resolve().parents[3]
DEMO_IMAGES = REPO / "data" / "01_raw" / "demo" / "images"
PARAMS = {
    "model_name": MODEL_NAME,
    "alias": "champion",
    "recursive": True,
    "extensions": [".jpg", ".png", ".webp"],
    "batch_size": 4,
    "storage_options": {},
    "engine": "ray",
    "ray": {"workers": 2, "max_restarts": 2},
}
#: What a worker sees: fake AWS credentials (moto), and the repository on its import path so
#: that the crashing scorer below can be unpickled there.
WORKER_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray (2 CPUs, 127.0.0.1, no dashboard) for the whole module."""
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": WORKER_ENV},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyRegistry]:
    with tiny_registry(tmp_path_factory.mktemp("ray-registry")) as created:
        yield created


@pytest.fixture(scope="module")
def champion(registry: TinyRegistry) -> dict:
    return resolve_champion(PARAMS)


class CrashingScorer(RegistryChampionScorer):
    """Kills its worker process on the first batch holding a ``crash-*`` file.

    A marker file beside that image records the death, so the retried batch succeeds: the
    test sees what a worker lost to a node failure or the OOM killer looks like.
    """

    def score(self, paths: list[str]) -> list[dict]:
        for path in paths:
            marker = Path(path).with_name(".crashed")
            if Path(path).name.startswith("crash-") and not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
        return super().score(paths)


def test_ray_verdicts_equal_local_verdicts_on_the_demo(
    local_ray: None, champion: dict, registry: TinyRegistry
) -> None:
    params = {**PARAMS, "source": str(DEMO_IMAGES)}
    listed = list_images_to_score(params)
    local, local_summary = score_images(listed, champion, {**params, "engine": "local"})
    on_ray, ray_summary = score_images(listed, champion, params)
    assert list(on_ray.columns) == [*VERDICT_COLUMNS, "scored_at"]
    assert on_ray["path"].tolist() == listed["path"].tolist() == local["path"].tolist()
    assert on_ray["class"].tolist() == local["class"].tolist()
    assert on_ray["decision"].tolist() == local["decision"].tolist()
    assert on_ray["error"].isna().all() and local["error"].isna().all()
    np.testing.assert_allclose(
        on_ray["unsafe_score"].to_numpy(float), local["unsafe_score"].to_numpy(float), atol=1e-5
    )
    ray_probs = np.array([[json.loads(p)[c] for c in CLASSES] for p in on_ray["probabilities"]])
    local_probs = np.array([[json.loads(p)[c] for c in CLASSES] for p in local["probabilities"]])
    np.testing.assert_allclose(ray_probs, local_probs, atol=1e-5)
    assert ray_summary["engine"] == "ray" and local_summary["engine"] == "local"
    same = {"n_images", "n_scored", "n_errors", "decisions", "classes", "model_version"}
    assert {k: ray_summary[k] for k in same} == {k: local_summary[k] for k in same}
    assert ray_summary["n_retried"] == 0


def _folder_with_bad_files(root: Path, n_good: int) -> Path:
    images = good_images(seed=7)
    root.mkdir(parents=True)
    names = ["rgb.jpg", "rgba.png", "rgb.webp", "gray.png"]
    for i in range(n_good):
        name = names[i % len(names)]
        (root / f"good-{i:02d}{Path(name).suffix}").write_bytes(images[name])
    (root / "cut.jpg").write_bytes(images["rgb.jpg"][: len(images["rgb.jpg"]) // 2])
    (root / "notes.png").write_bytes(b"not an image at all")
    return root


def test_a_worker_killed_mid_run_and_bad_files_lose_no_image_and_score_none_twice(
    local_ray: None, champion: dict, tmp_path: Path
) -> None:
    """One Ray run (each costs actor starts): bad files give row errors, a dead worker a retry."""
    root = _folder_with_bad_files(tmp_path / "incoming", n_good=14)
    (root / "crash-here.jpg").write_bytes(good_images(seed=7)["rgb.jpg"])
    params = {**PARAMS, "source": str(root)}
    paths = [*list_images_to_score(params)["path"].tolist(), str(root / "vanished.jpg")]
    settings = BatchScoringSettings.parse(params)
    table, report = score_with_ray(paths, champion, settings, scorer_cls=CrashingScorer)
    assert (root / ".crashed").exists(), "the worker never died: the test proved nothing"
    assert table["path"].tolist() == paths  # each image once, in the listing's order
    # The driver saw the one batch lost with its worker and sent it again, once.
    assert report.retried_batches == 1 and report.retried_rows == PARAMS["batch_size"]
    assert report.lost_actors == 1 and report.failures == [report.failures[0]]
    retried = report.retried_rows
    errors = table.set_index(table["path"].map(lambda p: Path(p).name))["error"]
    assert errors["cut.jpg"].startswith("truncated:")
    assert errors["notes.png"].startswith("not_an_image:")
    assert errors["vanished.jpg"].startswith("unreadable:")
    assert errors.drop(["cut.jpg", "notes.png", "vanished.jpg"]).isna().all()
    summary = batch_summary(table, champion, settings.source, n_retried=retried, engine="ray")
    assert summary["errors_by_reason"] == {"truncated": 1, "not_an_image": 1, "unreadable": 1}
    assert summary["n_scored"] + summary["n_errors"] == summary["n_images"] == len(paths)
    assert summary["n_scored"] == 15 and summary["n_retried"] == retried


class FailingOnceScorer(RegistryChampionScorer):
    """Raises (a bug, not a lost node: the job fails) on the first batch holding ``z-fail*``."""

    def score(self, paths: list[str]) -> list[dict]:
        for path in paths:
            marker = Path(path).with_name(".failed")
            if Path(path).name.startswith("z-fail") and not marker.exists():
                marker.write_text("failed once")
                raise RuntimeError("the job dies here")
        return super().score(paths)


def test_a_ray_job_that_failed_resumes_from_the_batches_it_finished(
    local_ray: None, champion: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver stages each batch as it comes back: the rerun scores only the lost batch."""
    from eyecatcher.datasets.verdict_history_dataset import VerdictHistoryDataset
    from eyecatcher.datasets.verdict_table_dataset import VerdictTableDataset
    from eyecatcher.pipelines.batch_scoring import ray_engine

    root = tmp_path / "incoming"
    root.mkdir()
    for i in range(10):
        name = "z-fail.jpg" if i == 9 else f"img-{i:02d}.jpg"
        (root / name).write_bytes(good_images(seed=200 + i)["rgb.jpg"])
    # One worker: batches finish in order, so the three before the failing one are staged.
    params = {**PARAMS, "source": str(root), "ray": {"workers": 1}}
    listed = list_images_to_score(params)
    folder = str(tmp_path / "verdicts")
    history = VerdictHistoryDataset(folder).load()
    original = ray_engine.score_with_ray

    def with_failing_scorer(*args, **kwargs):
        return original(*args, scorer_cls=FailingOnceScorer, **kwargs)

    monkeypatch.setattr(ray_engine, "score_with_ray", with_failing_scorer)
    with pytest.raises(ray.exceptions.RayTaskError, match="the job dies here"):
        score_images(listed, champion, params, history)
    assert len(history.staged(MODEL_NAME, "1")) == 8  # batches 1-2 of 3 (4 + 4 images)
    table, summary = score_images(listed, champion, params, history)
    assert summary["n_resumed"] == 8 and summary["n_images"] == 10
    VerdictTableDataset(folder).save(table)
    local, _ = score_images(listed, champion, {**params, "engine": "local"})
    saved = VerdictTableDataset(folder).load()
    assert saved["path"].tolist() == local["path"].tolist()
    assert saved["decision"].tolist() == local["decision"].tolist()
    np.testing.assert_allclose(
        saved["unsafe_score"].to_numpy(float), local["unsafe_score"].to_numpy(float), atol=1e-5
    )
    assert history.staged(MODEL_NAME, "1") is None


def test_s3_prefix_is_scored_on_ray(
    local_ray: None, moto_s3: str, champion: dict, registry: TinyRegistry
) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    s3.create_bucket(Bucket="uploads")
    images = good_images(seed=2)
    s3.put_object(Bucket="uploads", Key="incoming/a.jpg", Body=images["rgb.jpg"])
    s3.put_object(Bucket="uploads", Key="incoming/b.png", Body=images["gray.png"])
    cut = images["rgb.jpg"][: len(images["rgb.jpg"]) // 2]
    s3.put_object(Bucket="uploads", Key="incoming/cut.jpg", Body=cut)
    params = {
        **PARAMS,
        "source": "s3://uploads/incoming",
        "storage_options": {"client_kwargs": {"endpoint_url": moto_s3}},
        "ray": {"workers": 1},
    }
    listed = list_images_to_score(params)
    on_ray, summary = score_images(listed, champion, params)
    local, _ = score_images(listed, champion, {**params, "engine": "local"})
    assert on_ray["path"].tolist() == [
        "s3://uploads/incoming/" + n for n in ("a.jpg", "b.png", "cut.jpg")
    ]
    assert on_ray["error"].isna().tolist() == [True, True, False]
    assert on_ray.loc[2, "error"].startswith("truncated:")
    np.testing.assert_allclose(
        on_ray["unsafe_score"][:2].to_numpy(float),
        local["unsafe_score"][:2].to_numpy(float),
        atol=1e-5,
    )
    assert summary["n_scored"] == 2 and summary["engine"] == "ray"


def test_shadow_scoring_on_ray_equals_the_local_engine(
    local_ray: None, champion: dict, registry: TinyRegistry, tmp_path: Path
) -> None:
    """``batch_scoring.shadow_model`` with ``engine: ray``: same shadow columns and report."""
    assert register_challenger() == "2"
    root = _folder_with_bad_files(tmp_path / "incoming", n_good=6)
    params = {**PARAMS, "source": str(root), "shadow_model": "challenger"}
    listed = list_images_to_score(params)
    shadow = resolve_shadow(params)
    outputs = {}
    for engine in ("local", "ray"):
        engine_params = {**params, "engine": engine}
        champion_verdicts, _ = score_images(listed, champion, engine_params)
        outputs[engine] = score_shadow(listed, champion_verdicts, champion, shadow, engine_params)
    (local, local_report, local_metrics, _), (on_ray, ray_report, ray_metrics, _) = (
        outputs["local"],
        outputs["ray"],
    )
    assert (
        list(on_ray.columns)
        == list(local.columns)
        == [
            *VERDICT_COLUMNS,
            "scored_at",
            *SHADOW_COLUMNS,
        ]
    )
    assert (on_ray["shadow_model_version"] == "2").all()
    for column in ("path", "shadow_class", "shadow_decision", "shadow_model_version"):
        assert on_ray[column].tolist() == local[column].tolist(), column
    assert on_ray["shadow_error"].notna().tolist() == local["shadow_error"].notna().tolist()
    assert on_ray["shadow_error"].notna().sum() == 2  # the cut and the non-image file
    np.testing.assert_allclose(
        on_ray["shadow_unsafe_score"].to_numpy(float),
        local["shadow_unsafe_score"].to_numpy(float),
        atol=1e-5,
    )
    assert ray_report["n_disagreements"] > 0  # the test compares real disagreements
    for key in ("compared", "errors", "n_disagreements", "confusion", "shadow_model_version"):
        assert ray_report[key] == local_report[key], key
    for key in ("decision_agreement_rate", "class_agreement_rate"):
        assert ray_report[key] == pytest.approx(local_report[key], abs=1e-9)
    # As sets: rows are listed by score gap, and gaps equal within 1e-5 may swap places.
    assert {row["path"] for row in ray_report["disagreements"]} == {
        row["path"] for row in local_report["disagreements"]
    }
    assert ray_metrics.keys() == local_metrics.keys()


def test_settings_are_checked_before_any_work(champion: dict) -> None:
    listed = pd.DataFrame({"path": ["x.jpg"]})
    with pytest.raises(ValueError, match=r"'wokers' \(did you mean 'workers'\?\)"):
        score_images(listed, champion, {**PARAMS, "source": ".", "ray": {"wokers": 2}})
    settings = BatchScoringSettings.parse({**PARAMS, "source": ".", "ray": {"workers": 0}})
    with pytest.raises(ValueError, match="workers >= 1"):
        score_with_ray(["x.jpg"], champion, settings)


def test_a_running_ray_is_reused_and_left_running(local_ray: None) -> None:
    with ray_session(num_cpus=1) as where:
        assert where == "existing"
    assert ray.is_initialized()


def test_a_pool_larger_than_the_local_ray_is_refused_not_left_waiting(local_ray: None) -> None:
    check_pool_fits(2, 1.0, "local")
    with pytest.raises(ValueError, match="need 3 CPUs; this Ray has 2"):
        check_pool_fits(3, 1.0, "local")
    check_pool_fits(3, 1.0, "ray://head:10001")  # a cluster may still grow: a warning only


def test_kedro_run_with_the_ray_engine_starts_and_stops_its_own_ray(
    registry: TinyRegistry, kedro_project: Path
) -> None:
    """The command a user types, in a fresh process: RAY_ADDRESS unset → a local Ray."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "MLFLOW_REGISTRY_URI": registry.tracking_uri,
    }
    env.pop("RAY_ADDRESS", None)
    params = (
        f"batch_scoring.engine=ray,batch_scoring.model_name={MODEL_NAME},"
        "batch_scoring.ray.num_cpus=2"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kedro",
            "run",
            "--env",
            "test",
            "--pipelines",
            "batch_scoring",
            "--params",
            params,
        ],
        check=False,
        cwd=kedro_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_parquet(kedro_project / "data/07_model_output/batch_verdicts")
    summary = json.loads(
        (kedro_project / "data/08_reporting/batch_scoring_summary.json").read_text()
    )
    assert summary["engine"] == "ray" and summary["n_images"] == len(table) > 0
    assert summary["n_scored"] + summary["n_errors"] == summary["n_images"]
    assert run_metrics(registry.tracking_uri)["monitoring.items"] == len(table)
