"""Batch scoring: moderate a folder or an ``s3://`` prefix of images with the champion.

The registered model is loaded in-process (``mlflow.pyfunc.load_model``), so a batch run gives
exactly the answers the served endpoint gives, without a server. Every listed file gets a row in
the verdict table: a file that cannot be read or is not a usable image gets an ``error`` naming
the reason, and never stops the others. ``batch_scoring.engine`` chooses where the work runs:
``local`` (this process) or ``ray`` (a pool of Ray actors, see ``ray_engine.py``).

With the verdict history (the pipeline always passes it) a run is **incremental** and
**resumable**: images the same model version already scored (same sha256) are skipped, each
finished batch is staged in the table folder at once, and a run after one that died picks the
staged verdicts up instead of scoring those images again (see
:mod:`eyecatcher.datasets.verdict_history_dataset`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Any

import fsspec
import pandas as pd

from eyecatcher.datasets.verdict_history_dataset import VerdictHistory
from eyecatcher.monitoring.run_metrics import scoring_run_metrics
from eyecatcher.pipelines.batch_scoring.prefetch import prefetched
from eyecatcher.pipelines.batch_scoring.scoring import (
    VERDICT_COLUMNS,
    ChampionScorer,
    batch_summary,
    effective_batch_size,
)
from eyecatcher.pipelines.batch_scoring.settings import BatchScoringSettings
from eyecatcher.progress import progress_bar
from eyecatcher.registry.resolve import resolve_champion

logger = logging.getLogger(__name__)

#: Batches the local engine reads ahead of the one being scored (memory: this many more).
READ_AHEAD_BATCHES = 1
#: Files hashed at once before an incremental run (reads wait on I/O, mostly S3).
HASH_THREADS = 8


def utc_now() -> pd.Timestamp:
    """The time a run's verdicts are dated with (UTC); its date is the table's scoring day."""
    return pd.Timestamp.now(tz="UTC")


def resolve_batch_scoring_champion(params: Mapping[str, Any]) -> dict[str, Any]:
    """The champion to score with, pinned to its version; the whole block is validated first.

    Validating in the pipeline's first node makes a misspelt key fail before the registry is
    asked or a file listed.

    Args:
        params: The ``batch_scoring`` parameter block (:class:`BatchScoringSettings`).

    Returns:
        :func:`eyecatcher.registry.resolve.resolve_champion`'s record for
        ``models:/<model_name>@<alias>``.
    """
    settings = BatchScoringSettings.parse(params)
    return resolve_champion({"model_name": settings.model_name, "alias": settings.alias})


def list_images_to_score(params: Mapping[str, Any]) -> pd.DataFrame:
    """List the files under the configured source (a local folder or an ``s3://`` prefix).

    Args:
        params: The ``batch_scoring`` parameter block (:class:`BatchScoringSettings`):
            ``source``, ``extensions`` (matched case-insensitively; an empty list means every
            file), ``recursive`` and ``storage_options`` (fsspec, e.g. an S3 ``endpoint_url``).

    Returns:
        One row per file with column ``path`` (a local path, or an ``s3://`` URI), sorted.

    Raises:
        FileNotFoundError: If the source does not exist.
        ValueError: If it exists but holds no matching file.
    """
    settings = BatchScoringSettings.parse(params)
    source = settings.source
    fs, root = fsspec.core.url_to_fs(source, **settings.storage_options)
    if not fs.exists(root):
        raise FileNotFoundError(f"batch_scoring.source {source!r} does not exist")
    if fs.isfile(root):
        found = [root]
    else:
        found = fs.find(root) if settings.recursive else fs.ls(root, detail=False)
    extensions = {e.lower() for e in settings.extensions}
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
    images_to_score: pd.DataFrame,
    champion: Mapping[str, Any],
    params: Mapping[str, Any],
    history: VerdictHistory | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Moderate the listed images the champion has not scored yet, in batches.

    Args:
        images_to_score: Output of :func:`list_images_to_score`.
        champion: Output of :func:`eyecatcher.registry.resolve.resolve_champion`; its
            pinned ``model_uri`` is loaded (once per process, or once per Ray worker).
        params: The ``batch_scoring`` parameter block (:class:`BatchScoringSettings`:
            ``engine``, ``batch_size``, ``storage_options``, ``ray``).
        history: The verdict history (``batch_verdicts_history``). With it, images whose
            sha256 this model version already has in the table are skipped, verdicts staged
            by an earlier run that died are reused, and each finished batch is staged as it
            finishes. Without it every listed image is scored and nothing is staged.

    Returns:
        The verdicts to append (columns :data:`VERDICT_COLUMNS` and ``scored_at``, the UTC
        time the scoring finished, one value per run; one row per listed file not skipped, in
        the listing's order) and a summary (counts per decision and class, errors per reason,
        images skipped and resumed, batches and images retried after a worker died, the model
        and the engine).

    Raises:
        ValueError: If ``engine`` is not ``local`` or ``ray``, or a key is unknown.
    """
    settings = BatchScoringSettings.parse(params)
    engine = settings.engine
    paths = images_to_score["path"].astype(str).tolist()
    todo, resumed, n_skipped, on_batch = paths, [], 0, None
    if history is not None:
        todo, resumed, n_skipped = _plan(paths, champion, settings, history)
        name, version = str(champion["name"]), str(champion["version"])

        def on_batch(rows: pd.DataFrame) -> None:
            history.stage(name, version, rows)

    new, lost = _score_todo(todo, champion, settings, on_batch)
    table = _in_listing_order(paths, new, resumed)
    # One time per run, not per row: it dates the verdicts for per-day monitoring (the
    # table's scored_day), and rows scored minutes apart in one run belong to the same day.
    table["scored_at"] = utc_now()
    summary = batch_summary(
        table, champion, settings.source, n_retried=lost["retried"], engine=engine
    )
    summary.update(
        {
            "n_listed": len(paths),
            "n_already_scored": n_skipped,
            "n_resumed": len(resumed),
            "n_retried_batches": lost["retried_batches"],
            "n_lost_workers": lost["lost_actors"],
            "seconds_lost": round(lost["seconds_lost"], 3),
        }
    )
    logger.info(
        "Batch scoring (%s): %d listed, %d already scored by v%s, %d resumed from an earlier "
        "run, %d scored now; decisions %s, %d errors, %d batches retried",
        engine,
        len(paths),
        n_skipped,
        champion["version"],
        len(resumed),
        len(new),
        summary["decisions"],
        summary["n_errors"],
        lost["retried_batches"],
    )
    return table, summary


def _score_todo(
    todo: list[str],
    champion: Mapping[str, Any],
    settings: BatchScoringSettings,
    on_batch: Callable[[pd.DataFrame], None] | None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The verdicts of ``todo`` on the engine, and what a Ray pool lost (zeros off Ray)."""
    lost: dict[str, Any] = {"retried": 0, "retried_batches": 0, "lost_actors": 0}
    lost["seconds_lost"] = 0.0
    if not todo:
        return pd.DataFrame(columns=list(VERDICT_COLUMNS)), lost
    if settings.engine == "ray":
        from eyecatcher.pipelines.batch_scoring.ray_engine import score_with_ray

        new, report = score_with_ray(todo, champion, settings, on_batch=on_batch)
        lost["retried"], lost["retried_batches"] = report.retried_rows, report.retried_batches
        lost["seconds_lost"], lost["lost_actors"] = report.seconds_lost, report.lost_actors
        return new, lost
    return _score_locally(todo, champion, settings, on_batch), lost


def _plan(
    paths: list[str],
    champion: Mapping[str, Any],
    settings: BatchScoringSettings,
    history: VerdictHistory,
) -> tuple[list[str], list[dict[str, Any]], int]:
    """What to score: ``(paths to score, staged rows to reuse, paths already scored)``."""
    name, version = str(champion["name"]), str(champion["version"])
    hashes = _hashes(paths, settings.storage_options)
    scored = history.scored(name, version)
    staged = history.staged(name, version)
    staged_rows: dict[str, dict[str, Any]] = {}
    if staged is not None:
        for row in staged.astype(object).where(staged.notna(), None).to_dict(orient="records"):
            if row.get("sha256") is not None:
                staged_rows.setdefault(str(row["sha256"]), row)
    todo, resumed, skipped = [], [], 0
    for path in paths:
        sha256 = hashes[path]
        if sha256 is not None and sha256 in scored:
            skipped += 1
        elif sha256 is not None and sha256 in staged_rows:
            # The same bytes under the name listed now: the verdict is the image's.
            resumed.append({**staged_rows[sha256], "path": path})
        else:
            todo.append(path)
    return todo, resumed, skipped


def _hashes(paths: list[str], storage_options: Mapping[str, Any]) -> dict[str, str | None]:
    """The sha256 of each file's bytes; ``None`` for one that cannot be read (it is scored,
    and gets its ``unreadable`` row)."""

    def digest(path: str) -> str | None:
        sha = hashlib.sha256()
        try:
            with fsspec.open(path, "rb", **dict(storage_options)) as handle:
                while chunk := handle.read(1 << 20):
                    sha.update(chunk)
        except OSError:
            return None
        return sha.hexdigest()

    with ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="hash") as pool:
        return dict(zip(paths, pool.map(digest, paths), strict=True))


def _in_listing_order(
    paths: list[str], new: pd.DataFrame, resumed: list[dict[str, Any]]
) -> pd.DataFrame:
    """Scored and resumed rows as one table, in the order the files were listed."""
    if not resumed:
        return new.reset_index(drop=True)
    rows = {
        row["path"]: row
        for row in new.astype(object).where(new.notna(), None).to_dict(orient="records")
    }
    rows.update({row["path"]: row for row in resumed})
    return pd.DataFrame(
        [{c: rows[p].get(c) for c in VERDICT_COLUMNS} for p in paths if p in rows],
        columns=list(VERDICT_COLUMNS),
    )


def _score_locally(
    paths: list[str],
    champion: Mapping[str, Any],
    settings: BatchScoringSettings,
    on_batch: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    scorer = ChampionScorer(champion, settings.storage_options)
    batch_size = effective_batch_size(scorer.model_, settings.batch_size)
    batches = [paths[start : start + batch_size] for start in range(0, len(paths), batch_size)]
    verdicts: list[dict[str, Any]] = []
    with progress_bar(total=len(paths), desc="batch scoring", unit="image") as progress:
        # The next batch is read while this one is scored; one batch ahead bounds memory.
        for batch in prefetched(scorer.read, batches, depth=READ_AHEAD_BATCHES):
            rows = scorer.predict(batch)
            if on_batch is not None:
                # Persisted before the next batch: a run killed later keeps this one.
                on_batch(pd.DataFrame(rows, columns=list(VERDICT_COLUMNS)))
            verdicts.extend(rows)
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
    metrics = {
        **scoring_run_metrics(verdicts),
        "retried_items": float(summary["n_retried"]),
        "retried_batches": float(summary.get("n_retried_batches", 0)),
        "already_scored_items": float(summary.get("n_already_scored", 0)),
        "resumed_items": float(summary.get("n_resumed", 0)),
    }
    report = {
        "model_name": summary["model_name"],
        "model_version": summary["model_version"],
        "source": summary["source"],
        "engine": summary["engine"],
        "scored_at": str(verdicts["scored_at"].max())
        if "scored_at" in verdicts and len(verdicts)
        else None,
        "metrics": {name: float(value) for name, value in metrics.items()},
    }
    mlflow_metrics = {name: {"value": float(value), "step": 0} for name, value in metrics.items()}
    return mlflow_metrics, report
