"""Where Ray work runs: the cluster ``RAY_ADDRESS`` names, or a local Ray started for the run."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

RAY_MISSING = (
    "engine 'ray' needs Ray, an optional extra: pip install -e '.[ray]' "
    "(make test installs it), or set the engine back to 'local'"
)


def import_ray():
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(RAY_MISSING) from exc
    return ray


@contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[str]:
    """Connect to Ray for the duration of a block.

    - Ray already initialised in this process (a notebook, a test): use it, leave it running.
    - ``RAY_ADDRESS`` set: connect to that cluster, disconnect after.
    - Otherwise: start a local Ray on 127.0.0.1 with ``num_cpus`` (default: all cores), shut
      it down after. It never joins a cluster that ``ray start`` left running by chance.

    Args:
        num_cpus: CPUs of the local Ray; ignored when connecting to a cluster.

    Yields:
        Where the work runs: ``"existing"``, the cluster address, or ``"local"``.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield "existing"
        return
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if address:
        logger.info("Ray: connecting to the cluster at %s (RAY_ADDRESS)", address)
        ray.init(address=address, log_to_driver=False)
        where = address
    else:
        logger.info("Ray: starting a local Ray for this run (RAY_ADDRESS is unset)")
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
        where = "local"
    try:
        yield where
    finally:
        ray.shutdown()


def check_pool_fits(workers: int, cpus_per_worker: float, where: str) -> None:
    """Refuse an actor pool that a local Ray can never place (it would wait forever).

    On a cluster the pool may wait for the autoscaler to add nodes, so only a warning is given.

    Args:
        workers: Actors requested.
        cpus_per_worker: CPUs each reserves.
        where: What :func:`ray_session` yielded.

    Raises:
        ValueError: On a local Ray with fewer CPUs than the pool needs.
    """
    ray = import_ray()
    available = float(ray.cluster_resources().get("CPU", 0.0))
    needed = workers * cpus_per_worker
    if needed <= available:
        return
    message = (
        f"{workers} Ray workers x {cpus_per_worker} CPUs need {needed:g} CPUs; this Ray has "
        f"{available:g}"
    )
    if where == "local":
        raise ValueError(f"{message}: lower the workers or cpus_per_worker")
    logger.warning("%s: the pool waits until the cluster has room", message)
