"""Which registered version an alias (or a number) names, pinned to ``models:/<name>/<version>``.

Serving, batch scoring (champion and shadow), the retrain check and registration's staging test
all resolve a name the same way, to one record: the server and any in-process reference then
load the same version even if the alias moves meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from eyecatcher.redaction import redact_uri
from eyecatcher.registry.client import StoreUris, current_uris, registry_client

logger = logging.getLogger(__name__)


class ChampionNotFoundError(LookupError):
    """The registry has no version of the model under the requested alias (or number)."""


def pinned(version: ModelVersion, uris: StoreUris, *, alias: str | None = None) -> dict[str, Any]:
    """The record every consumer of a resolved version reads (the "8-key lookup").

    Returns:
        ``name``, ``alias`` (None for a version asked by number), ``version``, ``run_id``,
        ``model_uri`` (``models:/name/version``), ``alias_uri`` (``models:/name@alias`` or
        None), and the absolute ``tracking_uri`` and ``registry_uri``.
    """
    name = str(version.name)
    return {
        "name": name,
        "alias": alias,
        "version": str(version.version),
        "run_id": version.run_id,
        "model_uri": f"models:/{name}/{version.version}",
        "alias_uri": None if alias is None else f"models:/{name}@{alias}",
        "tracking_uri": uris.tracking_uri,
        "registry_uri": uris.registry_uri,
    }


def resolve_champion(params: Mapping[str, Any]) -> dict[str, Any]:
    """Find the registered version behind ``models:/<model_name>@<alias>``.

    Args:
        params: A parameter block; uses ``model_name`` and ``alias`` (default ``champion``).

    Returns:
        The :func:`pinned` record.

    Raises:
        ChampionNotFoundError: If the model or the alias does not exist, with what to do next
            (MLflow's own message included, without any ``user:password@`` of the URI).
    """
    name = str(params["model_name"])
    alias = str(params.get("alias", "champion"))
    uris = current_uris()
    try:
        version = registry_client(uris).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ChampionNotFoundError(
            f"No version of registered model '{name}' has the alias '{alias}' in the registry "
            f"at {redact_uri(uris.registry_uri)}. Run the training pipelines first (`kedro run`), "
            f"which register a model that passes the gate and make it '{alias}'; or set "
            f"MLFLOW_TRACKING_URI to the registry that holds it. ({redact_uri(exc.message)})"
        ) from exc
    record = pinned(version, uris, alias=alias)
    logger.info(
        "Champion: %s is version %s (run %s)", record["alias_uri"], version.version, version.run_id
    )
    return record


def resolve_alias_or_version(
    params: Mapping[str, Any], requested: str | int, *, setting: str
) -> dict[str, Any]:
    """Pin ``requested`` (an alias such as ``challenger``, or a version number).

    Args:
        params: A parameter block with ``model_name``.
        requested: The alias or the version number.
        setting: The parameter ``requested`` came from, for the error message.

    Returns:
        The :func:`pinned` record (``alias`` None for a number).

    Raises:
        ChampionNotFoundError: If the alias or the version does not exist.
    """
    text = str(requested).strip()
    if not text.isdigit():
        return resolve_champion({**params, "alias": text})
    name = str(params["model_name"])
    uris = current_uris()
    try:
        version = registry_client(uris).get_model_version(name, text)
    except MlflowException as exc:
        raise ChampionNotFoundError(
            f"{setting}={text}: registered model '{name}' has no version {text} "
            f"({redact_uri(exc.message)})"
        ) from exc
    logger.info("Resolved %s version %s (run %s)", name, version.version, version.run_id)
    return pinned(version, uris)
