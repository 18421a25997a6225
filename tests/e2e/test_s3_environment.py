"""`kedro run --env s3`: every dataset on S3 (moto's server), runs and artefacts on a real
`mlflow server` whose artefact store is that S3, a champion registered, nothing under data/.

The servers listen on 127.0.0.1 only. The run uses the s3 environment with the test
environment's tiny parameters merged in (one Kedro environment holds both, as a deployment
would hold its own sizes).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]

BUCKET = "eyecatcher-e2e"
PREFIX = f"s3://{BUCKET}/eyecatcher"
MODEL = "eyecatcher-moderation"
SERVER_START_TIMEOUT_S = 120


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _s3_test_env(project: Path) -> str:
    """conf/s3test: conf/s3 (its globals.yml) with tests/conf_test's tiny parameters."""
    env = project / "conf" / "s3test"
    env.mkdir()
    parameters: dict[str, Any] = {}
    for path in sorted((project / "conf" / "s3").glob("*.yml")):
        if path.name.startswith("parameters"):
            parameters = _merge(parameters, yaml.safe_load(path.read_text()))
        else:
            (env / path.name).write_text(path.read_text())
    for path in sorted((REPO / "tests" / "conf_test").glob("parameters*.yml")):
        parameters = _merge(parameters, yaml.safe_load(path.read_text()))
    (env / "parameters.yml").write_text(yaml.safe_dump(parameters, sort_keys=False))
    return env.name


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(moto_s3: str, tmp_path: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1: sqlite backend, artefacts proxied to s3://BUCKET/mlartifacts."""
    port = _free_port()
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_s3, "MLFLOW_S3_ENDPOINT_URL": moto_s3}
    (tmp_path / "server").mkdir()
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server' / 'mlflow.db'}",
         "--artifacts-destination", f"s3://{BUCKET}/mlartifacts",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            assert server.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start in time"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


def _upload(folder: Path, bucket: str, prefix: str) -> int:
    """What `aws s3 sync folder s3://bucket/prefix` does for a fresh prefix; returns the count."""
    import boto3

    client = boto3.client("s3", region_name="us-east-1")
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")
            count += 1
    return count


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kedro_run_env_s3_keeps_everything_on_s3_and_registers_a_champion(
    kedro_project: Path, moto_s3: str, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3)
    # moto keeps its state per process, not per server: start from an empty S3.
    urllib.request.urlopen(
        urllib.request.Request(f"{moto_s3}/moto-api/reset", method="POST"), timeout=10
    ).close()
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    assert _upload(kedro_project / "data" / "01_raw", BUCKET, "eyecatcher/01_raw") > 0
    # The run must read the demo from S3: no local copy is left to fall back on.
    for path in sorted((kedro_project / "data" / "01_raw").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    before = _listing(kedro_project / "data")
    env_name = _s3_test_env(kedro_project)

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "EYECATCHER_S3_PREFIX": PREFIX,
    }
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--env", env_name],
        cwd=kedro_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    (kedro_project / "kedro-run.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr[-5000:]

    assert _listing(kedro_project / "data") == before
    assert not any((kedro_project / "mlruns").iterdir())  # runs went to the server
    keys = {
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for obj in page.get("Contents", [])
    }
    for layer in ("02_intermediate", "03_primary", "04_feature", "05_model_input", "06_models"):
        assert any(k.startswith(f"eyecatcher/{layer}/") for k in keys), layer
    assert "eyecatcher/06_models/test_resnet/model_bundle.pt" in keys
    assert "eyecatcher/08_reporting/registration_report.json" in keys
    assert any(k.startswith("mlartifacts/") for k in keys)  # the server stored artefacts on S3

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    report = json.loads(
        s3.get_object(Bucket=BUCKET, Key="eyecatcher/08_reporting/registration_report.json")[
            "Body"
        ].read()
    )
    assert str(report["version"]) == str(champion.version)
    run = client.get_run(champion.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert {a.path for a in client.list_artifacts(champion.run_id)} >= {"registration"}


def _resolved(env: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]]:
    """The catalog and parameters of ``env`` as Kedro resolves them (JSON text), and globals."""
    from kedro.config import OmegaConfigLoader

    from eyecatcher.settings import CONFIG_LOADER_ARGS

    monkeypatch.setenv("EYECATCHER_S3_PREFIX", PREFIX)
    loader = OmegaConfigLoader(
        conf_source=str(REPO / "conf"), env=env, **{**CONFIG_LOADER_ARGS, "default_run_env": env}
    )
    return json.dumps(loader["catalog"]) + json.dumps(loader["parameters"]), loader["globals"]


def test_s3_environment_is_one_globals_key_over_the_base_catalog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """conf/s3 copies no catalog: its globals.yml moves ``data_root``, and with it every path
    of the base catalog and parameters, under the prefix; base keeps them under data/."""
    assert sorted(p.name for p in (REPO / "conf" / "s3").iterdir()) == ["globals.yml"]

    s3_text, s3_globals = _resolved("s3", monkeypatch)
    assert s3_globals["data_root"] == PREFIX
    assert '"data/' not in s3_text
    assert f'"{PREFIX}/01_raw/demo/images"' in s3_text  # ingestion source, batch scoring
    assert f"{PREFIX}/06_models/{{candidate}}/model_bundle.pt" in s3_text

    base_text, base_globals = _resolved("base", monkeypatch)
    assert base_globals["data_root"] == "data"
    assert "s3://" not in base_text
    # Every path the s3 environment moves is the base path with data/ replaced: same layers.
    assert base_text.replace('"data/', f'"{PREFIX}/') == s3_text
