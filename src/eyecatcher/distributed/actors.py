"""Map batches of a pandas frame through a pool of Ray actors, with every batch accounted here.

The driver (this process) holds all the bookkeeping: which batch went to which actor, which
came back, which must be run again. Nothing the job needs to finish lives only on a worker
node, so losing one (its actors die with it) costs the batches that were running there, no
more: the driver sends them to a surviving or replacement actor, up to ``max_restarts`` times
per batch, and yields each batch's result exactly once, as soon as it is back. A caller that
persists each result as it arrives (batch scoring stages it, feature extraction writes the
cache) therefore keeps everything finished before a crash of the driver itself.

Ray's own actor restarts and task retries are off for the pool: they would rerun work the
driver cannot see, and a restart on a dead node waits for a node that is not coming back.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
        max_restarts: How often one batch is sent again after the actor (or node) running it
            died, before the job fails (what finished is kept by the caller).
        replace_timeout_s: How long the driver waits, with every actor of the pool dead, for
            a replacement the cluster has no room for, before the job fails.
    """

    workers: int = 2
    batch_size: int = 16
    cpus_per_worker: float = 1.0
    max_restarts: int = 3
    replace_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.workers < 1 or self.batch_size < 1 or self.max_restarts < 0:
            raise ValueError(
                f"ray settings need workers >= 1, batch_size >= 1 and max_restarts >= 0, got {self}"
            )


@dataclass
class PoolReport:
    """What the pool did, filled in while the results are yielded.

    Attributes:
        batches: Batches submitted (each counted once).
        retried_batches: Batches sent again after their actor or node died.
        retried_rows: Rows of those batches.
        lost_actors: Actors found dead.
        replaced_actors: Actors started to replace dead ones.
        seconds_lost: Wall time from each failed submission to its failure being seen (the
            work that was thrown away, summed over failures).
        failures: One line per failure (batch, actor, error type).
    """

    batches: int = 0
    retried_batches: int = 0
    retried_rows: int = 0
    lost_actors: int = 0
    replaced_actors: int = 0
    seconds_lost: float = 0.0
    failures: list[str] = field(default_factory=list)


class _PoolWorker:
    """The Ray actor: builds the caller's worker once, then maps batches through it."""

    def __init__(self, actor_cls: type, actor_kwargs: Mapping[str, Any]) -> None:
        self.inner = actor_cls(**dict(actor_kwargs))

    def ready(self) -> bool:
        return True

    def run(self, batch: pd.DataFrame) -> pd.DataFrame:
        return self.inner(batch)


