"""Map a pandas frame through an actor pool with Ray Data, counting rows redone after a crash.

A worker that dies is restarted by Ray (``max_restarts``) and the batches it held are run again
(``max_task_retries``). Ray discards the dead attempt's output, so each row comes back once; a
small ledger actor counts the rows that were started more than once, so a summary can say so.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from eyecatcher.distributed.session import import_ray

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActorPoolSettings:
    """How the work is spread: ``workers`` actors, ``batch_size`` rows per call.

    Attributes:
        workers: Actors in the pool (each loads the model once).
        batch_size: Rows per call of the actor.
        cpus_per_worker: CPUs Ray reserves per actor.
        max_restarts: How often a dead actor is restarted before the run fails.
    """

    workers: int = 2
    batch_size: int = 16
    cpus_per_worker: float = 1.0
    max_restarts: int = 3

    def __post_init__(self) -> None:
        if self.workers < 1 or self.batch_size < 1 or self.max_restarts < 0:
            raise ValueError(
                f"ray settings need workers >= 1, batch_size >= 1 and max_restarts >= 0, got {self}"
            )


class _Ledger:
    """Rows per batch key, and how many rows were started again (a retry)."""

    def __init__(self) -> None:
        self.started: set[str] = set()
        self.retried = 0

    def start(self, key: str, rows: int) -> None:
        if key in self.started:
            self.retried += rows
        self.started.add(key)

    def retried_rows(self) -> int:
        return self.retried


class _LedgeredActor:
    """Builds the worker's actor once, and records each batch in the ledger before running it."""

    def __init__(
        self, actor_cls: type, actor_kwargs: Mapping[str, Any], key_column: str, ledger: Any
    ) -> None:
        self.inner = actor_cls(**dict(actor_kwargs))
        self.key_column = key_column
        self.ledger = ledger

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import ray

        keys = batch[self.key_column].astype(str)
        ray.get(
            self.ledger.start.remote(f"{keys.iloc[0]}\0{keys.iloc[-1]}\0{len(keys)}", len(keys))
        )
        return self.inner(batch)


def map_with_actor_pool(
    frame: pd.DataFrame,
    actor_cls: type,
    actor_kwargs: Mapping[str, Any],
    settings: ActorPoolSettings,
    key_column: str,
) -> tuple[pd.DataFrame, int]:
    """Run ``actor_cls(**actor_kwargs)(batch)`` over ``frame`` on a pool of Ray actors.

    Ray must be initialised (:func:`eyecatcher.distributed.session.ray_session`). The frame is
    cut into one block per batch, so a crash redoes one batch, not a whole partition.

    Args:
        frame: The input rows; ``key_column`` must be unique per row.
        actor_cls: A class importable on the workers; its instances map a pandas batch to a
            pandas frame of results.
        actor_kwargs: Constructor arguments (sent to each worker).
        settings: Pool size, batch size, CPUs and restarts.
        key_column: The column that identifies a row.

    Returns:
        The results, in no particular order, and the number of rows started more than once.
    """
    ray = import_ray()
    from ray.data import ActorPoolStrategy, from_pandas

    ledger = ray.remote(num_cpus=0)(_Ledger).remote()
    n_blocks = max(1, math.ceil(len(frame) / settings.batch_size))
    blocks = [
        frame.iloc[i * settings.batch_size : (i + 1) * settings.batch_size].reset_index(drop=True)
        for i in range(n_blocks)
    ]
    with warnings.catch_warnings():
        # Restarts are set through map_batches' remote arguments, the way Ray 2.60 documents
        # for actor pools; it warns that such arguments move to named parameters in 2.64.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        results = from_pandas(blocks).map_batches(
            _LedgeredActor,
            fn_constructor_kwargs={
                "actor_cls": actor_cls,
                "actor_kwargs": dict(actor_kwargs),
                "key_column": key_column,
                "ledger": ledger,
            },
            batch_size=settings.batch_size,
            batch_format="pandas",
            compute=ActorPoolStrategy(size=settings.workers),
            num_cpus=settings.cpus_per_worker,
            max_restarts=settings.max_restarts,
            max_task_retries=settings.max_restarts,
        )
    table = results.to_pandas()
    retried = int(ray.get(ledger.retried_rows.remote()))
    ray.kill(ledger)
    return table, retried
