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

from eyecatcher.datasets.skippable_dataset import Skipped
from eyecatcher.monitoring.shadow import (
    CHAMPION_VERSION_KEY,
    SHADOW_VERSION_KEY,
    add_shadow_columns,
    disagreement_sheet,
    shadow_comparison,
    shadow_metrics,
)
from eyecatcher.pipelines.batch_scoring.nodes import score_images
from eyecatcher.pipelines.batch_scoring.settings import BatchScoringSettings
from eyecatcher.registry.resolve import resolve_alias_or_version

logger = logging.getLogger(__name__)

NO_SHADOW = "no batch_scoring.shadow_model set"


def resolve_shadow(params: Mapping[str, Any]) -> dict[str, Any]:
    """Pin ``batch_scoring.shadow_model`` to a registered version.

    Args:
        params: The ``batch_scoring`` block (:class:`BatchScoringSettings`); ``shadow_model``
            is an alias (``challenger``, ``champion``), a version number, or null (no shadow).

    Returns:
        ``{}`` without a shadow; otherwise the registry's pinned record
        (:func:`eyecatcher.registry.resolve.pinned`) of the shadow, plus ``requested`` (the
        parameter as given).

    Raises:
        ChampionNotFoundError: If the alias or the version does not exist.
    """
    settings = BatchScoringSettings.parse(params)
    text = settings.shadow_model
    if text is None:
        return {}
    found = resolve_alias_or_version(
        {"model_name": settings.model_name}, text, setting="batch_scoring.shadow_model"
    )
    logger.info("Shadow: %s version %s (run %s)", found["name"], found["version"], found["run_id"])
    return {**found, "requested": text}


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
    settings = BatchScoringSettings.parse(params)
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
        "source": settings.source,
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
    sheet = disagreement_sheet(comparison, dict(settings.storage_options))
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
