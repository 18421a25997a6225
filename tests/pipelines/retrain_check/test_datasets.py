"""The champion adapter against a real sqlite registry, and the optional verdict table."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from eyecatcher.pipelines.retrain_check.datasets import ChampionDataset

NAME = "eyecatcher-moderation"


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    # The registry follows the tracking URI; setting a registry URI would outlive the test
    # (MLflow exports it to the environment and never unsets it).
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.set_tracking_uri(None)


def _dataset(tmp_path: Path) -> ChampionDataset:
    return ChampionDataset(
        NAME,
        reference_predictions=str(tmp_path / "{candidate}" / "test_predictions.parquet"),
        quantization_decision=str(tmp_path / "quantization_decision.json"),
    )


def test_no_champion_loads_as_none_with_the_reason(registry, tmp_path: Path) -> None:
    loaded = _dataset(tmp_path).load()
    assert loaded["version"] is None and "champion" in loaded["note"]


def test_the_reference_is_used_only_when_it_belongs_to_the_champion(registry, tmp_path) -> None:
    registry.create_registered_model(NAME)
    version = registry.create_model_version(
        NAME, source=str(tmp_path), tags={"candidate": "cand", "bundle_fingerprint": "abc"}
    )
    registry.set_registered_model_alias(NAME, "champion", version.version)
    dataset = _dataset(tmp_path)
    loaded = dataset.load()
    assert loaded["version"] == str(version.version)
    assert loaded["registered_at"].tzinfo is not None
    assert loaded["reference"] is None and "does not exist" in loaded["reference_note"]

    (tmp_path / "cand").mkdir()
    pd.DataFrame({"sha256": ["a"], "unsafe_score": [0.3]}).to_parquet(
        tmp_path / "cand" / "test_predictions.parquet"
    )
    decision = tmp_path / "quantization_decision.json"
    decision.write_text(json.dumps({"candidates": {"cand": {"fingerprints": {"bundle": "xyz"}}}}))
    loaded = dataset.load()
    assert loaded["reference"] is None and "another bundle" in loaded["reference_note"]

    decision.write_text(json.dumps({"candidates": {"cand": {"fingerprints": {"bundle": "abc"}}}}))
    loaded = dataset.load()
    assert loaded["reference"]["unsafe_score"].tolist() == [0.3]
    assert loaded["tags"]["candidate"] == "cand"
