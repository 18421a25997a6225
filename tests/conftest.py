"""Shared fixtures: a throw-away copy of the Kedro project, offline and tiny.

Tests never write into the repository's own ``data/`` or ``mlruns/``: :func:`kedro_project`
copies the configuration and a slice of the demo into a temporary folder, adds the ``test``
environment from ``tests/conf_test`` (tiny timm models, few epochs), and points MLflow at a
sqlite store inside it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "01_raw" / "demo"

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(autouse=True)
def _mlflow_uris_per_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no process-wide MLflow URI and leaves none behind.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` (in tests, or in code such as the Ray
    engine's driver set-up) are process-global and win over ``MLFLOW_TRACKING_URI``: a URI
    left by one test made a later one resolve ``models:/`` in the wrong store.
    """
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
    monkeypatch.setattr("mlflow.tracking._model_registry.utils._registry_uri", None)


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach AWS with someone's real credentials."""
    for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3 API (moto's server) on 127.0.0.1, on a free port; yields its endpoint URL.

    Fake credentials are set for the duration of the test: the clients sign requests as usual.
    """
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty bucket on :func:`moto_s3`, reached through ``AWS_ENDPOINT_URL``; yields ``s3://…``.

    The endpoint comes from the standard environment variable only (no ``storage_options``),
    which is how a user points the project at MinIO or moto. fsspec keeps one S3 filesystem per
    set of arguments, so its instance cache is cleared: a filesystem made for an earlier
    test's server must not be reused.
    """
    import urllib.request

    import boto3
    import s3fs

    # moto keeps its state per process, not per server: start from an empty S3.
    urllib.request.urlopen(
        urllib.request.Request(f"{moto_s3}/moto-api/reset", method="POST"), timeout=10
    ).close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3)
    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="eyecatcher-test")
    yield "s3://eyecatcher-test"
    s3fs.S3FileSystem.clear_instance_cache()


def copy_demo(dest: Path, per_class: int | None = None) -> Path:
    """Copy the demo images (optionally ``per_class`` of each class) and recorded responses.

    Args:
        dest: The folder that receives ``images/`` and ``rekognition_responses.jsonl``.
        per_class: Keep only this many images per class (by the recorded answers), or all.

    Returns:
        ``dest``.
    """
    from eyecatcher.images import sha256_bytes

    records = [json.loads(line) for line in (DEMO / "rekognition_responses.jsonl").open()]
    wanted = None
    if per_class is not None:
        by_class: dict[str, list[str]] = {}
        for record in records:
            by_class.setdefault(record["demo_class"], []).append(record["sha256"])
        wanted = {sha for shas in by_class.values() for sha in shas[:per_class]}
    images = dest / "images"
    for path in sorted((DEMO / "images").rglob("*")):
        if not path.is_file():
            continue
        if wanted is not None and sha256_bytes(path.read_bytes()) not in wanted:
            continue
        target = images / path.relative_to(DEMO / "images")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    with (dest / "rekognition_responses.jsonl").open("w") as fh:
        for record in records:
            if wanted is None or record["sha256"] in wanted:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
    return dest


@pytest.fixture
def kedro_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary copy of the project with a demo slice (8 images per class) and env ``test``.

    Run pipelines with::

        with KedroSession.create(project_path=kedro_project, env="test") as session:
            session.run(pipeline_names=["ingestion"])
    """
    from kedro.framework.startup import bootstrap_project

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(REPO / "pyproject.toml", project / "pyproject.toml")
    # Kedro checks that the source dir exists; the package itself is installed (editable).
    (project / "src").mkdir()
    shutil.copytree(REPO / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    shutil.copytree(REPO / "tests" / "conf_test", project / "conf" / "test")
    for layer in (
        "02_intermediate",
        "03_primary",
        "04_feature",
        "05_model_input",
        "06_models",
        "07_model_output",
        "08_reporting",
    ):
        (project / "data" / layer).mkdir(parents=True)
    copy_demo(project / "data" / "01_raw" / "demo", per_class=8)
    (project / "mlruns").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    monkeypatch.chdir(project)
    bootstrap_project(project)
    yield project
    # kedro-mlflow ends its run in the store, but MLflow's in-process run stack can still hold
    # it; without this, MLflow's exit handler writes to a store that pytest has deleted.
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
