"""Resolving an alias or a version: pinned records, and errors that never carry a password."""

from __future__ import annotations

import pytest

from eyecatcher.registry.resolve import (
    ChampionNotFoundError,
    resolve_alias_or_version,
    resolve_champion,
)

PASSWORD = "PASSW0RD-resolve-7"


@pytest.fixture
def unreachable_store_with_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 9 of 127.0.0.1: MLflow's error quotes the URL it called.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{PASSWORD}@127.0.0.1:9")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    # A URI set in process by an earlier test (mlflow.set_tracking_uri) would win over the
    # environment: clear both for this test only.
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
    monkeypatch.setattr("mlflow.tracking._model_registry.utils._registry_uri", None)


@pytest.mark.usefixtures("unreachable_store_with_password")
def test_a_tracking_uris_password_never_reaches_the_error() -> None:
    with pytest.raises(ChampionNotFoundError) as alias_error:
        resolve_champion({"model_name": "m"})
    with pytest.raises(ChampionNotFoundError) as number_error:
        resolve_alias_or_version({"model_name": "m"}, 3, setting="batch_scoring.shadow_model")
    for error in (alias_error, number_error):
        assert PASSWORD not in str(error.value)
        assert "127.0.0.1:9" in str(error.value)
    assert "batch_scoring.shadow_model=3" in str(number_error.value)
