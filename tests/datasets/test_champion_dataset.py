"""The champion adapter against a real sqlite registry, and the optional verdict table."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from eyecatcher.datasets.champion_dataset import ChampionDataset
from eyecatcher.monitoring.populations import TrainingPopulation, record_training_population
from eyecatcher.monitoring.reference import record_drift_reference

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


def test_no_champion_loads_as_none_with_the_reason(registry, tmp_path: Path) -> None:
    loaded = ChampionDataset(NAME).load()
    assert loaded["version"] is None and "champion" in loaded["note"]


def test_the_reference_and_population_are_those_recorded_with_the_version(
    registry, tmp_path
) -> None:
    registry.create_registered_model(NAME)
    version = registry.create_model_version(NAME, source=str(tmp_path), tags={"candidate": "c"})
    registry.set_registered_model_alias(NAME, "champion", version.version)
    loaded = ChampionDataset(NAME).load()
    assert loaded["version"] == str(version.version)
    assert loaded["registered_at"].tzinfo is not None
    # Registered before references were frozen: said, never replaced by another population.
    assert loaded["reference"] is None and "no frozen drift reference" in loaded["reference_note"]
    assert loaded["training_population"] is None

    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "a").as_uri())
    table = pd.DataFrame({"sha256": ["a"], "class": ["safe"], "unsafe_score": [0.3]})
    population = TrainingPopulation(frozenset({"a"}), ("0" * 16,), 8, "test")
    with mlflow.start_run(experiment_id=experiment):
        record_drift_reference(registry, NAME, str(version.version), table)
        record_training_population(registry, NAME, str(version.version), population)
    loaded = ChampionDataset(NAME).load()
    assert loaded["reference"]["unsafe_score"].tolist() == [0.3]
    assert "scored by the registered version" in loaded["reference_note"]
    assert loaded["training_population"].sha256 == frozenset({"a"})
    assert loaded["training_population"].max_distance == 8
    assert loaded["tags"]["candidate"] == "c"
