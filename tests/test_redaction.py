"""No secret reaches MLflow, logs or reports: names, URIs, the hook, the env resolver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eyecatcher.redaction import (
    REDACTED,
    RedactionHook,
    deployment_env,
    is_secret_name,
    redact,
    redact_uri,
)


@pytest.mark.parametrize(
    "name",
    [
        "aws_secret_access_key",
        "ingestion.storage_options.secret",
        "storage_options.key",
        "storage_options.token",
        "apiToken",
        "db-password",
        "client_kwargs.aws_session_token",
        "MLFLOW_TRACKING_PASSWORD",
        "credentials",
        "connection_string",
        "sentry_dsn",
        "webhook_url",
        "sig",
        "client_cert",
        "private_key",
    ],
)
def test_secret_names_are_recognised(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["tokenizer", "max_tokens", "sort_keys", "region_name", "endpoint_url", "credentials.region"],
)
def test_ordinary_names_stay_visible(name: str) -> None:
    assert not is_secret_name(name)


def test_uris_lose_their_user_and_password_and_secret_query_values() -> None:
    assert redact_uri("https://alice:s3cret@mlflow.example.com/x?token=abc&run=1") == (
        f"https://mlflow.example.com/x?token={REDACTED}&run=1"
    )
    assert redact_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert redact_uri("see postgresql://u:p@db:5432/mlflow now") == (
        "see postgresql://db:5432/mlflow now"
    )


def test_redact_walks_nested_parameters_without_touching_the_original() -> None:
    params = {
        "source": "s3://bucket/x",
        "storage_options": {"key": "AKIA", "secret": "shh", "client_kwargs": {"region": "eu"}},
        "uris": ["https://u:pw@h/a"],
    }
    redacted = redact(params)
    assert redacted["storage_options"] == {
        "key": REDACTED,
        "secret": REDACTED,
        "client_kwargs": {"region": "eu"},
    }
    assert redacted["uris"] == ["https://h/a"]
    assert params["storage_options"]["secret"] == "shh"


def test_the_hook_redacts_what_kedro_mlflow_reads_not_what_the_node_gets() -> None:
    node_inputs = {"params:ingestion": {"storage_options": {"secret": "shh"}}, "image_index": 1}
    hook_copy = dict(node_inputs)  # Kedro hands the hooks a copy of the node's inputs
    RedactionHook().before_node_run(hook_copy)
    # storage_options are recorded by their key names only.
    assert hook_copy["params:ingestion"]["storage_options"] == ["secret"]
    assert node_inputs["params:ingestion"]["storage_options"]["secret"] == "shh"
    run_params = {"runtime_params": {"ingestion": {"api_token": "shh"}}, "env": "local"}
    RedactionHook().before_pipeline_run(run_params)
    assert run_params["runtime_params"] == {"ingestion": {"api_token": REDACTED}}


def test_the_env_resolver_reads_only_allow_listed_non_secret_names(monkeypatch) -> None:
    monkeypatch.setenv("EYECATCHER_S3_PREFIX", "s3://b/p")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    assert deployment_env("EYECATCHER_S3_PREFIX") == "s3://b/p"
    assert deployment_env("MLFLOW_REGISTRY_URI", "fallback") == "fallback"
    for name in ("AWS_SECRET_ACCESS_KEY", "HOME", "MLFLOW_TRACKING_TOKEN"):
        with pytest.raises(ValueError, match="not allowed"):
            deployment_env(name)


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found.extend(f"{path}: {n!r}" for n in needles if n in data)
    return found


def test_a_secret_passed_as_params_is_found_nowhere(kedro_project: Path) -> None:
    secret, token, password = "S3CR3T-Zq81x", "T0KEN-Pw77q", "PASSW0RD-Lk29"
    sig, credential = "SIG-Qm55v", "CR3D-Hx31"
    params = ",".join(
        [
            f"ingestion.storage_options.secret={secret}",
            f"ingestion.storage_options.client_kwargs.aws_session_token={token}",
            # A URL with a user:password@ and a SAS-style signature in its query.
            "ingestion.storage_options.client_kwargs.endpoint_url="
            f"https://alice:{password}@s3.example.com/x?sig={sig}",
        ]
    )
    # credentials.yml is read by Kedro for every run; nothing of it may be recorded.
    (kedro_project / "conf" / "local" / "credentials.yml").write_text(
        f"canary_store:\n  secret: {credential}\n  connection_string: {credential}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--env", "test", "--pipelines", "ingestion",
         "--params", params],
        cwd=kedro_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    needles = [n.encode() for n in (secret, token, password, sig, credential)]
    db = kedro_project / "mlruns" / "mlflow.db"
    assert db.is_file() and db.stat().st_size > 0
    assert _files_containing(kedro_project / "mlruns", needles) == []
    assert _files_containing(kedro_project / "data", needles) == []
    for needle in (secret, token, password, sig, credential):
        assert needle not in result.stdout and needle not in result.stderr
    # Recorded by key name: the run still says which storage options were given.
    assert b"['client_kwargs', 'secret']" in db.read_bytes()


def test_the_hook_stops_mlflow_printing_a_tracking_uri_with_credentials(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "http://u:PW-Zx9@127.0.0.1:5000")
    monkeypatch.setattr(mlflow, "get_registry_uri", lambda: "http://u:PW-Zx9@127.0.0.1:5000")
    with caplog.at_level("WARNING", logger="eyecatcher.redaction"):
        RedactionHook().before_pipeline_run({"runtime_params": {}})
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"
    assert "The MLflow URI http://127.0.0.1:5000 carries credentials" in caplog.text
    assert "PW-Zx9" not in caplog.text

    # A URI without credentials keeps MLflow's run links.
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "sqlite:///mlruns/mlflow.db")
    monkeypatch.setattr(mlflow, "get_registry_uri", lambda: "sqlite:///mlruns/mlflow.db")
    RedactionHook().before_pipeline_run({"runtime_params": {}})
    assert "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in os.environ
