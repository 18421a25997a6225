"""Card publication: the model card as an artifact of the version's run, and the version's
description. Kept apart from the model-card nodes so that they stay testable without a store."""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from mlflow import MlflowClient

from eyecatcher.registry.client import current_uris

CARD_FILE = "model_card.html"


LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def ui_url_for(configured: str, tracking_uri: str) -> str:
    """The MLflow UI a card links to.

    An http(s) tracking server is its own UI: when ``model_card.ui_url`` is left at a local
    address (``make mlflow-ui``'s default), the links go to the tracking server instead, so a
    card published to a shared server does not point readers at their own machine. A ``ui_url``
    naming another host is kept; a local store (sqlite, files) keeps ``configured``. A
    ``user:password@`` in the tracking URI never reaches the link.
    """
    tracking = urlsplit(tracking_uri)
    if tracking.scheme not in {"http", "https"}:
        return configured
    if urlsplit(configured).hostname not in LOOPBACK_HOSTS:
        return configured
    host = tracking.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if tracking.port:
        netloc += f":{tracking.port}"
    return urlunsplit((tracking.scheme, netloc, tracking.path.rstrip("/"), "", ""))


def card_link(
    ui_url: str,
    experiment_id: str,
    run_id: str,
    artifact_path: str,
    tracking_uri: str | None = None,
) -> str:
    """Where the card opens in the MLflow UI (the run's artifact browser).

    Args:
        ui_url: ``model_card.ui_url``.
        experiment_id: The run's experiment.
        run_id: The run the card is an artifact of.
        artifact_path: Folder of the card in the run.
        tracking_uri: Where runs live (``None``: the current one, as the registry client).
    """
    uri = tracking_uri if tracking_uri is not None else current_uris().tracking_uri
    base = ui_url_for(ui_url, uri).rstrip("/")
    path = quote(f"{artifact_path}/{CARD_FILE}")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}"


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
