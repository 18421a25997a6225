"""The split manifest as training reads it: checks, and the images and labels of one split."""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "validation", "test")
_REQUIRED_COLUMNS = ("sha256", "uri", "class", "split")


class ManifestError(ValueError):
    """The split manifest cannot be trained on."""


def check_manifest(split_manifest: pd.DataFrame, safe_class: str) -> list[str]:
    """Check the split manifest and return the class names in logit order (sorted).

    Args:
        split_manifest: Rows ``sha256, uri, class, split[, group]``.
        safe_class: The class that means "nothing to moderate".

    Returns:
        Sorted class names.

    Raises:
        ManifestError: On missing columns, unknown or empty splits, missing classes, an image
            in two splits, or a missing safe class.
    """
    missing = [c for c in _REQUIRED_COLUMNS if c not in split_manifest.columns]
    if missing:
        raise ManifestError(f"split_manifest lacks columns {missing}")
    unknown = sorted(set(split_manifest["split"]) - set(SPLITS))
    if unknown:
        raise ManifestError(f"split_manifest has unknown splits {unknown}; expected {SPLITS}")
    empty = [s for s in SPLITS if not (split_manifest["split"] == s).any()]
    if empty:
        raise ManifestError(
            f"split_manifest has no {empty} rows: training needs train, validation (model "
            "selection, threshold calibration) and test (evaluation) images."
        )
    if split_manifest["class"].isna().any():
        raise ManifestError("split_manifest has rows without a class")
    duplicated = split_manifest["sha256"].duplicated(keep=False)
    if duplicated.any():
        shas = sorted(split_manifest.loc[duplicated, "sha256"].unique())
        raise ManifestError(
            f"{len(shas)} images appear more than once in split_manifest (e.g. {shas[:3]}); an "
            "image in two splits would leak test data into training."
        )
    classes = sorted(str(c) for c in split_manifest["class"].unique())
    if safe_class not in classes:
        raise ManifestError(
            f"safe_class '{safe_class}' is not among the classes {classes}; the moderation "
            "metrics (unsafe score = 1 - p(safe)) need it. Set training.safe_class."
        )
    return classes


def split_items(
    manifest: pd.DataFrame, split: str, classes: list[str]
) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The ``(sha256, uri)`` pairs of one split (sorted by sha256) and their class indices.

    Raises:
        ManifestError: If the split has a class outside ``classes`` (one the model never saw).
    """
    rows = manifest[manifest["split"] == split].sort_values("sha256")
    unknown = sorted(set(rows["class"].astype(str)) - set(classes))
    if unknown:
        raise ManifestError(f"{split} has classes {unknown} the model never saw")
    images = list(zip(rows["sha256"].astype(str), rows["uri"].astype(str), strict=True))
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[str(c)] for c in rows["class"]], dtype=np.int64)
    return images, labels
