"""Nodes of the ingestion pipeline.

Every file under the configured sources is read once, hashed and fully decoded. A file that is
not a usable image is quarantined with a reason instead of failing the run; identical bytes
found under several names become one image that remembers every location.
"""

from __future__ import annotations

import logging
import posixpath
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd

from eyecatcher.images import (
    ImageRejectedError,
    sha256_bytes,
    validate_image,
)
from eyecatcher.pipelines.ingestion.settings import IngestionSettings, SourceSettings
from eyecatcher.progress import progress_bar
from eyecatcher.storage import filesystem

logger = logging.getLogger(__name__)

INDEX_COLUMNS = [
    "sha256",
    "uri",
    "all_uris",
    "source",
    "width",
    "height",
    "format",
    "mode",
    "n_frames",
    "bytes",
    "folder_label",
]
QUARANTINE_COLUMNS = ["uri", "source", "reason", "detail", "bytes"]


@dataclass(frozen=True)
class _Candidate:
    """A file found under a source, before it is read."""

    source: str
    uri: str
    size: int | None
    folder_label: str | None
    storage_options: dict[str, Any]


def _list_source(
    source: SourceSettings, settings: IngestionSettings
) -> tuple[list[_Candidate], int, int, int]:
    """List the files of one source.

    Returns the candidates and the numbers of hidden files, symlinked folders and files with
    an unlisted extension (``check_all_files: false``) that were skipped.
    """
    name = source.label
    options = settings.options_of(source)
    fs, root = filesystem(source.uri, options)
    root = root.rstrip("/")
    # URIs are recorded as the user wrote the source (relative paths stay relative), so the
    # index stays valid when the project folder moves.
    base_uri = source.uri.rstrip("/")
    if fs.isfile(root):
        found = {root: fs.info(root)}
    elif fs.isdir(root):
        found = fs.find(root, detail=True)
    else:
        raise FileNotFoundError(
            f"Ingestion source '{name}' ({source.uri}) does not exist or is not reachable. "
            "Check `ingestion.sources` in conf/<env>/parameters_ingestion.yml."
        )
    extensions = {e.lower() for e in settings.extensions}
    check_all = settings.check_all_files
    candidates, hidden, other_extension = [], 0, 0
    linked_folders = []
    for path in sorted(found):
        info = found[path]
        if info.get("type", "file") != "file":
            # fsspec lists a local symlink as type "other": a link to a file is an image the user
            # put there (datasets are often laid out with links), and a broken one must be
            # quarantined as unreadable, not vanish. Linked folders are not followed (loops).
            if not info.get("islink"):
                continue
            if fs.isdir(path):
                linked_folders.append(path)
                continue
        relative = posixpath.relpath(path, root) if path != root else posixpath.basename(path)
        # Dotfiles (.DS_Store, ._AppleDouble, .gitkeep) are never images a user meant to add.
        if any(part.startswith(".") for part in relative.split("/")):
            hidden += 1
            continue
        if not check_all and posixpath.splitext(path)[1].lower() not in extensions:
            other_extension += 1
            continue
        parent = posixpath.dirname(relative)
        label = posixpath.basename(parent) if source.folder_labels and parent else None
        uri = base_uri if path == root else f"{base_uri}/{relative}"
        candidates.append(_Candidate(name, uri, info.get("size"), label, options))
    if linked_folders:
        logger.warning(
            "Source '%s': %d symlinked folder(s) not followed (they may loop): %s",
            name,
            len(linked_folders),
            ", ".join(linked_folders[:10]),
        )
    if other_extension:
        logger.warning(
            "Source '%s': %d file(s) skipped for an extension not in `ingestion.extensions` "
            "(check_all_files is false)",
            name,
            other_extension,
        )
    return candidates, hidden, len(linked_folders), other_extension


def _inspect(candidate: _Candidate, settings: IngestionSettings) -> dict[str, Any]:
    """Read and validate one file; returns an index row or a quarantine row (``reason`` set)."""
    max_bytes = settings.max_bytes
    if candidate.size is not None and candidate.size > max_bytes:
        return {
            "reason": "too_large_file",
            "detail": f"{candidate.size} bytes exceeds the limit of {max_bytes}",
            "bytes": candidate.size,
        }
    try:
        fs, path = filesystem(candidate.uri, candidate.storage_options)
        data = fs.cat_file(path)
    except Exception as exc:  # permissions, vanished file, network: record, don't crash
        return {"reason": "unreadable", "detail": f"{type(exc).__name__}: {exc}", "bytes": None}
    try:
        info = validate_image(
            data,
            min_side=settings.min_side,
            max_pixels=settings.max_pixels,
            max_frames=settings.max_frames,
        )
    except ImageRejectedError as exc:
        return {"reason": exc.reason, "detail": exc.detail, "bytes": len(data)}
    return {
        "sha256": sha256_bytes(data),
        "width": info.width,
        "height": info.height,
        "format": info.format,
        "mode": info.mode,
        "n_frames": info.n_frames,
        "bytes": len(data),
    }


