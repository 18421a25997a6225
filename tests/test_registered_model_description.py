"""The registered model's description reads on its own in the MLflow UI (no repository paths)."""

from __future__ import annotations

import re
from pathlib import Path

from mlflow import MlflowClient

from eyecatcher.registry.versions import Registry


def test_registered_model_description_names_no_repository_file(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    Registry("eyecatcher-moderation", client).ensure_model()
    description = client.get_registered_model("eyecatcher-moderation").description
    assert "champion" in description and "model card" in description
    # A path such as docs/registry.md is a dead link in the UI.
    assert not re.search(r"\b[\w-]+/[\w./-]+\.(md|py|yml)\b", description), description
