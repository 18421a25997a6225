"""Where each training label comes from: a human verdict, a folder name, or Rekognition.

Precedence, highest first: ``human`` (a moderator's verdict from the feedback pipeline),
``folder`` (the ``<class>/<image>`` layout ingestion recorded), ``rekognition``. Images with a
folder label are never sent to Rekognition (a pre-labelled dataset costs nothing to label).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from pydantic import Field, StrictBool

from eyecatcher.parameters import Settings

logger = logging.getLogger(__name__)

LABEL_SOURCES = ("human", "folder", "rekognition")
#: ``image_labels`` columns added to the mapping's (docs/architecture.md).
EXTRA_COLUMNS = ["answer_source", "replaced_class", "replaced_reason"]


class LabelSourceSettings(Settings):
    """Which label sources are used (``labelling.label_sources``).

    Attributes:
        human: Moderator verdicts override every other source.
        folder: Folder labels recorded at ingestion are used (and not sent to Rekognition).
        folder_classes: Folder name → class, for folder names that are not class names.
        rekognition: Ask Rekognition about images no folder label covers; ``False`` excludes
            them (``excluded_unlabelled``) unless a human labelled them.
    """

    kind = "labelling.label_sources"

    human: StrictBool = True
    folder: StrictBool = True
    folder_classes: dict[str, str] = Field(default_factory=dict)
    rekognition: StrictBool = True


def folder_labelled(image_index: pd.DataFrame, settings: LabelSourceSettings) -> pd.Series:
    """Which indexed images carry a folder label that will be used."""
    if not settings.folder or "folder_label" not in image_index.columns:
        return pd.Series(False, index=image_index.index)
    return image_index["folder_label"].notna()


def rekognition_queue(image_index: pd.DataFrame, settings: LabelSourceSettings) -> pd.DataFrame:
    """The images Rekognition is asked about: those without a usable folder label.

    Args:
        image_index: Ingestion's index.
        settings: ``labelling.label_sources``.

    Returns:
        The rows of ``image_index`` to send (none when ``label_sources.rekognition`` is off).
    """
    if not settings.rekognition:
        return image_index.iloc[0:0]
    return image_index[~folder_labelled(image_index, settings)]


def _folder_rows(
    image_index: pd.DataFrame, settings: LabelSourceSettings, classes: set[str]
) -> list[dict[str, Any]]:
    rows = []
    for row in image_index[folder_labelled(image_index, settings)].itertuples(index=False):
        folder = str(row.folder_label)
        cls = settings.folder_classes.get(folder, folder)
        known = cls in classes
        rows.append(
            {
                "sha256": row.sha256,
                "uri": row.uri,
                "class": cls if known else None,
                "included": known,
                "class_reason": f"folder: {folder}"
                if known
                else f"excluded_unknown_folder: {folder!r} is not a class (map it in "
                "labelling.label_sources.folder_classes)",
                "labels": "[]",
                "content_types": "[]",
                "moderation_model_version": None,
                "label_source": "folder",
                "error_code": None,
                "answer_source": None,
            }
        )
    return rows


def _unlabelled_rows(image_index: pd.DataFrame, covered: set[str]) -> list[dict[str, Any]]:
    return [
        {
            "sha256": row.sha256,
            "uri": row.uri,
            "class": None,
            "included": False,
            "class_reason": "excluded_unlabelled: no folder label and Rekognition is off",
            "labels": "[]",
            "content_types": "[]",
            "moderation_model_version": None,
            "label_source": None,
            "error_code": None,
            "answer_source": None,
        }
        for row in image_index.itertuples(index=False)
        if row.sha256 not in covered
    ]


def merge_sources(
    rekognition_labels: pd.DataFrame,
    image_index: pd.DataFrame,
    feedback_verdicts: pd.DataFrame,
    settings: LabelSourceSettings,
    classes: set[str],
) -> pd.DataFrame:
    """One label per indexed image, the highest-precedence source winning.

    Args:
        rekognition_labels: The taxonomy mapping's table (``label_source`` there says which
            cache or run answered; it moves to ``answer_source``).
        image_index: Ingestion's index (order of the result; ``folder_label``).
        feedback_verdicts: One human verdict per image (``sha256``, ``verdict``, ``kind``,
            ``reviewer``, ``timestamp``).
        settings: Which sources are used.
        classes: The classes a folder label may name.

    Returns:
        ``image_labels``: the mapping's columns plus ``answer_source``, ``replaced_class`` and
        ``replaced_reason`` (what a human verdict overrode); ``label_source`` is ``human``,
        ``folder`` or ``rekognition`` (null when no source labels the image).
    """
    machine = rekognition_labels.copy()
    machine["answer_source"] = machine["label_source"]
    machine["label_source"] = "rekognition"
    rows = machine.to_dict(orient="records") + _folder_rows(image_index, settings, classes)
    by_sha = {row["sha256"]: row for row in rows}
    for row in _unlabelled_rows(image_index, set(by_sha)):
        by_sha[row["sha256"]] = row
    for row in by_sha.values():
        row["replaced_class"] = None
        row["replaced_reason"] = None
    if settings.human:
        for verdict in feedback_verdicts.itertuples(index=False):
            row = by_sha.get(verdict.sha256)
            if row is None:  # validated against an older index: the image is gone
                continue
            row["replaced_class"] = row["class"] if row["included"] else None
            row["replaced_reason"] = row["class_reason"]
            stamp = pd.Timestamp(verdict.timestamp).isoformat()
            row.update(
                {
                    "class": verdict.verdict,
                    "included": True,
                    "class_reason": f"human: {verdict.kind} by {verdict.reviewer} at {stamp}",
                    "label_source": "human",
                }
            )
    ordered = [by_sha[sha] for sha in image_index["sha256"] if sha in by_sha]
    columns = [*rekognition_labels.columns, *EXTRA_COLUMNS]
    labels = pd.DataFrame(ordered, columns=columns)
    labels["included"] = labels["included"].astype(bool)
    return labels


def source_counts(image_labels: pd.DataFrame) -> dict[str, Any]:
    """Counts of included labels per source, and what human verdicts changed."""
    included = image_labels[image_labels["included"]]
    human = image_labels[image_labels["label_source"] == "human"]
    changed = human["replaced_class"].notna() & (human["replaced_class"] != human["class"])
    return {
        "included_per_source": {
            s: int((included["label_source"] == s).sum()) for s in LABEL_SOURCES
        },
        "human_changed_class": int(changed.sum()),
        "human_confirmed_class": int((human["replaced_class"] == human["class"]).sum()),
        "human_brought_back": int(human["replaced_class"].isna().sum()),
    }
