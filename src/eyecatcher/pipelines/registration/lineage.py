"""Lineage facts recorded on every registered version: code commit, data and model fingerprints."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from eyecatcher import storage
from eyecatcher.fingerprints import manifest_hash

logger = logging.getLogger(__name__)

__all__ = ["git_commit", "label_sources", "manifest_hash", "model_fingerprint"]

#: Split-manifest column saying who decided each image's class (docs/labelling.md).
LABEL_SOURCE_COLUMN = "label_source"


def git_commit(path: str | Path = ".") -> tuple[str, bool | None]:
    """The commit checked out at ``path`` and whether the working tree has changes.

    Args:
        path: A folder inside the repository (the project root during ``kedro run``).

    Returns:
        ``(commit, dirty)``; ``("unknown", None)`` outside a git checkout, with a warning
        (a version then has no code lineage, which a reviewer must be able to see).
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=path,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        # git's own words say why ("not a git repository", "dubious ownership", ...).
        said = (getattr(exc, "stderr", None) or "").strip()
        logger.warning(
            "No git commit for the registered version's lineage: %s%s",
            exc,
            f" git said: {said}" if said else "",
        )
        return "unknown", None
    return commit, bool(status.strip())


def model_fingerprint(
    bundle_state: Mapping[str, Any], settings: Mapping[str, Any], onnx_path: str | Path | None
) -> str:
    """A content hash of what a registered version would serve.

    Two registrations with the same weights, preprocessing, classes, precision (and ONNX file)
    and serving settings have the same fingerprint: re-running the pipeline without a change
    then keeps the champion instead of registering a copy of it.

    Args:
        bundle_state: ``architecture``, ``classes``, ``data_config``, ``safe_class`` and
            ``state_dict`` of the bundle.
        settings: Everything else frozen into the served model (precision, thresholds,
            limits), JSON-serialisable.
        onnx_path: The ONNX file that would be served, if any.

    Returns:
        A hex sha256.
    """
    digest = hashlib.sha256()
    header = {k: v for k, v in bundle_state.items() if k != "state_dict"}
    digest.update(json.dumps({"bundle": header, "settings": settings}, sort_keys=True).encode())
    for name in sorted(bundle_state["state_dict"]):
        tensor = bundle_state["state_dict"][name]
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    if onnx_path is not None:
        # Local or s3:// (quantization's ONNX dataset may live on an object store).
        with storage.open_read(str(onnx_path)) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def label_sources(split_manifest: pd.DataFrame) -> str | None:
    """How many of the version's images each label source decided, as a JSON tag value.

    Args:
        split_manifest: The split manifest the version was trained and tested on.

    Returns:
        JSON of ``{source: images}`` over every split, sorted by source, e.g.
        ``{"human": 16, "rekognition": 184}`` (only sources present are listed; rows without
        a source count as ``"missing"``); ``None`` when the manifest has no ``label_source``
        column (a manifest made before label sources were recorded).
    """
    if LABEL_SOURCE_COLUMN not in split_manifest.columns:
        return None
    counts = split_manifest[LABEL_SOURCE_COLUMN].fillna("missing").astype(str).value_counts()
    return json.dumps({str(k): int(v) for k, v in sorted(counts.items())}, sort_keys=True)
