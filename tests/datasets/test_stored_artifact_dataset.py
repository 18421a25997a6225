"""StoredArtifactDataset: saved on S3 (moto), logged to the active MLflow run, nothing local."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from PIL import Image

from eyecatcher import storage
from eyecatcher.datasets.stored_artifact_dataset import StoredArtifactDataset


def _run_in(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # An experiment chosen by an earlier test lives in another store: choose one in this store.
    mlflow.set_experiment("stored-artifacts")


def test_a_file_on_s3_is_saved_loaded_and_logged(s3_bucket: str, tmp_path, monkeypatch) -> None:
    _run_in(tmp_path, monkeypatch)
    uri = f"{s3_bucket}/data/08_reporting/report.json"
    dataset = StoredArtifactDataset(
        dataset={"type": "json.JSONDataset", "filepath": uri}, artifact_path="reports"
    )
    try:
        with mlflow.start_run() as run:
            dataset.save({"accuracy": 0.5})
        assert json.loads(storage.read_bytes(uri)) == {"accuracy": 0.5}
        assert dataset.load() == {"accuracy": 0.5}
        assert dataset.exists()
        logged = MlflowClient().download_artifacts(run.info.run_id, "reports/report.json")
        assert json.loads(Path(logged).read_text()) == {"accuracy": 0.5}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlruns"]
    finally:
        mlflow.set_tracking_uri(None)


def test_a_folder_on_s3_is_logged_with_its_files(s3_bucket: str, tmp_path, monkeypatch) -> None:
    _run_in(tmp_path, monkeypatch)
    dataset = StoredArtifactDataset(
        dataset={
            "type": "partitions.PartitionedDataset",
            "path": f"{s3_bucket}/data/08_reporting/cand/explanations",
            "dataset": "pillow.ImageDataset",
            "filename_suffix": ".png",
        },
        artifact_path="cand",
    )
    images = {name: Image.new("RGB", (4, 4)) for name in ("a", "b")}
    try:
        with mlflow.start_run() as run:
            dataset.save(images)
        logged = MlflowClient().list_artifacts(run.info.run_id, "cand/explanations")
        assert sorted(Path(a.path).name for a in logged) == ["a.png", "b.png"]
    finally:
        mlflow.set_tracking_uri(None)


def test_without_an_active_run_it_only_saves(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/data/x.json"
    StoredArtifactDataset(dataset={"type": "json.JSONDataset", "filepath": uri}).save([1])
    assert json.loads(storage.read_bytes(uri)) == [1]
