"""Batch scoring: moderate a folder or an ``s3://`` prefix of images with the champion.

The registered model is loaded in-process (``mlflow.pyfunc.load_model``), so a batch run gives
exactly the answers the served endpoint gives, without a server. Every listed file gets a row in
the verdict table: a file that cannot be read or is not a usable image gets an ``error`` naming
the reason, and never stops the others. ``batch_scoring.engine`` chooses where the work runs:
``local`` (this process) or ``ray`` (a pool of Ray actors, see ``ray_engine.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

import fsspec
import pandas as pd
from tqdm.auto import tqdm

from eyecatcher.monitoring.run_metrics import scoring_run_metrics
from eyecatcher.parameters import refuse_unknown
from eyecatcher.pipelines.batch_scoring.prefetch import prefetched
from eyecatcher.pipelines.batch_scoring.scoring import (
    VERDICT_COLUMNS,
    ChampionScorer,
    batch_summary,
    effective_batch_size,
)

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")
#: Batches the local engine reads ahead of the one being scored (memory: this many more).
READ_AHEAD_BATCHES = 1
#: Every key of the ``batch_scoring`` block: anything else is a typo that would be ignored.
PARAMETER_KEYS = frozenset(
    {
        "model_name",
        "alias",
        "source",
        "recursive",
        "extensions",
        "batch_size",
        "engine",
        "ray",
        "storage_options",
        "shadow_model",
    }
)


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


def score_images(
    images_to_score: pd.DataFrame, champion: Mapping[str, Any], params: Mapping[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Moderate every listed image with the registered champion, in batches.

    Args:
        images_to_score: Output of :func:`list_images_to_score`.
        champion: Output of :func:`eyecatcher.serving.registry.resolve_champion`; its
            pinned ``model_uri`` is loaded (once per process, or once per Ray worker).
        params: The ``batch_scoring`` parameter block (``engine``, ``batch_size``,
            ``storage_options``, ``ray``).

    Returns:
        The verdict table (columns :data:`VERDICT_COLUMNS` and ``scored_at``, the UTC time the
        scoring finished, one value per run; one row per listed file, in order) and a summary
        (counts per decision and class, errors per reason, images retried after a worker died,
        the model and the engine).

    Raises:
        ValueError: If ``engine`` is not one of :data:`ENGINES`, or a key is unknown.
    """
    refuse_unknown("batch_scoring", params, PARAMETER_KEYS)
    engine = str(params.get("engine", "local"))
    if engine not in ENGINES:
        raise ValueError(f"batch_scoring.engine must be one of {list(ENGINES)}, got {engine!r}")
    paths = images_to_score["path"].astype(str).tolist()
    if engine == "ray":
        from eyecatcher.pipelines.batch_scoring.ray_engine import score_with_ray

        table, retried = score_with_ray(paths, champion, params)
    else:
        table, retried = _score_locally(paths, champion, params), 0
    # One time per run, not per row: it dates the verdicts for per-day monitoring, and rows
    # scored minutes apart in one run belong to the same day's batch.
    table["scored_at"] = pd.Timestamp.now(tz="UTC")
    summary = batch_summary(table, champion, params, n_retried=retried, engine=engine)
    logger.info(
        "Batch scoring (%s): %d images, decisions %s, %d errors, %d retried",
        engine,
        len(table),
        summary["decisions"],
        summary["n_errors"],
        retried,
    )
    return table, summary


def _score_locally(
    paths: list[str], champion: Mapping[str, Any], params: Mapping[str, Any]
) -> pd.DataFrame:
    scorer = ChampionScorer(champion, params.get("storage_options") or {})
    batch_size = effective_batch_size(scorer.model_, int(params.get("batch_size", 16)))
    batches = [paths[start : start + batch_size] for start in range(0, len(paths), batch_size)]
    verdicts: list[dict[str, Any]] = []
    with tqdm(total=len(paths), desc="batch scoring", unit="image") as progress:
        # The next batch is read while this one is scored; one batch ahead bounds memory.
        for batch in prefetched(scorer.read, batches, depth=READ_AHEAD_BATCHES):
            verdicts.extend(scorer.predict(batch))
            progress.update(len(batch.paths))
    return pd.DataFrame(verdicts, columns=list(VERDICT_COLUMNS))


def batch_scoring_metrics(
    verdicts: pd.DataFrame, summary: Mapping[str, Any]
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """The run's monitoring figures, the same for both engines: for MLflow and as a file.

    Args:
        verdicts: The verdict table of :func:`score_images`.
        summary: Its summary (the model, and the images retried after a worker died).

    Returns:
        :func:`eyecatcher.monitoring.run_metrics.scoring_run_metrics` of the table (items, error
        rate, decision rates, unsafe-score distribution) and ``retried_items``, in the form of
        kedro-mlflow's metrics dataset (the catalog adds the ``monitoring.`` prefix); and the
        same figures as a monitoring report, with the model version, source and ``scored_at``.
    """
    metrics = {**scoring_run_metrics(verdicts), "retried_items": float(summary["n_retried"])}
    report = {
        "model_name": summary["model_name"],
        "model_version": summary["model_version"],
        "source": summary["source"],
        "engine": summary["engine"],
        "scored_at": str(verdicts["scored_at"].max()) if "scored_at" in verdicts else None,
        "metrics": {name: float(value) for name, value in metrics.items()},
    }
    mlflow_metrics = {name: {"value": float(value), "step": 0} for name, value in metrics.items()}
    return mlflow_metrics, report