def _summary_line(summary: dict[str, Any]) -> str:
    reasons = summary["quarantined_by_reason"]
    by_reason = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
    return (
        f"Ingestion: {summary['indexed']} indexed, {summary['quarantined']} quarantined"
        f"{f' ({by_reason})' if by_reason else ''}, {summary['duplicates']} duplicates"
    )


def ingest_images(params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Index every usable image under the configured sources and quarantine the rest.

    Args:
        params: The ``ingestion`` parameters: ``sources`` (each with ``name``, ``uri``, optional
            ``folder_labels`` and ``storage_options``), ``storage_options`` (the default for
            sources without their own), ``extensions``, ``check_all_files``,
            ``min_side``, ``max_pixels``, ``max_frames``, ``max_bytes`` and ``workers``.

    Returns:
        The image index (one row per distinct sha256, columns as in docs/architecture.md), the
        quarantine table (one row per rejected file with its reason) and a summary dict.

    Raises:
        FileNotFoundError: If a source does not exist.
        ValueError: If no source is configured, or no usable image was found at all.
    """
    settings = IngestionSettings.parse(params)
    sources = settings.sources
    candidates: list[_Candidate] = []
    hidden = linked = other_extension = 0
    for source in sources:
        found, skipped, linked_folders, unlisted = _list_source(source, settings)
        candidates += found
        hidden += skipped
        linked += linked_folders
        other_extension += unlisted
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        results = list(
            progress_bar(
                pool.map(lambda c: _inspect(c, settings), candidates),
                total=len(candidates),
                desc="Ingesting images",
                unit="img",
                disable=len(candidates) < 50,
            )
        )

    rows, quarantine, duplicates = _index_rows(candidates, results)
    index = pd.DataFrame(list(rows.values()), columns=INDEX_COLUMNS)
    quarantined = pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS)
    quarantined["bytes"] = quarantined["bytes"].astype("Int64")
    summary = {
        "files_seen": len(candidates),
        "indexed": len(index),
        "quarantined": len(quarantined),
        "quarantined_by_reason": dict(Counter(quarantined["reason"])),
        "duplicates": duplicates,
        "hidden_files_skipped": hidden,
        "linked_folders_skipped": linked,
        "other_extension_skipped": other_extension,
        "sources": [source.label for source in sources],
    }
    line = _summary_line(summary)
    print(line)  # the one line a user running `kedro run` is looking for
    for row in quarantine[:20]:
        logger.warning("Quarantined %s: %s (%s)", row["uri"], row["reason"], row["detail"])
    if len(index) == 0:
        raise ValueError(
            f"No usable image found under {summary['sources']} ({line}). "
            "See the quarantine reasons above."
        )
    return index, quarantined, summary


def _index_rows(
    candidates: list[_Candidate], results: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], int]:
    """Index rows by sha256 (a copy adds its URI to ``all_uris``), quarantine rows, copies."""
    rows: dict[str, dict[str, Any]] = {}
    quarantine = []
    duplicates = 0
    for candidate, result in zip(candidates, results, strict=True):
        if "reason" in result:
            quarantine.append({"uri": candidate.uri, "source": candidate.source, **result})
            continue
        existing = rows.get(result["sha256"])
        if existing is not None:
            duplicates += 1
            existing["all_uris"].append(candidate.uri)
            continue
        rows[result["sha256"]] = {
            **result,
            "uri": candidate.uri,
            "all_uris": [candidate.uri],
            "source": candidate.source,
            "folder_label": candidate.folder_label,
        }
    return rows, quarantine, duplicates


def log_ingestion_metrics(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Turn the ingestion summary into MLflow metrics (indexed, quarantined per reason, ...)."""
    metrics = {
        "files_seen": summary["files_seen"],
        "indexed": summary["indexed"],
        "quarantined": summary["quarantined"],
        "duplicates": summary["duplicates"],
        "linked_folders_skipped": summary.get("linked_folders_skipped", 0),
        "other_extension_skipped": summary.get("other_extension_skipped", 0),
    }
    # The catalog's metrics dataset adds the `ingestion.` prefix.
    for reason, count in summary["quarantined_by_reason"].items():
        metrics[f"quarantined.{reason}"] = count
    return {key: {"value": float(value), "step": 0} for key, value in metrics.items()}
