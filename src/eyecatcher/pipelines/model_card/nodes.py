"""Model card nodes: render the registered candidate's card, then publish it to the registry.

The card is built from the run's own reports (registration, selection, quantization,
evaluation, training, test predictions, heatmaps); see ``docs/explainability.md``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from eyecatcher.pipelines.model_card.description import version_description
from eyecatcher.pipelines.model_card.settings import ModelCardSettings
from eyecatcher.registry.cards import card_link, publish_card
from eyecatcher.registry.client import registry_client
from eyecatcher.reporting import CardInputs, card_sections, render_card
from eyecatcher.reporting.plots import candidate_figures

logger = logging.getLogger(__name__)


class ModelCardInputError(ValueError):
    """The reports do not hold what the card needs for the registered candidate."""


def _candidate_inputs(candidate: str, outputs: dict[str, Any]) -> dict[str, Any]:
    names = ("evaluation", "training_report", "test_predictions", "explanations")
    picked = {name: outputs.get(f"{name}__{candidate}") for name in names}
    picked["explanations_index"] = outputs.get(f"explanations_index__{candidate}")
    missing = [name for name, value in picked.items() if value is None]
    if missing:
        known = sorted({key.split("__", 1)[1] for key in outputs})
        raise ModelCardInputError(
            f"candidate '{candidate}' has no {missing} among the pipeline's candidates {known}"
        )
    return picked


def render_model_card(
    registration_report: dict[str, Any],
    candidate_selection: dict[str, Any],
    quantization_decision: dict[str, Any],
    split_manifest: pd.DataFrame,
    image_labels: pd.DataFrame,
    **candidate_outputs: Any,
) -> str:
    """The HTML model card of the candidate registration considered.

    Args:
        registration_report: Registration's report (candidate, version, gate, thresholds).
        candidate_selection: Training's selection.
        quantization_decision: Quantization's decision.
        split_manifest: The split manifest (counts per class and split).
        image_labels: Labelling's table (label sources).
        **candidate_outputs: ``<dataset>__<candidate>`` for ``evaluation``,
            ``training_report``, ``test_predictions``, ``explanations`` and
            ``explanations_index`` of every configured candidate.

    Returns:
        One self-contained HTML page (inline CSS, images as data URIs).
    """
    candidate = registration_report.get("candidate")
    if not candidate:
        raise ModelCardInputError("registration_report names no candidate")
    picked = _candidate_inputs(str(candidate), candidate_outputs)
    inputs = CardInputs(
        registration_report=registration_report,
        candidate_selection=candidate_selection,
        quantization_decision=quantization_decision,
        split_manifest=split_manifest,
        image_labels=image_labels,
        figures=candidate_figures(picked["evaluation"], picked["training_report"]),
        **picked,
    )
    sections = card_sections(inputs)
    outcome = registration_report.get("outcome")
    if outcome != "registered":
        sections["title"] = f"Model card: candidate {candidate} (NOT registered: {outcome})"
    generated = f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by the model_card pipeline."
    return render_card(sections, generated)


def publish_model_card(
    model_card: str,
    registration_report: dict[str, Any],
    params: dict[str, Any],
    **training_reports: Any,
) -> dict[str, Any]:
    """Log the card to the registered version's run and write the version's description.

    When this run registered nothing (gate refused, unchanged, smoke test failed) the
    registry is left alone and the record says why.

    Args:
        model_card: The HTML card.
        registration_report: Registration's report.
        params: The ``model_card`` parameters (``ui_url``, ``artifact_path``).
        **training_reports: ``training_report__<candidate>`` of every configured candidate.

    Returns:
        ``published``, ``reason``, and when published ``model_name``, ``version``,
        ``run_id``, ``artifact_uri``, ``url`` and ``description``.
    """
    settings = ModelCardSettings.parse(params)  # a typo fails even when nothing registered
    outcome = registration_report.get("outcome")
    if outcome != "registered":
        reason = f"nothing registered in this run (outcome: {outcome})"
        logger.warning(
            "Model card of candidate %s NOT published: %s; the registry is unchanged. The "
            "card is still written (catalog entry model_card, data/08_reporting/model_card.html "
            "in conf/base).",
            registration_report.get("candidate"),
            reason,
        )
        return {"published": False, "reason": reason}
    client = registry_client()
    run_id = str(registration_report["run_id"])
    artifact_path = settings.artifact_path
    url = card_link(
        settings.ui_url,
        client.get_run(run_id).info.experiment_id,
        run_id,
        artifact_path,
    )
    training_report = training_reports[f"training_report__{registration_report['candidate']}"]
    description = version_description(registration_report, training_report, url)
    model_name, version = (
        str(registration_report["model_name"]),
        str(registration_report["version"]),
    )
    artifact_uri = publish_card(
        client,
        model_name=model_name,
        version=version,
        run_id=run_id,
        html=model_card,
        artifact_path=artifact_path,
        description=description,
    )
    logger.info(
        "Model card of %s v%s: %s (MLflow UI: %s; local copy: catalog entry model_card, "
        "data/08_reporting/model_card.html in conf/base)",
        model_name,
        version,
        artifact_uri,
        url,
    )
    return {
        "published": True,
        "reason": "registered",
        "model_name": model_name,
        "version": version,
        "run_id": run_id,
        "artifact_uri": artifact_uri,
        "url": url,
        "description": description,
    }
