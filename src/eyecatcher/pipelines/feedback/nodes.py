"""Nodes of the feedback pipeline: files of moderator verdicts → validated verdicts per image."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from eyecatcher.datasets.feedback_files_dataset import FeedbackFile
from eyecatcher.pipelines.feedback.files import parse_feedback_files
from eyecatcher.pipelines.feedback.settings import FeedbackSettings
from eyecatcher.pipelines.feedback.validation import validate_records
from eyecatcher.rekognition.taxonomy import TaxonomyMapping

logger = logging.getLogger(__name__)


def validate_feedback(
    feedback_files: dict[str, bytes | FeedbackFile],
    image_index: pd.DataFrame,
    params: dict[str, Any],
    labelling: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], dict[str, dict[str, float]]]:
    """Parse and validate every feedback file; report problems, never stop on them.

    Args:
        feedback_files: File name → contents, or a file listed but not read yet (the
            ``feedback_files`` dataset: files over ``max_file_bytes`` are never read).
        image_index: Ingestion's index; feedback must name an indexed image.
        params: The ``feedback`` parameter block (``conflict_rule``, ``max_listed``,
            ``max_file_bytes``, ``max_clock_skew_seconds``).
        labelling: The ``labelling`` block: its taxonomy says which classes a verdict may name.

    Returns:
        ``feedback_items`` (valid records), ``feedback_verdicts`` (one per image), the
        ``feedback_report`` and its headline numbers for MLflow.
    """
    settings = FeedbackSettings.parse(params)
    classes = TaxonomyMapping.from_params(labelling["taxonomy"]).class_names()
    records = parse_feedback_files(feedback_files, settings.max_file_bytes)
    items, verdicts, report = validate_records(records, image_index, classes, settings)
    report["files"] = sorted(feedback_files)
    logger.info(
        "Feedback: %d record(s) read in %d file(s): %d accepted, %d rejected; %d verdict(s) "
        "on %d image(s)",
        report["read"],
        len(feedback_files),
        report["accepted"],
        report["rejected"],
        len(items),
        len(verdicts),
    )
    if report["rejected"]:
        logger.warning(
            "Feedback: %d record(s) rejected (%s); see data/08_reporting/feedback_report.json",
            report["rejected"],
            ", ".join(f"{s} {n}" for s, n in report["counts"].items() if n and s != "valid"),
        )
    for problem in report["problems"].get("too_large", []):
        if problem["line"] is None:  # a whole file refused: say so on the console too
            logger.warning("Feedback: %s", problem["detail"])
    if report["conflicts"]:
        logger.warning(
            "Feedback: %d image(s) have conflicting verdicts, resolved by rule %r (listed in "
            "the report)",
            report["conflicts"],
            settings.conflict_rule,
        )
    metrics = {f"records_{status}": float(n) for status, n in report["counts"].items()}
    metrics.update(
        records_read=float(report["read"]),
        records_accepted=float(report["accepted"]),
        records_rejected=float(report["rejected"]),
    )
    metrics.update(images_with_verdicts=float(len(verdicts)), conflicts=float(report["conflicts"]))
    return items, verdicts, report, {k: {"value": v, "step": 0} for k, v in metrics.items()}
