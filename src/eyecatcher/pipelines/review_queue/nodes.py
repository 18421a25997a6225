"""Nodes of the review queue: batch verdicts → tasks a moderator works through in Label Studio.

Every ``review`` verdict of the chosen scoring day is queued; so is a seeded sample of the
``allow`` and ``block`` verdicts (``audit_rate`` of each), because a queue that only ever shows
the uncertain middle never measures how often the confident ends are wrong. The completed
project comes back as feedback through a Label Studio JSON export dropped in the feedback
folder (:mod:`eyecatcher.label_studio`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

from eyecatcher.label_studio import (
    HEATMAP_NAME,
    labelling_config,
    review_task,
)
from eyecatcher.pipelines.review_queue.settings import ReviewQueueSettings
from eyecatcher.rekognition.taxonomy import TaxonomyMapping

logger = logging.getLogger(__name__)

#: Decisions sampled for audit (``review`` is always queued whole).
AUDITED_DECISIONS = ("allow", "block")
#: Optional verdict-table column with the URI of the model's heatmap of the image.
HEATMAP_COLUMN = "heatmap_uri"


def _location(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(uri)


def _sha_by_location(image_index: pd.DataFrame) -> dict[str, str]:
    found: dict[str, str] = {}
    for row in image_index.itertuples(index=False):
        others = getattr(row, "all_uris", None)
        for uri in [row.uri, *(list(others) if others is not None else [])]:
            found[_location(str(uri))] = str(row.sha256)
    return found


def select_day(verdicts: pd.DataFrame, day: str) -> tuple[pd.DataFrame, str]:
    """The verdicts of one scoring day (UTC), and that day as text (``all`` for every day).

    Raises:
        ValueError: If a day is asked for and the table has no ``scored_at`` column.
    """
    if day == "all":
        return verdicts, "all"
    if "scored_at" not in verdicts.columns:
        raise ValueError(
            f"review_queue.day={day!r} needs the verdicts' scored_at column, which this table "
            "lacks; rescore it, or set review_queue.day=all"
        )
    days = pd.to_datetime(verdicts["scored_at"], utc=True).dt.strftime("%Y-%m-%d")
    wanted = days.max() if day == "latest" else pd.Timestamp(day).strftime("%Y-%m-%d")
    return verdicts[days == wanted], str(wanted)


def audit_sample(frame: pd.DataFrame, rate: float, seed: int) -> pd.DataFrame:
    """``ceil(rate * len(frame))`` rows, picked by a seeded hash of each image's key.

    The pick depends on the images, not on the table's order or on what else was scored: the
    same seed picks the same images, and an image picked stays picked when the day grows.
    """
    if frame.empty or rate <= 0:
        return frame.iloc[0:0]
    keys = frame["_key"].map(lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    return frame.loc[keys.sort_values(kind="stable").index[: math.ceil(rate * len(frame))]]


def _image_url(path: str, prefix: str | None) -> str:
    if prefix is None or "://" in path:
        return path
    return f"{prefix}{path}"


def _probabilities(value: Any) -> dict[str, float]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {}
    mapping = json.loads(value) if isinstance(value, str) else dict(value)
    return {str(k): float(v) for k, v in mapping.items()}


def build_review_queue(
    verdicts: pd.DataFrame,
    image_index: pd.DataFrame,
    params: Mapping[str, Any],
    labelling: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """Label Studio tasks for the day's ``review`` verdicts plus an audit sample.

    Args:
        verdicts: Batch scoring's verdict table (``path``, ``class``, ``probabilities``,
            ``unsafe_score``, ``decision``, ``model_name``, ``model_version``, ``error``,
            ``scored_at``; optionally ``sha256`` and :data:`HEATMAP_COLUMN`).
        image_index: Ingestion's index: each task names its image by ``sha256``, the key the
            feedback pipeline matches first.
        params: The ``review_queue`` block (:class:`ReviewQueueSettings`).
        labelling: The ``labelling`` block: its taxonomy's classes are the choices.

    Returns:
        The tasks (Label Studio's import format, ``review`` first, then the audit sample, each
        by path; one per image), the labelling config XML, and a report of what was queued
        and left out.
    """
    settings = ReviewQueueSettings.parse(params)
    classes = TaxonomyMapping.from_params(labelling["taxonomy"]).class_names()
    day_rows, day = select_day(verdicts, settings.day)
    scored, errors, repeated = _latest_per_image(day_rows, image_index)

    queued = [scored[scored["decision"] == "review"].assign(_queue="review")]
    audited: dict[str, int] = {}
    for decision in AUDITED_DECISIONS:
        sample = audit_sample(
            scored[scored["decision"] == decision], settings.audit_rate, settings.seed
        )
        audited[decision] = len(sample)
        queued.append(sample.sort_values("path", kind="stable").assign(_queue="audit"))
    queue = pd.concat(queued)
    heatmaps = HEATMAP_COLUMN in queue.columns
    tasks = _tasks(queue, settings.image_url_prefix, heatmaps=heatmaps)
    not_indexed = int(queue["sha256"].isna().sum())
    if not_indexed:
        # The feedback pipeline matches a verdict to an indexed image only: these would come
        # back as unknown_image until ingestion indexes them.
        logger.warning(
            "Review queue: %d queued image(s) are not in the image index (run ingestion on "
            "their source, or their verdicts come back as unknown_image)",
            not_indexed,
        )
    report = {
        "day": day,
        "verdicts": len(day_rows),
        "errors_skipped": int(errors.sum()),
        "repeats_skipped": int(repeated.sum()),
        "decisions": {str(k): int(v) for k, v in scored["decision"].value_counts().items()},
        "tasks": len(tasks),
        "review": int((queue["_queue"] == "review").sum()),
        "audit": audited,
        "not_indexed": not_indexed,
        "heatmaps": int(sum(HEATMAP_NAME in t["data"] for t in tasks)),
        "model_versions": sorted({str(v) for v in queue["model_version"].dropna()}),
        "classes": classes,
        "settings": settings.model_dump(),
    }
    logger.info(
        "Review queue (%s): %d task(s): %d review, audit %s, from %d verdict(s) (%d with errors "
        "skipped)",
        day,
        len(tasks),
        report["review"],
        audited,
        len(day_rows),
        report["errors_skipped"],
    )
    return tasks, labelling_config(classes, heatmap=heatmaps), report


def _latest_per_image(
    day_rows: pd.DataFrame, image_index: pd.DataFrame
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """The day's verdicts without errors, the latest per image, by path; and the masks.

    Returns:
        The rows kept, the rows of ``day_rows`` with errors, and the repeats left out.
    """
    errors = day_rows["error"].notna() if "error" in day_rows else pd.Series(False, day_rows.index)
    scored = day_rows[~errors].copy()
    if "sha256" not in scored.columns:
        by_location = _sha_by_location(image_index)
        scored["sha256"] = [by_location.get(_location(str(p))) for p in scored["path"]]
    scored["_key"] = scored["sha256"].fillna(scored["path"]).astype(str)
    # One task per image: copies under several paths, or an image the day's history holds
    # from two model versions, are one decision for a moderator (the latest verdict is shown).
    if "scored_at" in scored.columns:
        scored = scored.sort_values("scored_at", kind="stable")
    repeated = scored.duplicated("_key", keep="last")
    scored = scored[~repeated].sort_values("path", kind="stable")
    return scored, errors, repeated


def _tasks(
    queue: pd.DataFrame, image_url_prefix: str | None, *, heatmaps: bool
) -> list[dict[str, Any]]:
    """One Label Studio task per queued row, in the queue's order."""
    return [
        review_task(
            image_uri=_image_url(str(row["path"]), image_url_prefix),
            sha256=None if pd.isna(row["sha256"]) else str(row["sha256"]),
            path=str(row["path"]),
            queue=str(row["_queue"]),
            predicted_class=str(row["class"]),
            decision=str(row["decision"]),
            unsafe_score=float(row["unsafe_score"]),
            probabilities=_probabilities(row["probabilities"]),
            model_name=str(row["model_name"]),
            model_version=str(row["model_version"]),
            scored_at=None
            if "scored_at" not in row or pd.isna(row["scored_at"])
            else pd.Timestamp(row["scored_at"]).isoformat(),
            heatmap_uri=None
            if not heatmaps or pd.isna(row[HEATMAP_COLUMN])
            else str(row[HEATMAP_COLUMN]),
        )
        for _, row in queue.iterrows()
    ]
