"""Nodes of the retrain check: what the champion did since registration, and whether to retrain."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from eyecatcher.monitoring.drift import drift_report
from eyecatcher.monitoring.drift_plots import drift_figure
from eyecatcher.monitoring.image_stats import image_statistics
from eyecatcher.monitoring.online_metrics import online_metrics
from eyecatcher.monitoring.populations import (
    EXACT,
    NEAR,
    mark_seen,
    population_counts,
    unseen,
)
from eyecatcher.monitoring.reference import class_mix_weights
from eyecatcher.pipelines.retrain_check.decision import (
    RetrainRequiredError,
    decide,
    disagreement_per_class,
)
from eyecatcher.pipelines.retrain_check.settings import RetrainSettings
from eyecatcher.rekognition.taxonomy import TaxonomyMapping

logger = logging.getLogger(__name__)

#: Columns compared between the champion's frozen reference and the scored batch.
IMAGE_NUMERIC = ["width", "height", "megapixels", "brightness"]
IMAGE_CATEGORICAL = ["format"]


def _location(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(uri)


def champion_verdicts(
    champion: dict[str, Any], batch_verdicts: pd.DataFrame | None, image_index: pd.DataFrame
) -> pd.DataFrame | None:
    """The batch verdicts the champion gave, keyed by ``sha256`` where the image is indexed.

    Args:
        champion: The ``champion`` dataset (``version``).
        batch_verdicts: Batch scoring's table (``path``, ``class``, ``unsafe_score``,
            ``decision``, ``model_version``, ``error``), or ``None`` when none was written.
        image_index: Ingestion's index, to key verdicts by image content.

    Returns:
        The champion's rows with a ``sha256`` column (the path itself for files ingestion
        never saw), or ``None`` when there is no champion or no verdict of it.
    """
    if champion.get("version") is None or batch_verdicts is None or batch_verdicts.empty:
        return None
    own = batch_verdicts[batch_verdicts["model_version"].astype(str) == champion["version"]]
    if len(own) < len(batch_verdicts):
        logger.warning(
            "%d batch verdict(s) come from another model version than the champion (%s): "
            "left out of monitoring",
            len(batch_verdicts) - len(own),
            champion["version"],
        )
    if own.empty:
        return None
    by_location: dict[str, str] = {}
    for row in image_index.itertuples(index=False):
        others = getattr(row, "all_uris", None)
        for uri in [row.uri, *(list(others) if others is not None else [])]:
            by_location[_location(str(uri))] = str(row.sha256)
    own = own.copy()
    if "sha256" not in own.columns:
        own["sha256"] = [by_location.get(_location(str(p)), str(p)) for p in own["path"]]
    return own.reset_index(drop=True)


def mark_training_images(
    champion: dict[str, Any], verdicts: pd.DataFrame | None, params: dict[str, Any]
) -> pd.DataFrame | None:
    """Mark the champion's verdicts on images it saw in training (exactly or nearly).

    Args:
        champion: The ``champion`` dataset (``training_population``).
        verdicts: Output of :func:`champion_verdicts`.
        params: The ``retrain_check`` block (``storage_options``, to read images for pHash).

    Returns:
        The verdicts with ``seen_in_training`` (``exact``, ``near_duplicate`` or ``None``)
        and ``phash_error``; ``None`` when there are none. Every monitoring number below
        uses only the unseen rows and says how many were left out.
    """
    if verdicts is None:
        return None
    settings = RetrainSettings.parse(params)
    population = champion.get("training_population")
    if population is None:
        logger.warning(
            "Champion v%s records no training population: monitoring cannot leave out the "
            "images it trained on (the reports say so)",
            champion.get("version"),
        )
    marked = mark_seen(
        verdicts,
        population,
        uri_column="path",
        storage_options=settings.storage_options,
    )
    counts = population_counts(marked, population)
    if counts["excluded_exact"] or counts["excluded_near_duplicate"]:
        logger.info(
            "Left out of monitoring: %d verdict(s) on the champion's training images (%d exact, "
            "%d near-duplicates)",
            counts["excluded_exact"] + counts["excluded_near_duplicate"],
            counts["excluded_exact"],
            counts["excluded_near_duplicate"],
        )
    return marked


def _scored(verdicts: pd.DataFrame) -> pd.DataFrame:
    return verdicts[verdicts["error"].isna()] if "error" in verdicts else verdicts


def _drift_against(
    reference: pd.DataFrame, current: pd.DataFrame, settings: RetrainSettings
) -> tuple[dict[str, Any], pd.DataFrame, np.ndarray]:
    """PSI/KS of the scores and of a sample's image statistics against the re-weighted reference.

    Args:
        reference: The champion's frozen reference (rows with a class).
        current: The champion's scored verdicts on images it never saw.
        settings: The ``retrain_check`` block (``drift``, ``max_images``, ``seed``,
            ``storage_options``).

    Returns:
        The measured part of the drift report, the sampled images' statistics (those that
        could be read) and the reference's importance weights.
    """
    weights, mix = class_mix_weights(reference["class"], current["class"])
    scores = drift_report(
        reference, current, settings.drift, numeric=["unsafe_score"], reference_weights=weights
    )
    sample = current["path"].astype(str).tolist()
    cur_images = image_statistics(
        sample, settings.storage_options, max_images=settings.max_images, seed=settings.seed
    )
    images = cur_images[cur_images["error"].isna()]
    image_drift = drift_report(
        reference,
        images,
        settings.drift,
        numeric=IMAGE_NUMERIC,
        categorical=IMAGE_CATEGORICAL,
        reference_weights=weights,
    )
    alerts = scores["alerts"] + image_drift["alerts"]
    measured = {
        "measured": True,
        "n_reference": len(reference),
        "n_current_scores": len(current),
        "n_current_images": len(images),
        "unmeasured_images": int(cur_images["error"].notna().sum()),
        "class_mix": mix,
        "settings": scores["settings"],
        "columns": {**scores["columns"], **image_drift["columns"]},
        "alerts": alerts,
        "alert": bool(alerts),
    }
    return measured, images, weights


def measure_drift(
    champion: dict[str, Any], verdicts: pd.DataFrame | None, params: dict[str, Any]
) -> tuple[dict[str, Any], Figure]:
    """Compare the scored batch with the champion's frozen reference: scores and image stats.

    The reference is re-weighted to the batch's predicted class mix
    (:func:`~eyecatcher.monitoring.reference.class_mix_weights`), so a class mix unlike the
    test split's is not drift; the mix itself is reported. Only images the champion never saw
    count on the current side.

    Args:
        champion: The ``champion`` dataset (``reference``, ``training_population``).
        verdicts: Output of :func:`mark_training_images`.
        params: The ``retrain_check`` block (``drift``, ``max_images``, ``storage_options``).

    Returns:
        The drift report (per column PSI/KS and alerts, the class mixes and weights, the
        population, and why anything was not measured) and a figure of reference against
        current per column.
    """
    settings = RetrainSettings.parse(params)
    reference = champion.get("reference")
    report: dict[str, Any] = {
        "champion_version": champion.get("version"),
        "reference": champion.get("reference_note") or champion.get("note"),
    }
    current = None if verdicts is None else _scored(unseen(verdicts))
    if verdicts is not None:
        report["population"] = population_counts(verdicts, champion.get("training_population"))
    if reference is None or current is None or current.empty:
        reason = (
            f"no reference: {report['reference']}"
            if reference is None
            else "no batch verdicts of the champion on images it never saw (run the "
            "batch_scoring pipeline on new images)"
        )
        report.update({"measured": False, "reason": reason, "alerts": [], "alert": False})
        return report, drift_figure(None, {}, reason=reason)
    reference = reference[reference["class"].notna()].reset_index(drop=True)
    measured, images, weights = _drift_against(reference, current, settings)
    report.update(measured)
    figure = drift_figure(
        reference,
        {
            "unsafe_score": current["unsafe_score"],
            **{c: images[c] for c in [*IMAGE_NUMERIC, *IMAGE_CATEGORICAL]},
        },
        categorical=IMAGE_CATEGORICAL,
        weights=weights,
        bins=settings.drift.bins,
        report=report,
    )
    return report, figure


def compute_online_metrics(
    verdicts: pd.DataFrame | None,
    feedback_items: pd.DataFrame,
    labelling: dict[str, Any],
    champion: dict[str, Any],
) -> dict[str, Any]:
    """Prevalence, valid appeals and proactive rate of the champion, from verdicts + feedback.

    Args:
        verdicts: Output of :func:`mark_training_images`.
        feedback_items: Every valid feedback record.
        labelling: The ``labelling`` block: its taxonomy names the safe class.
        champion: The ``champion`` dataset (``training_population``, for the report).

    Returns:
        See :func:`eyecatcher.monitoring.online_metrics.online_metrics`, over the images the
        champion never saw, with ``population`` (how many verdicts were left out);
        ``measured: false`` without champion verdicts.
    """
    if verdicts is None:
        return {"measured": False, "reason": "no batch verdicts of the champion"}
    safe_class = TaxonomyMapping.from_params(labelling["taxonomy"]).safe_class
    population = population_counts(verdicts, champion.get("training_population"))
    kept = unseen(verdicts)
    if kept.empty:
        return {
            "measured": False,
            "reason": "every verdict is on an image the champion saw in training",
            "population": population,
        }
    return {
        "measured": True,
        "population": population,
        **online_metrics(kept, feedback_items, safe_class=safe_class),
    }


def measure_disagreement(
    verdicts: pd.DataFrame | None,
    feedback_verdicts: pd.DataFrame,
    params: dict[str, Any],
    champion: dict[str, Any],
) -> dict[str, Any]:
    """The champion's disagreement with human verdicts, per human class, on unseen images.

    A human verdict on an image the champion trained on (or on a near-duplicate of one) says
    nothing about how it generalises: such verdicts are left out and counted.

    Args:
        verdicts: Output of :func:`mark_training_images`.
        feedback_verdicts: One human verdict per image.
        params: The ``retrain_check`` block (``min_items_per_class``).
        champion: The ``champion`` dataset (``training_population``, for the report).

    Returns:
        ``{"measured": bool, "per_class": {class: {items, disagreements, rate, judged}},
        "population": {...}, "excluded_verdicts": {"exact", "near_duplicate"}}``.
    """
    if verdicts is None:
        return {"measured": False, "per_class": {}}
    settings = RetrainSettings.parse(params)
    scored = _scored(verdicts)
    judged = feedback_verdicts["sha256"].isin(set(scored["sha256"]))
    seen = scored.drop_duplicates("sha256").set_index("sha256")["seen_in_training"]
    kind = feedback_verdicts.loc[judged, "sha256"].map(seen)
    per_class = disagreement_per_class(
        _scored(unseen(verdicts)), feedback_verdicts, settings.min_items_per_class
    )
    return {
        "measured": True,
        "per_class": per_class,
        "population": population_counts(verdicts, champion.get("training_population")),
        "excluded_verdicts": {
            "exact": int((kind == EXACT).sum()),
            "near_duplicate": int((kind == NEAR).sum()),
        },
    }


def decide_retraining(
    champion: dict[str, Any],
    feedback_items: pd.DataFrame,
    disagreement: dict[str, Any],
    drift: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Count new feedback, read disagreement and drift, and decide.

    Args:
        champion: The ``champion`` dataset (``version``, ``registered_at``).
        feedback_items: Every valid feedback record (``timestamp``).
        disagreement: Output of :func:`measure_disagreement`.
        drift: Output of :func:`measure_drift`.
        params: The ``retrain_check`` block.

    Returns:
        The decision (``retrain``, ``reasons``, ``notes`` and every number behind them) and
        its headline numbers for MLflow.
    """
    settings = RetrainSettings.parse(params)
    registered_at = champion.get("registered_at")
    stamps = pd.to_datetime(feedback_items["timestamp"], utc=True)
    new = int((stamps > registered_at).sum()) if registered_at is not None else len(stamps)
    per_class = disagreement["per_class"] if disagreement.get("measured") else None
    retrain, reasons, notes = decide(
        champion_version=champion.get("version"),
        new_feedback=new,
        disagreement=per_class,
        drift=drift if drift.get("measured") else None,
        settings=settings,
    )
    decision = {
        "retrain": retrain,
        "reasons": reasons,
        "notes": notes,
        "checked_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "champion_version": champion.get("version"),
        "champion_registered_at": None if registered_at is None else registered_at.isoformat(),
        "new_feedback": new,
        "feedback_records": len(feedback_items),
        "disagreement_per_class": per_class,
        # Human verdicts left out because the champion trained on the image (or a near copy).
        "disagreement_excluded_verdicts": disagreement.get("excluded_verdicts"),
        "monitored_population": disagreement.get("population"),
        "drift_alerts": drift.get("alerts", []),
        "settings": settings.to_dict(),
    }
    (logger.warning if retrain else logger.info)(
        "Retrain check: %s. %s",
        "RETRAIN" if retrain else "no retraining needed",
        "; ".join(reasons or notes),
    )
    metrics = {"retrain": float(retrain), "new_feedback": float(new)}
    for cls, row in (per_class or {}).items():
        metrics[f"disagreement_rate.{cls}"] = float(row["rate"])
    metrics["drift_alerts"] = float(len(drift.get("alerts", [])))
    return decision, {k: {"value": v, "step": 0} for k, v in metrics.items()}


def enforce_retrain_decision(retrain_decision: dict[str, Any], params: dict[str, Any]) -> None:
    """Fail the run when retraining is due, after every report is saved (CI reads the code).

    Args:
        retrain_decision: Output of :func:`decide_retraining`.
        params: The ``retrain_check`` block (``fail_on_retrain``).

    Raises:
        RetrainRequiredError: When ``retrain`` is true and ``fail_on_retrain`` is on.
    """
    if retrain_decision["retrain"] and RetrainSettings.parse(params).fail_on_retrain:
        raise RetrainRequiredError(
            "Retraining is due: "
            + "; ".join(retrain_decision["reasons"])
            + ". Run `kedro run` (see data/08_reporting/retrain_decision.json)."
        )
