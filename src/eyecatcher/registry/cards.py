"""Card publication: the model card as an artifact of the version's run, and the version's
description. Kept apart from the model-card nodes so that they stay testable without a store."""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import quote

from mlflow import MlflowClient

CARD_FILE = "model_card.html"


def card_link(ui_url: str, experiment_id: str, run_id: str, artifact_path: str) -> str:
    """Where the card opens in the MLflow UI (the run's artifact browser)."""
    path = quote(f"{artifact_path}/{CARD_FILE}")
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}"


def publish_card(
    client: MlflowClient,
    *,
    model_name: str,
    version: str,
    run_id: str,
    html: str,
    artifact_path: str,
    description: str,
) -> str:
    """Log the card to the version's run and set the version's description.

    Args:
        client: An MLflow client on the registry that holds the version.
        model_name: Registered model name.
        version: Version number.
        run_id: The run the version was registered from.
        html: The card.
        artifact_path: Folder of the card in the run's artifacts.
        description: Markdown for the version's description.

    Returns:
        The card's artifact URI.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CARD_FILE
        path.write_text(html, encoding="utf-8")
        client.log_artifact(run_id, str(path), artifact_path)
    client.update_model_version(model_name, version, description=description)
    return f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}/{CARD_FILE}"
