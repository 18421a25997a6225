"""The one way this project makes an ``MlflowClient``: on explicit, absolute URIs.

A bare ``MlflowClient()`` reads the tracking URI of the moment; a relative
``sqlite:///mlruns/mlflow.db`` then means another store after a ``cd``, and a registry URI set
by kedro-mlflow (``mlflow_registry_uri``) can be missed. Every registry call goes through a
client made here instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient


def absolute_tracking_uri(uri: str, base_dir: str | Path | None = None) -> str:
    """Make a relative ``sqlite:///`` tracking URI absolute.

    ``sqlite:///mlruns/mlflow.db`` is relative to the working directory of whoever opens it; a
    server started elsewhere (or a later ``cd``) would silently open an empty store.

    Args:
        uri: A tracking URI (``sqlite:///relative.db``, ``sqlite:////abs.db``, ``http://...``).
        base_dir: The directory relative paths are resolved against (the current one if None).

    Returns:
        The URI with an absolute database path; any other URI unchanged.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    path = uri[len(prefix) :]
    if path.startswith("/") or path == ":memory:":
        return uri
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    return prefix + str((base / path).resolve())


@dataclass(frozen=True)
class StoreUris:
    """The tracking store and the model registry, both absolute.

    Attributes:
        tracking_uri: Where runs live.
        registry_uri: Where registered models live (the tracking store unless kedro-mlflow's
            ``mlflow_registry_uri`` says otherwise).
    """

    tracking_uri: str
    registry_uri: str


def current_uris() -> StoreUris:
    """The tracking and registry URIs MLflow is configured with now, made absolute."""
    import mlflow

    tracking_uri = absolute_tracking_uri(mlflow.get_tracking_uri())
    registry_uri = absolute_tracking_uri(mlflow.get_registry_uri() or tracking_uri)
    return StoreUris(tracking_uri=tracking_uri, registry_uri=registry_uri)


def registry_client(uris: StoreUris | None = None) -> MlflowClient:
    """An ``MlflowClient`` on ``uris`` (the current ones, made absolute, by default)."""
    uris = uris or current_uris()
    return MlflowClient(tracking_uri=uris.tracking_uri, registry_uri=uris.registry_uri)
