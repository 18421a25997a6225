"""The logging door: everything recorded in MLflow is redacted; storage_options by key name."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from eyecatcher import mlflow_log
from eyecatcher.redaction import REDACTED, is_secret_name, redact_uri

SECRET = "S3CR3T-canary-81"


@pytest.mark.parametrize(
    "name",
    [
        "connection_string",
        "AZURE_STORAGE_CONNECTION_STRING",
        "connectionString",
        "dsn",
        "sentry_dsn",
        "webhook_url",
        "slackWebhookUrl",
        "sig",
        "cert",
        "client_cert",
        "private_key",
        "privateKey",
        "ssl-certificate",
    ],
)
def test_the_word_list_covers_connection_strings_dsns_webhooks_signatures_and_keys(
    name: str,
) -> None:
    assert is_secret_name(name)


def test_a_sas_signature_and_a_user_password_leave_a_url() -> None:
    url = f"https://acct.blob.core.windows.net/c/x.jpg?sv=2024&sig={SECRET}&sp=r"
    assert (
        redact_uri(url) == f"https://acct.blob.core.windows.net/c/x.jpg?sv=2024&sig={REDACTED}&sp=r"
    )
    assert SECRET not in redact_uri(f"s3://alice:{SECRET}@bucket/key")


def test_storage_options_are_recorded_by_key_name_only() -> None:
    config = {
        "architecture": "test_resnet",
        "storage_options": {
            "client_kwargs": {"endpoint_url": f"http://u:{SECRET}@127.0.0.1:9000"},
            "profile": SECRET,
        },
        "nested": {"ingestion": {"storage_options": {"anon": False}}},
        "report_uri": f"https://alice:{SECRET}@mlflow.example.com/x?token={SECRET}&run=1",
    }
    safe = mlflow_log.safe_record(config)
    assert safe["storage_options"] == ["client_kwargs", "profile"]
    assert safe["nested"]["ingestion"]["storage_options"] == ["anon"]
    assert safe["report_uri"] == f"https://mlflow.example.com/x?token={REDACTED}&run=1"
    assert SECRET not in repr(safe)
    assert config["storage_options"]["profile"] == SECRET  # the original is untouched


def test_flattened_params_inside_storage_options_keep_their_name_not_their_value() -> None:
    tags = mlflow_log.safe_tags(
        {
            "storage_options.client_kwargs.endpoint_url": "http://127.0.0.1:9000",
            "storage_options.profile": SECRET,
            "epochs": 3,
            "db.connection_string": SECRET,
        }
    )
    assert tags == {
        "storage_options.client_kwargs.endpoint_url": REDACTED,
        "storage_options.profile": REDACTED,
        "epochs": "3",
        "db.connection_string": REDACTED,
    }


def test_what_reaches_the_store_is_redacted(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("door", artifact_location=tmp_path.as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow_log.log_params({"storage_options.key": SECRET, "webhook_url": SECRET})
            mlflow_log.set_tags({"source": f"s3://bucket/x?sig={SECRET}"})
            mlflow_log.log_dict({"storage_options": {"secret": SECRET}}, "report.json")
            mlflow_log.log_dict({"settings": {"dsn": SECRET}}, "report.yaml")
            mlflow_log.log_text(f"see https://u:{SECRET}@host/x", "note.txt")
        stored = MlflowClient(tracking_uri=uri).get_run(run.info.run_id).data
    finally:
        mlflow.set_tracking_uri(None)
    assert SECRET not in repr(stored.params) + repr(stored.tags)
    assert stored.params["storage_options.key"] == REDACTED
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
