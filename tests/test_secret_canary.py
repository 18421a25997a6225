"""The secret canary: a secret passed every supported way is found nowhere after a real run.

One ``kedro run`` of the whole default pipeline (env ``test``: tiny timm models, a demo slice)
in a temporary project, with a canary secret in

* every parameter block's ``storage_options`` (found by walking ``conf/base/parameters_*.yml``,
  so a new pipeline is covered without editing this test), given with ``--params``; the
  project ignores ``storage_options`` for local paths, so the run stays offline;
* ``conf/local/credentials.yml``: the AWS entry of the template and an entry that kedro-mlflow
  exports as ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (``server.credentials``);
* the tracking URI's ``user:password@``: runs go to a real ``mlflow server`` on 127.0.0.1 (no
  auth: it ignores the Basic header that ``requests`` builds from the URL's userinfo);
* presigned S3 URL queries (``X-Amz-Signature``, ``X-Amz-Credential``, ``X-Amz-Security-Token``)
  and an Azure SAS ``sig=``, inside ``storage_options`` and in a plain parameter.

Then ``mlruns/`` (the server's sqlite database bytes and its artefact store), ``data/`` (the
model card HTML included), the champion's model files as a server would serve them and the
run's own output are grepped for every canary: no hit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MODEL = "eyecatcher-moderation"
SERVER_START_TIMEOUT_S = 120


def _storage_options_blocks(conf: Path) -> list[str]:
    """Dotted names of every parameter block that has a ``storage_options`` key."""

    def walk(value: Any, prefix: str) -> Iterator[str]:
        if isinstance(value, dict):
            if "storage_options" in value:
                yield prefix
            for key, item in value.items():
                yield from walk(item, f"{prefix}.{key}" if prefix else str(key))

    blocks = []
    for path in sorted(conf.glob("parameters_*.yml")):
        blocks.extend(walk(yaml.safe_load(path.read_text()) or {}, ""))
    return blocks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tracking_server(kedro_project: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with its sqlite store and artefacts under ``mlruns/``."""
    port = _free_port()
    store = kedro_project / "mlruns"
    log_path = kedro_project / "mlflow-server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server",
             "--backend-store-uri", f"sqlite:///{store / 'server.db'}",
             "--artifacts-destination", str(store / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            assert server.poll() is None, log_path.read_text()[-3000:]
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


def _hits(root: Path, canaries: dict[str, str]) -> list[str]:
    """``file: canary name`` for every file under ``root`` holding a canary's bytes."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found.extend(
                f"{path}: {name}" for name, value in canaries.items() if value.encode() in data
            )
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_secret_passed_every_supported_way_is_recorded_nowhere(
    kedro_project: Path, tracking_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process reads the server too (no sqlite store of the fixture gets created).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    blocks = _storage_options_blocks(kedro_project / "conf" / "base")
    # Every pipeline that reads files has such a block (splitting's is nested).
    assert {"ingestion", "training", "registration", "splitting.near_duplicates"} <= set(blocks)

    canaries: dict[str, str] = {}
    params = []
    for block in blocks:
        tag = block.replace(".", "-").upper()
        key, secret, sig = f"CANARY-{tag}-KEY7q", f"CANARY-{tag}-SECRET7q", f"CANARY-{tag}-SIG7q"
        canaries |= {f"{block} key": key, f"{block} secret": secret, f"{block} sig": sig}
        params += [
            f"{block}.storage_options.key={key}",
            f"{block}.storage_options.secret={secret}",
            # A presigned-URL-shaped endpoint: its query holds a signature.
            f"{block}.storage_options.client_kwargs.endpoint_url="
            f"https://bucket.s3.example.com/x?X-Amz-Signature={sig}",
        ]
    # Presigned S3 and SAS queries in a plain (not storage_options) parameter: only the query's
    # secret values must go, the rest of the URL may be recorded.
    canaries |= {
        "X-Amz-Signature": "CANARY-AMZSIG-9w",
        "X-Amz-Credential": "CANARY-AMZCRED-9w",
        "X-Amz-Security-Token": "CANARY-AMZTOKEN-9w",
        "sig": "CANARY-SASSIG-9w",
    }
    params.append(
        "canary.presigned=https://bucket.s3.amazonaws.com/image.jpg"
        "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=CANARY-AMZCRED-9w"
        "&X-Amz-Security-Token=CANARY-AMZTOKEN-9w&X-Amz-Signature=CANARY-AMZSIG-9w"
    )
    params.append(
        "canary.sas=https://acct.blob.core.windows.net/c/i.jpg?sv=2024&sig=CANARY-SASSIG-9w"
    )

    # credentials.yml: the template's AWS entry, and MLflow's own credentials, which
    # kedro-mlflow exports to the environment when mlflow.yml names their entry.
    canaries |= {
        "credentials aws key": "CANARY-CREDKEY-3z",
        "credentials aws secret": "CANARY-CREDSECRET-3z",
        "credentials aws token": "CANARY-CREDTOKEN-3z",
        "credentials mlflow password": "CANARY-CREDMLFLOW-3z",
    }
    conf = kedro_project / "conf"
    (conf / "local" / "credentials.yml").write_text(
        yaml.safe_dump(
            {
                "aws": {
                    "key": "CANARY-CREDKEY-3z",
                    "secret": "CANARY-CREDSECRET-3z",
                    "token": "CANARY-CREDTOKEN-3z",
                },
                "mlflow_server": {
                    "MLFLOW_TRACKING_USERNAME": "canary",
                    "MLFLOW_TRACKING_PASSWORD": "CANARY-CREDMLFLOW-3z",
                },
            }
        )
    )
    mlflow_yml = conf / "base" / "mlflow.yml"
    text = mlflow_yml.read_text()
    assert "  credentials: null\n" in text
    mlflow_yml.write_text(text.replace("  credentials: null\n", "  credentials: mlflow_server\n"))

    # The tracking URI's user:password@.
    canaries["tracking URI password"] = "CANARY-URIPASS-5k"
    tracking_uri = tracking_server.replace("http://", "http://canary:CANARY-URIPASS-5k@")

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "MLFLOW_TRACKING_URI": tracking_uri,
    }
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--env", "test", "--params", ",".join(params)],
        cwd=kedro_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    (kedro_project / "kedro-run.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr[-5000:]

    # The run went to the server, and the server keeps everything under mlruns/.
    client = mlflow.MlflowClient(tracking_uri=tracking_server, registry_uri=tracking_server)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    run = client.get_run(champion.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    db = kedro_project / "mlruns" / "server.db"
    assert db.stat().st_size > 0
    assert not (kedro_project / "mlruns" / "mlflow.db").exists()
    # Recorded by key name: the run still says which storage options were given.
    assert b"['client_kwargs', 'key', 'secret']" in db.read_bytes()

    # The champion's files as `mlflow models serve` would load them.
    served = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{MODEL}@champion",
            dst_path=str(kedro_project / "served"),
            tracking_uri=tracking_server,
        )
    )
    assert (served / "MLmodel").is_file()
    card = kedro_project / "data" / "08_reporting" / "model_card.html"
    assert card.is_file()

    assert _hits(kedro_project / "mlruns", canaries) == []
    assert _hits(kedro_project / "data", canaries) == []
    assert _hits(served, canaries) == []
    assert [name for name, value in canaries.items() if value in card.read_text()] == []
    # The console too: MLflow's own "View run ... at: <URI>" lines are switched off when the
    # URI carries credentials (RedactionHook), which warns with the URI redacted instead.
    console = result.stdout + result.stderr
    assert [name for name, value in canaries.items() if value in console] == []
    assert "🏃 View run" not in console
