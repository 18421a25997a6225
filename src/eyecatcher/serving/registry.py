"""Which registered version an alias names, and what the served model declares about itself.

Serving, batch scoring and registration's staging test all resolve ``models:/<name>@<alias>``
the same way: to a pinned version (``models:/<name>/<version>``), so the server and any
in-process reference load the same version even if the alias moves meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mlflow.exceptions import MlflowException

from eyecatcher.redaction import redact_uri
from eyecatcher.serving.process import absolute_tracking_uri

logger = logging.getLogger(__name__)


class ChampionNotFoundError(LookupError):
    """The registry has no version of the model under the requested alias."""


def resolve_champion(params: Mapping[str, Any]) -> dict[str, Any]:
    """Find the registered version behind ``models:/<model_name>@<alias>``.

    The returned ``model_uri`` pins the version number, so the server and the in-process
    reference load the same version even if the alias moves while the smoke test runs.

    Args:
        params: The pipeline's parameter block; uses ``model_name`` and ``alias``
            (default ``champion``).

    Returns:
        ``name``, ``alias``, ``version``, ``run_id``, ``model_uri`` (``models:/name/version``),
        ``alias_uri`` (``models:/name@alias``), and the absolute ``tracking_uri`` and
        ``registry_uri``.

    Raises:
        ChampionNotFoundError: If the model or the alias does not exist, with what to do next.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    name = str(params["model_name"])
    alias = str(params.get("alias", "champion"))
    tracking_uri = absolute_tracking_uri(mlflow.get_tracking_uri())
    # The registry is the tracking store unless kedro-mlflow's `mlflow_registry_uri` says not.
    registry_uri = absolute_tracking_uri(mlflow.get_registry_uri() or tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ChampionNotFoundError(
            f"No version of registered model '{name}' has the alias '{alias}' in the registry "
            f"at {redact_uri(registry_uri)}. Run the training pipelines first (`kedro run`), "
            f"which register a model that passes the gate and make it '{alias}'; or set "
            f"MLFLOW_TRACKING_URI to the registry that holds it. ({exc.message})"
        ) from exc
    champion = {
        "name": name,
        "alias": alias,
        "version": str(version.version),
        "run_id": version.run_id,
        "model_uri": f"models:/{name}/{version.version}",
        "alias_uri": f"models:/{name}@{alias}",
        "tracking_uri": tracking_uri,
        "registry_uri": registry_uri,
    }
    logger.info(
        "Champion: %s is version %s (run %s)",
        champion["alias_uri"],
        version.version,
        version.run_id,
    )
    return champion


def served_limit(model: Any, name: str) -> int | None:
    """One limit the served model declares in its ``serving_config.json``.

    Args:
        model: A loaded ``mlflow.pyfunc.PyFuncModel``.
        name: ``max_image_bytes``, ``max_rows``, ``max_pixels``, ...

    Returns:
        The limit, or None for a model (or an older version) that does not declare it.
    """
    try:
        python_model = model.unwrap_python_model()
    except (AttributeError, MlflowException):
        return None
    limit = getattr(getattr(python_model, "config_", None), name, None)
    return int(limit) if limit is not None else None


def served_image_limit(model: Any) -> int | None:
    """The served model's per-image byte limit (``max_image_bytes``), if it declares one."""
    return served_limit(model, "max_image_bytes")
