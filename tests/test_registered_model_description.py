"""What the MLflow UI shows of the registry: a description that reads on its own (no repository
paths) and model-card links to the tracking server the card was published to."""

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


def test_card_links_go_to_the_tracking_server_when_it_is_one() -> None:
    from eyecatcher.registry.cards import card_link, ui_url_for

    local = "http://127.0.0.1:5000"
    # A local store: the configured UI (make mlflow-ui).
    assert ui_url_for(local, "sqlite:////tmp/mlruns/mlflow.db") == local
    # A tracking server is its own UI; its credentials never reach the link.
    assert (
        ui_url_for(local, "https://alice:s3cret@mlflow.example.com:8443/mlflow/")
        == "https://mlflow.example.com:8443/mlflow"
    )
    # A UI named explicitly (another host) is kept.
    assert ui_url_for("https://ui.example.com", "http://mlflow.internal:5000") == (
        "https://ui.example.com"
    )
    link = card_link(local, "3", "abc", "model_card", tracking_uri="http://mlflow.internal:5000")
    assert link == (
        "http://mlflow.internal:5000/#/experiments/3/runs/abc/artifacts/model_card/model_card.html"
    )
