"""Shadow scoring: the same rows scored by a second registered version, next to the champion's.

``batch_scoring.shadow_model`` names the shadow (an alias such as ``challenger``, or a version
number). It is pinned to a version like the champion, scored by the same engine, and compared
with :mod:`eyecatcher.monitoring.shadow`. The shadow never changes a verdict: its answers sit in
``shadow_*`` columns, and the comparison is the evidence registration's shadow period reads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw

from eyecatcher.monitoring.shadow import (
    add_shadow_columns,
    disagreement_sheet,
    shadow_comparison,
    shadow_metrics,
)
from eyecatcher.pipelines.batch_scoring.nodes import score_images
from eyecatcher.pipelines.batch_scoring.skippable import Skipped
from eyecatcher.pipelines.registration.shadow_period import (
    CHAMPION_VERSION_KEY,
    SHADOW_VERSION_KEY,
)
from eyecatcher.serving.registry import ChampionNotFoundError, resolve_champion

logger = logging.getLogger(__name__)

NO_SHADOW = "no batch_scoring.shadow_model set"


def resolve_shadow(params: Mapping[str, Any]) -> dict[str, Any]:
    """Pin ``batch_scoring.shadow_model`` to a registered version.

    Args:
        params: The ``batch_scoring`` block; ``shadow_model`` is an alias (``challenger``,
            ``champion``), a version number, or null (no shadow).

    Returns:
        ``{}`` without a shadow; otherwise what
        :func:`eyecatcher.serving.registry.resolve_champion` returns, for the shadow
        (``version`` and a pinned ``model_uri``), plus ``requested`` (the parameter as given).

    Raises:
        ChampionNotFoundError: If the alias or the version does not exist.
    """
    requested = params.get("shadow_model")
    if requested is None or str(requested).strip() == "":
        return {}
    text = str(requested).strip()
    if not text.isdigit():
        return {**resolve_champion({**params, "alias": text}), "requested": text}
    # A version number: resolve through an alias-free lookup, pinned the same way.
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from eyecatcher.serving.process import absolute_tracking_uri

    name = str(params["model_name"])
    tracking_uri = absolute_tracking_uri(mlflow.get_tracking_uri())
    registry_uri = absolute_tracking_uri(mlflow.get_registry_uri() or tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    try:
        version = client.get_model_version(name, text)
    except MlflowException as exc:
        raise ChampionNotFoundError(
            f"batch_scoring.shadow_model={text}: registered model '{name}' has no version "
            f"{text} ({exc.message})"
        ) from exc
    logger.info("Shadow: %s version %s (run %s)", name, version.version, version.run_id)
    return {
        "name": name,
        "alias": None,
        "version": str(version.version),
        "run_id": version.run_id,
        "model_uri": f"models:/{name}/{version.version}",
        "alias_uri": None,
        "tracking_uri": tracking_uri,
        "registry_uri": registry_uri,
        "requested": text,
    }


def score_shadow(
    images_to_score: pd.DataFrame,
    champion_verdicts: pd.DataFrame,
    champion: Mapping[str, Any],
    shadow: Mapping[str, Any],
    params: Mapping[str, Any],
) -> tuple[pd.DataFrame, Any, Any, Any]:
    """Score the listed images with the shadow too, and compare it with the champion.

    Args:
        images_to_score: Output of ``list_images_to_score``.
        champion_verdicts: The champion's verdict table (``score_images``).
        champion: The resolved champion.
        shadow: Output of :func:`resolve_shadow` (``{}``: no shadow).
        params: The ``batch_scoring`` block (the shadow uses the same engine and batch size).

    Returns:
        The verdict table (with ``shadow_class``, ``shadow_unsafe_score``, ``shadow_decision``,
        ``shadow_model_version`` and ``shadow_error`` when there is a shadow), the shadow report
        (:func:`~eyecatcher.monitoring.shadow.shadow_comparison` plus the compared versions),
        its ``shadow.*`` metrics and the disagreement contact sheet; without a shadow the table
        is unchanged and the three others are :class:`Skipped` (nothing is written).
    """
    if not shadow:
        return champion_verdicts, Skipped(NO_SHADOW), Skipped(NO_SHADOW), Skipped(NO_SHADOW)
    if str(shadow["version"]) == str(champion["version"]):
        logger.warning(
            "The shadow (%s) is the champion's own version %s: agreement measures only how "
            "repeatable scoring is",
            shadow["requested"],
            champion["version"],
        )
    shadow_table, _ = score_images(images_to_score, shadow, params)
    verdicts = add_shadow_columns(champion_verdicts, shadow_table)
    comparison = shadow_comparison(verdicts)
    report = {
        "model_name": champion["name"],
        CHAMPION_VERSION_KEY: str(champion["version"]),
        SHADOW_VERSION_KEY: str(shadow["version"]),
        "shadow_model": shadow["requested"],
        "source": str(params["source"]),
        "scored_at": str(champion_verdicts["scored_at"].max()),
        **comparison,
    }
    logger.info(
        "Shadow v%s vs champion v%s: %d compared, decision agreement %s, %d disagreements",
        shadow["version"],
        champion["version"],
        comparison["compared"],
        comparison["decision_agreement_rate"],
        comparison["n_disagreements"],
    )
    metrics = {
        name: {"value": value, "step": 0} for name, value in shadow_metrics(comparison).items()
    }
    sheet = disagreement_sheet(comparison, dict(params.get("storage_options") or {}))
    return verdicts, report, metrics, sheet if sheet is not None else _agreement_card(report)


def _agreement_card(report: Mapping[str, Any]) -> Image.Image:
    """The sheet when nothing disagrees: says so, so the artifact never shows an older run."""
    card = Image.new("RGB", (480, 60), "white")
    ImageDraw.Draw(card).multiline_text(
        (6, 6),
        f"No disagreement: shadow v{report[SHADOW_VERSION_KEY]} and champion "
        f"v{report[CHAMPION_VERSION_KEY]}\nagree on all {report['compared']} images compared "
        f"({report['errors']} with an error not compared)",
        fill="black",
    )
    return card
