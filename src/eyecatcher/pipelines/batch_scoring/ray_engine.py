"""The ``ray`` engine of batch scoring: the champion loaded once per Ray actor.

Each actor is a :class:`~eyecatcher.pipelines.batch_scoring.scoring.ChampionScorer`, the same
unit of work the local engine runs, so both engines give the same verdicts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from eyecatcher.distributed.actors import (
    ActorPoolSettings,
    PoolReport,
    run_on_actor_pool,
    split_batches,
)
from eyecatcher.distributed.session import check_pool_fits, ray_session
from eyecatcher.pipelines.batch_scoring.scoring import VERDICT_COLUMNS, ChampionScorer
from eyecatcher.pipelines.batch_scoring.settings import BatchScoringSettings

logger = logging.getLogger(__name__)


class RegistryChampionScorer(ChampionScorer):
    """A :class:`ChampionScorer` for a worker process: points MLflow at the champion's registry.

    A worker does not share the driver's MLflow configuration, so the registry the champion was
    resolved in travels with it (``tracking_uri``, ``registry_uri``).
    """

    def __init__(self, champion: Mapping[str, Any], storage_options: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.set_tracking_uri(champion["tracking_uri"])
        mlflow.set_registry_uri(champion["registry_uri"])
        super().__init__(champion, storage_options)


def ray_pool_settings(settings: BatchScoringSettings) -> ActorPoolSettings:
    """The actor pool of ``batch_scoring.ray`` (``workers``, ``cpus_per_worker``, ...)."""
    return ActorPoolSettings(
        workers=settings.ray.workers,
        batch_size=settings.batch_size,
        cpus_per_worker=settings.ray.cpus_per_worker,
        max_restarts=settings.ray.max_restarts,
        replace_timeout_s=settings.ray.replace_timeout_s,
    )


def score_with_ray(
    paths: list[str],
    champion: Mapping[str, Any],
    settings: BatchScoringSettings,
    scorer_cls: type[ChampionScorer] = RegistryChampionScorer,
    on_batch: Callable[[pd.DataFrame], None] | None = None,
) -> tuple[pd.DataFrame, PoolReport]:
    """Score ``paths`` on a pool of Ray actors, each holding one loaded champion.

    This process keeps the books (:func:`~eyecatcher.distributed.actors.run_on_actor_pool`):
    a batch lost with its actor or node is scored again elsewhere, and each batch's verdicts
    are handed to ``on_batch`` once, as soon as they are back.

    Args:
        paths: The files to score (unique; local paths the workers can see, or ``s3://``).
        champion: The resolved champion (pinned ``model_uri`` and its registry).
        settings: The ``batch_scoring`` block (its ``batch_size``, ``storage_options`` and
            ``ray``).
        scorer_cls: The actor class (a :class:`ChampionScorer` taking ``champion`` and
            ``storage_options``).
        on_batch: Called with each finished batch's verdicts (to persist them at once).

    Returns:
        The verdict table in the order of ``paths``, and the pool's report (batches and
        images sent again because a worker or node died under them, time lost).

    Raises:
        RuntimeError: If an image comes back twice or not at all (never silently dropped).
    """
    pool = ray_pool_settings(settings)
    with ray_session(num_cpus=settings.ray.num_cpus) as where:
        logger.info(
            "Batch scoring on Ray (%s): %d images, %d workers, batches of %d",
            where,
            len(paths),
            pool.workers,
            pool.batch_size,
        )
        check_pool_fits(pool.workers, pool.cpus_per_worker, where)
        report = PoolReport()
        frames = []
        for _, frame in run_on_actor_pool(
            split_batches(pd.DataFrame({"path": paths}), pool.batch_size),
            scorer_cls,
            {
                "champion": dict(champion),
                "storage_options": dict(settings.storage_options),
            },
            pool,
            report,
        ):
            if on_batch is not None:
                on_batch(frame)
            frames.append(frame)
    table = _verdict_table(frames, paths)
    if report.retried_batches:
        logger.warning(
            "Batch scoring on Ray: %d batches (%d images) were scored again after a worker or "
            "node died (%.1f s of work lost); each image is in the verdict table once",
            report.retried_batches,
            report.retried_rows,
            report.seconds_lost,
        )
    return table, report


def _verdict_table(frames: list[pd.DataFrame], paths: list[str]) -> pd.DataFrame:
    """The batches' verdicts as one table in the order of ``paths``, each path exactly once.

    Raises:
        RuntimeError: If an image came back twice or not at all.
    """
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(VERDICT_COLUMNS))
    )
    counts = table["path"].value_counts()
    missing = sorted(set(paths) - set(counts.index))
    doubled = sorted(counts[counts > 1].index)
    if missing or doubled:
        raise RuntimeError(
            f"Ray returned {len(table)} verdicts for {len(paths)} images: "
            f"{len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(doubled)} twice (e.g. {doubled[:3]})"
        )
    order = {path: i for i, path in enumerate(paths)}
    table = table.sort_values("path", key=lambda s: s.map(order))
    # Back through Python rows, as the local engine builds its table: Arrow typed a block whose
    # errors were all None as a null column, and the two engines must give equal frames.
    return pd.DataFrame(
        table.astype(object).where(table.notna(), None).to_dict(orient="records"),
        columns=list(VERDICT_COLUMNS),
    )