def _lost_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean an actor (or its node) is gone, not that the work is wrong."""
    from ray import exceptions

    names = (
        "RayActorError",  # ActorDiedError is a subclass
        "ActorUnavailableError",
        "WorkerCrashedError",
        "NodeDiedError",
        "ObjectLostError",
        "OwnerDiedError",
    )
    return tuple(getattr(exceptions, name) for name in names if hasattr(exceptions, name))


def run_on_actor_pool(
    batches: Sequence[pd.DataFrame],
    actor_cls: type,
    actor_kwargs: Mapping[str, Any],
    settings: ActorPoolSettings,
    report: PoolReport | None = None,
) -> Iterator[tuple[int, pd.DataFrame]]:
    """``(batch index, actor_cls(**actor_kwargs)(batch))`` for every batch, as each finishes.

    Ray must be initialised (:func:`eyecatcher.distributed.session.ray_session`). One batch
    is in flight per actor. A batch whose actor dies (the process, or the whole node) is sent
    again to another actor; the dead actor is replaced when the cluster has room for it.

    Args:
        batches: The inputs, one frame per call.
        actor_cls: A class importable on the workers; its instances map a pandas batch to a
            pandas frame of results.
        actor_kwargs: Constructor arguments (sent to each worker).
        settings: Pool size, CPUs per actor and the retry bound.
        report: Filled in with the retries, lost actors and time lost.

    Yields:
        Each batch's index and result, exactly once, in the order they finish.

    Raises:
        RuntimeError: If a batch's actor died more than ``max_restarts`` times, or no actor
            could be started for ``replace_timeout_s``.
        ray.exceptions.RayTaskError: If the worker code itself raised (a bug, not a lost
            node: retrying would fail the same way).
    """
    ray = import_ray()
    report = report if report is not None else PoolReport()
    pool = _Pool.start(
        ray,
        batches=batches,
        actor_cls=actor_cls,
        actor_kwargs=actor_kwargs,
        settings=settings,
        report=report,
    )
    done = 0
    try:
        while done < len(batches):
            pool.dispatch()
            pool.keep_one_actor_coming()
            pool.fail_if_unplaceable()
            # A timeout, so that an actor that can never be placed is noticed above.
            ready, _ = ray.wait(pool.pending(), num_returns=1, timeout=1.0)
            if not ready:
                continue
            ref = ready[0]
            if ref in pool.starting:
                pool.actor_started(ref)
                continue
            finished = pool.batch_returned(ref)
            if finished is None:
                continue
            done += 1
            yield finished
    finally:
        pool.kill_all()


@dataclass
class _Pool:
    """The driver's bookkeeping of :func:`run_on_actor_pool`: actors, batches, attempts."""

    ray: Any
    batches: Sequence[pd.DataFrame]
    remote_cls: Any
    actor_cls: type
    kwargs_ref: Any
    settings: ActorPoolSettings
    report: PoolReport
    lost: tuple[type[BaseException], ...]
    starting: dict[Any, tuple[Any, float]] = field(default_factory=dict)  # ready() ref -> ...
    idle: deque[Any] = field(default_factory=deque)
    todo: deque[int] = field(default_factory=deque)
    attempts: list[int] = field(default_factory=list)
    in_flight: dict[Any, tuple[int, Any, float]] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        ray: Any,
        *,
        batches: Sequence[pd.DataFrame],
        actor_cls: type,
        actor_kwargs: Mapping[str, Any],
        settings: ActorPoolSettings,
        report: PoolReport,
    ) -> _Pool:
        """The pool with its first ``workers`` actors starting and every batch to do."""
        lost = _lost_errors()
        remote_cls = ray.remote(_PoolWorker).options(
            num_cpus=settings.cpus_per_worker, max_restarts=0, max_task_retries=0
        )
        # The constructor arguments (a model, a champion) go to the object store once, not
        # once per actor started.
        kwargs_ref = ray.put(dict(actor_kwargs))
        pool = cls(
            ray=ray,
            batches=batches,
            remote_cls=remote_cls,
            actor_cls=actor_cls,
            kwargs_ref=kwargs_ref,
            settings=settings,
            report=report,
            lost=lost,
        )
        for _ in range(min(settings.workers, max(1, len(batches)))):
            pool.start_actor()
        pool.todo.extend(range(len(batches)))
        pool.attempts = [0] * len(batches)
        report.batches = len(batches)
        return pool

    def start_actor(self) -> None:
        """One more actor, building its worker."""
        actor = self.remote_cls.remote(self.actor_cls, self.kwargs_ref)
        self.starting[actor.ready.remote()] = (actor, time.monotonic())

    def pending(self) -> list[Any]:
        """The refs the driver waits on: batches running, actors starting."""
        return [*self.in_flight, *self.starting]

    def dispatch(self) -> None:
        """One batch to each idle actor while there are both."""
        while self.todo and self.idle:
            index = self.todo.popleft()
            actor = self.idle.popleft()
            run_ref = actor.run.remote(self.batches[index])
            self.in_flight[run_ref] = (index, actor, time.monotonic())

    def keep_one_actor_coming(self) -> None:
        """Start an actor when none is running or starting."""
        if not self.in_flight and not self.starting:
            # Every actor is dead and none could be replaced yet (the cluster lost nodes):
            # start one anyway; an autoscaler, or a node coming back, gives it room.
            self.start_actor()
            self.report.replaced_actors += 1

    def fail_if_unplaceable(self) -> None:
        """Raise when nothing runs and no starting actor was placed for the timeout.

        Raises:
            RuntimeError: If so, naming the batches not run.
        """
        settings = self.settings
        if (
            not self.in_flight
            and all(
                time.monotonic() - since > settings.replace_timeout_s
                for _, since in self.starting.values()
            )
            # With room for them, the actors are being built (a slow model load), not
            # waiting for a node: keep waiting; a constructor that fails says so itself.
            and not _has_room(self.ray, len(self.starting), settings.cpus_per_worker)
        ):
            raise RuntimeError(
                f"no Ray actor could be placed for {settings.replace_timeout_s:g} s after "
                f"{self.report.lost_actors} were lost; {len(self.todo)} batches not run (the "
                "batches finished are kept)"
            )

    def actor_started(self, ref: Any) -> None:
        """An actor's ``ready()`` came back: idle if it is alive, counted as lost if not."""
        actor, _ = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except self.lost as exc:
            if getattr(exc, "actor_init_failed", False):
                raise  # the worker cannot be built (a bad model URI): no retry helps
            self.report.lost_actors += 1
            self.report.failures.append(f"actor start: {type(exc).__name__}")
            return
        self.idle.append(actor)

    def batch_returned(self, ref: Any) -> tuple[int, pd.DataFrame] | None:
        """A batch's ``(index, result)``, or None when its actor died and it was queued again."""
        index, actor, started = self.in_flight.pop(ref)
        try:
            result = self.ray.get(ref)
        except self.lost as exc:
            self._requeue(index, actor, started, exc)
            return None
        self.idle.append(actor)
        return index, result

    def _requeue(self, index: int, actor: Any, started: float, exc: BaseException) -> None:
        """Count the loss, queue the batch first, replace the actor if there is room.

        Raises:
            RuntimeError: If the batch was lost more than ``max_restarts`` times.
        """
        self.attempts[index] += 1
        report = self.report
        report.lost_actors += 1
        report.retried_batches += 1
        report.retried_rows += len(self.batches[index])
        report.seconds_lost += time.monotonic() - started
        report.failures.append(f"batch {index}: {type(exc).__name__}")
        logger.warning(
            "Ray: the actor running batch %d died (%s); sending it again (attempt %d)",
            index,
            type(exc).__name__,
            self.attempts[index] + 1,
        )
        if self.attempts[index] > self.settings.max_restarts:
            raise RuntimeError(
                f"batch {index} was lost {self.attempts[index]} times (max_restarts "
                f"{self.settings.max_restarts}); the batches finished are kept"
            ) from exc
        self.todo.appendleft(index)
        _kill(self.ray, actor)
        live = len(self.idle) + len(self.starting) + len(self.in_flight)
        if _has_room(self.ray, live + 1, self.settings.cpus_per_worker):
            self.start_actor()
            report.replaced_actors += 1

    def kill_all(self) -> None:
        """Kill every actor still held (idle, starting or running)."""
        for actor in [*self.idle, *(a for a, _ in self.starting.values())]:
            _kill(self.ray, actor)
        for _, actor, _ in self.in_flight.values():
            _kill(self.ray, actor)


def _kill(ray: Any, actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception as exc:  # an actor of a dead node: nothing left to kill
        logger.debug("Ray: could not kill an actor (%s)", exc)


def _has_room(ray: Any, actors: int, cpus_per_worker: float) -> bool:
    """Whether the cluster, as Ray sees it now, has the CPUs for ``actors`` actors."""
    return actors * cpus_per_worker <= float(ray.cluster_resources().get("CPU", 0.0))


def split_batches(frame: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """``frame`` cut into consecutive batches of ``batch_size`` rows (index reset)."""
    return [
        frame.iloc[start : start + batch_size].reset_index(drop=True)
        for start in range(0, len(frame), batch_size)
    ]
