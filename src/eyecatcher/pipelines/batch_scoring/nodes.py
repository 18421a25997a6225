"""Batch scoring: moderate a folder or an ``s3://`` prefix of images with the champion.

The registered model is loaded in-process (``mlflow.pyfunc.load_model``), so a batch run gives
exactly the answers the served endpoint gives, without a server. Every listed file gets a row in
the verdict table: a file that cannot be read or is not a usable image gets an ``error`` naming
the reason, and never stops the others.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import fsspec
import pandas as pd
from tqdm.auto import tqdm

from eyecatcher.serving.registry import served_image_limit, served_limit
from eyecatcher.serving_model.contract import ID_COLUMN, OUTPUT_COLUMNS, encode_image

logger = logging.getLogger(__name__)

#: Columns of the verdict table, in order: the served model's response, keyed by file path.
VERDICT_COLUMNS = ("path", *(c for c in OUTPUT_COLUMNS if c != ID_COLUMN))


def list_images_to_score(params: Mapping[str, Any]) -> pd.DataFrame:
    """List the files under the configured source (a local folder or an ``s3://`` prefix).

    Args:
        params: The ``batch_scoring`` parameter block: ``source``, ``extensions`` (matched
            case-insensitively; an empty list means every file), ``recursive`` and
            ``storage_options`` (fsspec, e.g. an S3 ``endpoint_url``).

    Returns:
        One row per file with column ``path`` (a local path, or an ``s3://`` URI), sorted.

    Raises:
        FileNotFoundError: If the source does not exist.
        ValueError: If it exists but holds no matching file.
    """
    source = str(params["source"])
    fs, root = fsspec.core.url_to_fs(source, **dict(params.get("storage_options") or {}))
    if not fs.exists(root):
        raise FileNotFoundError(f"batch_scoring.source {source!r} does not exist")
    if fs.isfile(root):
        found = [root]
    else:
        found = fs.find(root) if params.get("recursive", True) else fs.ls(root, detail=False)
    extensions = {str(e).lower() for e in params.get("extensions") or []}
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    kept = [path for path in found if not extensions or path.lower().endswith(tuple(extensions))]
    skipped = len(found) - len(kept)
    if skipped:
        # Files left out get no verdict row at all: say so, so that a folder of, say, phone
        # photos in a format missing from `extensions` is not mistaken for a clean run.
        examples = sorted({PurePosixPath(p).suffix.lower() or "(none)" for p in found} - {""})
        logger.warning(
            "Batch scoring: %d of %d files under %s skipped: their extension is not in "
            "batch_scoring.extensions %s (extensions seen: %s)",
            skipped,
            len(found),
            source,
            sorted(extensions),
            [e for e in examples if e not in extensions],
        )
    paths = sorted(
        path if protocol in {"file", "local"} else f"{protocol}://{path}" for path in kept
    )
    if not paths:
        raise ValueError(f"no files with extensions {sorted(extensions)} under {source!r} to score")
    logger.info("Batch scoring: %d files under %s", len(paths), source)
    return pd.DataFrame({"path": paths})


def _read(path: str, storage_options: Mapping[str, Any], limit: int | None = None) -> bytes:
    """The file's bytes; at most ``limit + 1`` of them, so a huge file is never read whole."""
    with fsspec.open(path, "rb", **dict(storage_options)) as handle:
        return handle.read() if limit is None else handle.read(limit + 1)


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _verdict(path: str, row: Mapping[str, Any]) -> dict[str, Any]:
    probabilities = _cell(row.get("probabilities"))
    return {
        "path": path,
        "class": _cell(row.get("class")),
        # JSON text: the class set is the model's, and Parquet needs one type per column.
        "probabilities": None
        if probabilities is None
        else json.dumps({str(k): float(v) for k, v in dict(probabilities).items()}),
        "unsafe_score": _cell(row.get("unsafe_score")),
        "decision": _cell(row.get("decision")),
        "model_name": _cell(row.get("model_name")),
        "model_version": None
        if _cell(row.get("model_version")) is None
        else str(row["model_version"]),
        "error": _cell(row.get("error")),
    }


def _failed(path: str, champion: Mapping[str, Any], error: str) -> dict[str, Any]:
    return {
        "path": path,
        "class": None,
        "probabilities": None,
        "unsafe_score": None,
        "decision": None,
        "model_name": champion["name"],
        "model_version": str(champion["version"]),
        "error": error,
    }


def _predict_batch(
    model: Any, paths: Sequence[str], images: Sequence[str], champion: Mapping[str, Any]
) -> list[dict[str, Any]]:
    frame = pd.DataFrame({"id": list(paths), "image": list(images)})
    try:
        answers = model.predict(frame)
    except Exception as exc:  # isolate the row that breaks the model, keep the rest
        if len(paths) == 1:
            logger.warning("The model failed on %s: %s", paths[0], exc)
            return [_failed(paths[0], champion, f"model_error: {type(exc).__name__}: {exc}")]
        logger.warning("The model failed on a batch (%s); scoring its rows one by one", exc)
        return [
            verdict
            for path, image in zip(paths, images, strict=True)
            for verdict in _predict_batch(model, [path], [image], champion)
        ]
    records = answers.to_dict(orient="records") if isinstance(answers, pd.DataFrame) else answers
    return [_verdict(path, row) for path, row in zip(paths, records, strict=True)]


def score_images(
    images_to_score: pd.DataFrame, champion: Mapping[str, Any], params: Mapping[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Moderate every listed image with the registered champion, in batches.

    Args:
        images_to_score: Output of :func:`list_images_to_score`.
        champion: Output of :func:`eyecatcher.serving.registry.resolve_champion`; its
            pinned ``model_uri`` is loaded.
        params: The ``batch_scoring`` parameter block (``batch_size``, ``storage_options``).

    Returns:
        The verdict table (columns :data:`VERDICT_COLUMNS`, one row per listed file, in order)
        and a summary (counts per decision and class, errors per reason, the model).
    """
    import mlflow.pyfunc

    batch_size = max(1, int(params.get("batch_size", 16)))
    storage_options = dict(params.get("storage_options") or {})
    model = mlflow.pyfunc.load_model(champion["model_uri"])
    # The model refuses images above its byte limit anyway; knowing the limit here means a
    # stray multi-gigabyte file is not read (and base64-encoded) whole just to be refused.
    limit = served_image_limit(model)
    # A batch larger than the model's request limit would be refused whole (HTTP 400 served).
    max_rows = served_limit(model, "max_rows")
    if max_rows is not None and batch_size > max_rows:
        logger.warning(
            "batch_scoring.batch_size %d is above the model's max_rows %d: using %d",
            batch_size,
            max_rows,
            max_rows,
        )
        batch_size = max_rows
    paths = images_to_score["path"].astype(str).tolist()
    verdicts: list[dict[str, Any]] = []
    with tqdm(total=len(paths), desc="batch scoring", unit="image") as progress:
        for start in range(0, len(paths), batch_size):
            batch_paths, batch_images = [], []
            for path in paths[start : start + batch_size]:
                try:
                    data = _read(path, storage_options, limit)
                except OSError as exc:
                    verdicts.append(_failed(path, champion, f"unreadable: {exc}"))
                    continue
                if limit is not None and len(data) > limit:
                    verdicts.append(
                        _failed(
                            path,
                            champion,
                            f"too_large_file: more than the model's limit of {limit} bytes",
                        )
                    )
                    continue
                batch_paths.append(path)
                batch_images.append(encode_image(data))
            if batch_paths:
                verdicts.extend(_predict_batch(model, batch_paths, batch_images, champion))
            progress.update(min(batch_size, len(paths) - start))
    # Unreadable files were appended out of order within their batch: restore the listing's.
    order = {path: i for i, path in enumerate(paths)}
    verdicts.sort(key=lambda v: order[v["path"]])
    table = pd.DataFrame(verdicts, columns=list(VERDICT_COLUMNS))
    summary = _summary(table, champion, params)
    logger.info(
        "Batch scoring: %d images, decisions %s, %d errors",
        len(table),
        summary["decisions"],
        summary["n_errors"],
    )
    return table, summary


def _summary(
    table: pd.DataFrame, champion: Mapping[str, Any], params: Mapping[str, Any]
) -> dict[str, Any]:
    errors = table["error"].dropna()
    return {
        "source": str(params["source"]),
        "model_uri": champion["model_uri"],
        "model_name": champion["name"],
        "model_version": str(champion["version"]),
        "n_images": len(table),
        "n_scored": int(table["error"].isna().sum()),
        "n_errors": len(errors),
        "decisions": {str(k): int(v) for k, v in table["decision"].value_counts().items()},
        "classes": {str(k): int(v) for k, v in table["class"].value_counts().items()},
        "errors_by_reason": {
            str(k): int(v) for k, v in errors.str.split(":").str[0].value_counts().items()
        },
    }
