"""Score one batch of image paths with the champion: the unit of work of both engines.

The local engine calls a :class:`ChampionScorer` in-process; the Ray engine runs one per worker
actor. Both therefore read, encode and predict identically, through the served model's own
``predict`` (``mlflow.pyfunc``), so batch verdicts are the endpoint's verdicts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pandas as pd

from eyecatcher.serving.in_process import InProcessScorer, request_frame, served_limit
from eyecatcher.serving_model.contract import ID_COLUMN, OUTPUT_COLUMNS, encode_image

logger = logging.getLogger(__name__)

#: Columns of the verdict table, in order: the file path, the sha256 of its bytes (``None`` when
#: they could not be read whole), then the served model's response.
VERDICT_COLUMNS = ("path", "sha256", *(c for c in OUTPUT_COLUMNS if c != ID_COLUMN))


def read_limited(path: str, storage_options: Mapping[str, Any], limit: int | None = None) -> bytes:
    """The file's bytes; at most ``limit + 1`` of them, so a huge file is never read whole."""
    with fsspec.open(path, "rb", **dict(storage_options)) as handle:
        return handle.read() if limit is None else handle.read(limit + 1)


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a frame as dicts: ``to_dict(orient="records")`` without its per-cell cost."""
    columns = {str(name): frame[name].tolist() for name in frame.columns}
    if not columns:
        return [{} for _ in range(len(frame))]
    rows = zip(*columns.values(), strict=True)
    return [dict(zip(columns, values, strict=True)) for values in rows]


def _verdict(path: str, row: Mapping[str, Any], sha256: str | None = None) -> dict[str, Any]:
    probabilities = _cell(row.get("probabilities"))
    return {
        "path": path,
        "sha256": sha256,
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


def failed_verdict(
    path: str, champion: Mapping[str, Any], error: str, sha256: str | None = None
) -> dict[str, Any]:
    """The verdict row of a file that got no answer from the model, with the reason."""
    return {
        "path": path,
        "sha256": sha256,
        "class": None,
        "probabilities": None,
        "unsafe_score": None,
        "decision": None,
        "model_name": champion["name"],
        "model_version": str(champion["version"]),
        "error": error,
    }


def predict_batch(
    model: Any,
    paths: Sequence[str],
    images: Sequence[str],
    champion: Mapping[str, Any],
    hashes: Sequence[str | None] | None = None,
) -> list[dict[str, Any]]:
    """The model's verdicts for encoded images; a batch that breaks it is rescored row by row.

    Args:
        model: Anything with the served model's ``predict(frame)``.
        paths: The files, one per image (they become the ``id`` column).
        images: The images, encoded as the served model expects (:func:`encode_image`).
        champion: The resolved champion (its name and version label failed rows).
        hashes: The sha256 of each file's bytes (``None``: not known).

    Returns:
        One verdict row per path, in order; a row the model raises on carries ``model_error``.
    """
    hashes = list(hashes) if hashes is not None else [None] * len(paths)
    frame = request_frame(list(images), list(paths))
    try:
        answers = model.predict(frame)
    except Exception as exc:  # isolate the row that breaks the model, keep the rest
        if len(paths) == 1:
            logger.warning("The model failed on %s: %s", paths[0], exc)
            return [
                failed_verdict(
                    paths[0], champion, f"model_error: {type(exc).__name__}: {exc}", hashes[0]
                )
            ]
        logger.warning("The model failed on a batch (%s); scoring its rows one by one", exc)
        return [
            verdict
            for path, image, sha256 in zip(paths, images, hashes, strict=True)
            for verdict in predict_batch(model, [path], [image], champion, [sha256])
        ]
    records = _records(answers) if isinstance(answers, pd.DataFrame) else answers
    return [
        _verdict(path, row, sha256)
        for path, row, sha256 in zip(paths, records, hashes, strict=True)
    ]


def effective_batch_size(model: Any, batch_size: int) -> int:
    """``batch_size``, capped (with a warning) at the model's request limit ``max_rows``.

    A batch larger than the limit would be refused whole, as the served endpoint refuses it.
    """
    batch_size = max(1, int(batch_size))
    max_rows = served_limit(model, "max_rows")
    if max_rows is not None and batch_size > max_rows:
        logger.warning(
            "batch_scoring.batch_size %d is above the model's max_rows %d: using %d",
            batch_size,
            max_rows,
            max_rows,
        )
        return max_rows
    return batch_size


@dataclass
class ReadBatch:
    """A batch of paths with their encoded images, before the model sees them.

    Attributes:
        paths: Every path of the batch, in order.
        readable_paths: The paths that were read, in order.
        images: Their bytes, encoded as the served model expects, one per readable path.
        hashes: The sha256 of each readable path's bytes.
        verdicts: The rows of the paths that could not be read (or are over the byte limit).
    """

    paths: list[str]
    readable_paths: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)


class ChampionScorer:
    """Reads, encodes and scores batches of image paths with one loaded champion.

    Loading is the expensive part, so an instance is made once per process (or Ray actor) and
    called on every batch it is given.

    Args:
        champion: Output of :func:`eyecatcher.registry.resolve.resolve_champion`; its pinned
            ``model_uri`` is loaded.
        storage_options: fsspec options for ``s3://`` paths.
        model: An already-loaded model to use instead of loading ``model_uri``.
    """

    def __init__(
        self,
        champion: Mapping[str, Any],
        storage_options: Mapping[str, Any] | None = None,
        model: Any | None = None,
    ) -> None:
        scorer = InProcessScorer(champion["model_uri"], model=model)
        self.champion = dict(champion)
        self.storage_options = dict(storage_options or {})
        self.model_ = scorer.model
        # The model refuses images above its byte limit anyway; knowing the limit here means a
        # stray multi-gigabyte file is not read (and base64-encoded) whole just to be refused.
        self.limit_ = scorer.max_image_bytes
        # A request over the model's row limit is refused whole: predict in chunks under it.
        self.max_rows_ = scorer.max_rows

    def read(self, paths: Sequence[str]) -> ReadBatch:
        """Read and encode a batch; files that cannot be used get their verdict row already.

        It does no model work, so the local engine runs it ahead, in a thread, while the
        previous batch is scored (see :mod:`eyecatcher.pipelines.batch_scoring.prefetch`).
        """
        batch = ReadBatch(paths=list(paths))
        for path in paths:
            try:
                data = read_limited(path, self.storage_options, self.limit_)
            except OSError as exc:
                batch.verdicts[path] = failed_verdict(path, self.champion, f"unreadable: {exc}")
                continue
            if self.limit_ is not None and len(data) > self.limit_:
                # Only the first limit + 1 bytes were read: no sha256 of the whole file.
                batch.verdicts[path] = failed_verdict(
                    path,
                    self.champion,
                    f"too_large_file: more than the model's limit of {self.limit_} bytes",
                )
                continue
            batch.readable_paths.append(path)
            batch.images.append(encode_image(data))
            # The key of the verdict history: the same bytes under another name are the
            # same image for incremental scoring and for excluding training images.
            batch.hashes.append(hashlib.sha256(data).hexdigest())
        return batch

    def predict(self, batch: ReadBatch) -> list[dict[str, Any]]:
        """One verdict row per path of a :meth:`read` batch, in the order it was read."""
        verdicts = dict(batch.verdicts)
        step = self.max_rows_ or max(1, len(batch.readable_paths))
        for start in range(0, len(batch.readable_paths), step):
            chunk = slice(start, start + step)
            for verdict in predict_batch(
                self.model_,
                batch.readable_paths[chunk],
                batch.images[chunk],
                self.champion,
                batch.hashes[chunk],
            ):
                verdicts[verdict["path"]] = verdict
        return [verdicts[path] for path in batch.paths]

    def score(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        """One verdict row per path, in the order given; bad files get a row ``error``."""
        return self.predict(self.read(paths))

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Score a frame with column ``path``: the form Ray Data hands a batch to an actor."""
        rows = self.score(batch["path"].astype(str).tolist())
        return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


def batch_summary(
    table: pd.DataFrame,
    champion: Mapping[str, Any],
    source: str,
    n_retried: int = 0,
    engine: str = "local",
) -> dict[str, Any]:
    """Counts per decision, class and error reason; ``n_scored + n_errors == n_images``.

    ``n_retried`` counts images scored a second time because a worker died under them: they
    are in the table once, so they are part of ``n_scored`` or ``n_errors`` already.
    """
    errors = table["error"].dropna()
    return {
        "source": source,
        "engine": engine,
        "model_uri": champion["model_uri"],
        "model_name": champion["name"],
        "model_version": str(champion["version"]),
        "n_images": len(table),
        "n_scored": int(table["error"].isna().sum()),
        "n_errors": len(errors),
        "n_retried": int(n_retried),
        "decisions": {str(k): int(v) for k, v in table["decision"].value_counts().items()},
        "classes": {str(k): int(v) for k, v in table["class"].value_counts().items()},
        "errors_by_reason": {
            str(k): int(v) for k, v in errors.str.split(":").str[0].value_counts().items()
        },
    }
