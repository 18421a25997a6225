"""Content fingerprints that bind every artefact to the model, data and settings it describes.

Quantization writes the fingerprints of its inputs into its decision and into the ONNX files'
metadata; registration recomputes them from the artefacts it is given and refuses a chain whose
links disagree (:class:`StaleArtefactError`), so a report made for another model or another
split can never be registered with this one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

#: Columns that define a split: which image, which label, which split.
MANIFEST_KEY = ("sha256", "class", "split")
#: Splits a model has seen while it was built: trained on, or selected and calibrated on.
SEEN_SPLITS = ("train", "validation")


class StaleArtefactError(RuntimeError):
    """Two artefacts of one chain were made from different inputs.

    Attributes:
        artefact: The artefact that is out of date (e.g. ``quantization_decision``).
        rebuild: The command that rebuilds it.
    """

    def __init__(self, artefact: str, detail: str, rebuild: str) -> None:
        super().__init__(f"{artefact} is stale: {detail}. Rebuild it with: {rebuild}")
        self.artefact = artefact
        self.rebuild = rebuild


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def config_hash(config: Mapping[str, Any]) -> str:
    """A hash of a JSON-serialisable settings mapping, independent of key order."""
    return _sha256_json(dict(config))


def manifest_hash(split_manifest: pd.DataFrame, split: str | None = None) -> str:
    """A fingerprint of the split manifest (or of one split), independent of row order.

    Two manifests with the same images, labels and split assignment have the same hash; this
    is how the gate knows that two models were tested on the same test split.

    Args:
        split_manifest: The ``split_manifest`` (``sha256``, ``class``, ``split``, ...).
        split: Restrict to one split (``test``), or ``None`` for the whole manifest.

    Returns:
        A hex sha256.

    Raises:
        ValueError: If a required column is missing or the selection is empty.
    """
    missing = [c for c in MANIFEST_KEY if c not in split_manifest.columns]
    if missing:
        raise ValueError(f"split_manifest lacks columns {missing}")
    rows = split_manifest[list(MANIFEST_KEY)]
    if split is not None:
        rows = rows[rows["split"] == split]
    if rows.empty:
        raise ValueError(f"split_manifest has no rows for split={split!r}")
    lines = sorted("\t".join(str(v) for v in row) for row in rows.itertuples(index=False))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def bundle_fingerprint(bundle: Any) -> str:
    """A content hash of a :class:`~eyecatcher.models.bundle.ClassifierBundle`.

    Covers what changes the model's answers (architecture, classes, safe class, preprocessing,
    build arguments, every weight); free-form training metadata is left out.
    """
    digest = hashlib.sha256()
    header = {
        "architecture": bundle.architecture,
        "classes": list(bundle.classes),
        "safe_class": bundle.safe_class,
        "data_config": bundle.data_config,
        "model_kwargs": dict(getattr(bundle, "model_kwargs", {}) or {}),
        "weights_source": bundle.weights_source,
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name in sorted(bundle.state_dict):
        digest.update(name.encode())
        digest.update(bundle.state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seen_images(split_manifest: pd.DataFrame) -> list[str]:
    """The sorted sha256 of every image a model built on this manifest has seen."""
    rows = split_manifest[split_manifest["split"].isin(SEEN_SPLITS)]
    return sorted(set(rows["sha256"].astype(str)))


def check_link(
    artefact: str,
    field: str,
    recorded: str | None,
    actual: str,
    rebuild: str,
) -> None:
    """Raise :class:`StaleArtefactError` unless ``recorded`` equals ``actual``.

    Args:
        artefact: Name of the artefact whose record is checked.
        field: What the fingerprint is of (``model bundle``, ``split manifest``, ...).
        recorded: The fingerprint the artefact carries (``None``: it carries none).
        actual: The fingerprint of the input as it is now.
        rebuild: The command that rebuilds ``artefact``.
    """
    if recorded is None:
        raise StaleArtefactError(
            artefact, f"it records no {field} fingerprint (made by an older version)", rebuild
        )
    if recorded != actual:
        raise StaleArtefactError(
            artefact,
            f"it was made from {field} {recorded[:12]}…, but the current one is {actual[:12]}…",
            rebuild,
        )


def short(values: Iterable[str]) -> list[str]:
    """First 12 characters of each hash, for messages."""
    return [value[:12] for value in values]
