"""The promotion lock: at most one registration re-reads and moves the champion at a time.

The lock is a registered model ``<name>--promotion-lock`` whose *versions* are tickets: a run
that wants the lock creates a version (the store numbers versions atomically and never reuses a
number, deleted versions included) and holds the lock while its ticket is the lowest live one.
Release deletes the ticket.

Two properties the previous "one registered model, deleted when stale" design lacked:

* **Atomic takeover.** An abandoned ticket is removed by deleting *that version number*. Two
  waiters that both find it abandoned delete the same number; the second delete is a no-op.
  Nothing is ever deleted by name, so a waiter cannot delete a lock someone else took meanwhile.
* **No clock comparison across machines.** Every ticket carries a ``lease`` tag that its run
  renews from a heartbeat thread. A waiter calls a ticket abandoned when *it* has seen the
  lease unchanged for ``stale_s`` seconds of *its own* monotonic clock; no timestamp written on
  one machine is compared with another machine's clock.

The holder re-checks that its ticket is still the lowest live one right before the alias
moves (:meth:`PromotionLock.ensure_held`): a run that stalled for longer than ``stale_s`` (its
heartbeat with it) learns it lost the lock instead of moving the champion regardless.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

logger = logging.getLogger(__name__)

HOLDER_TAG = "holder"
LEASE_TAG = "lease"
#: How often the heartbeat renews a lease, as a fraction of ``stale_s``.
RENEW_FRACTION = 0.2
POLL_S = 0.2


class LockLostError(RuntimeError):
    """This run's ticket is no longer the lock holder (it stalled and was taken over)."""


def lock_name(model_name: str) -> str:
    """The registered model that holds ``model_name``'s promotion tickets."""
    return f"{model_name}--promotion-lock"


@dataclass
class _Observation:
    """What a waiter last saw of one ticket's lease, and since when (its own monotonic clock)."""

    lease: str | None
    since: float


@dataclass
class PromotionLock:
    """One run's claim on the promotion lock (use :meth:`acquire` / :meth:`release`).

    Args:
        client: A client on the registry (explicit URIs, see :mod:`eyecatcher.registry.client`).
        model_name: The registered model whose champion is moved.
        holder: A label for messages (the version being promoted).
        stale_s: How long a ticket's lease may stay unchanged before waiters take it over.
    """

    client: MlflowClient
    model_name: str
    holder: str
    stale_s: float
    ticket: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _heartbeat: threading.Thread | None = None
    _seen: dict[str, _Observation] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The lock's registered-model name."""
        return lock_name(self.model_name)

    def acquire(self, wait_s: float) -> None:
        """Take a ticket and wait until it is the lowest live one.

        Raises:
            TimeoutError: If other tickets stay ahead (renewed) for more than ``wait_s``.
        """
        self._ensure_lock_model()
        token = f"{self.holder}:{uuid.uuid4().hex}"
        # A ticket has no files, but an `mlflow server` refuses a bare (local-looking) path that
        # lies in no run's artefacts, and a URI without an absolute path.
        created = self.client.create_model_version(
            self.name, source="eyecatcher-lock:///ticket", tags={HOLDER_TAG: token, LEASE_TAG: "0"}
        )
        self.ticket = str(created.version)
        self._start_heartbeat()
        deadline = time.monotonic() + wait_s
        try:
            while True:
                ahead = self._tickets_ahead()
                if not ahead:
                    return
                self._take_over_abandoned(ahead)
                if time.monotonic() > deadline:
                    holder = ahead[0].tags.get(HOLDER_TAG)
                    raise TimeoutError(
                        f"another registration ({holder}) has held {self.name} for more than "
                        f"{wait_s:g} s"
                    )
                time.sleep(POLL_S)
        except BaseException:
            self.release()
            raise

    def ensure_held(self) -> None:
        """Raise unless this run's ticket is (still) the lowest live one.

        Raises:
            LockLostError: If the ticket was taken over or another one is ahead of it.
        """
        if self.ticket is None:
            raise LockLostError(f"{self.name}: this run holds no ticket")
        live = {str(v.version) for v in self._live()}
        if self.ticket not in live:
            raise LockLostError(
                f"{self.name}: ticket v{self.ticket} was taken over (this run stalled for more "
                f"than {self.stale_s:g} s), so the champion was not moved"
            )
        if self._tickets_ahead():
            raise LockLostError(f"{self.name}: ticket v{self.ticket} is not the holder")

    def release(self) -> None:
        """Stop renewing and delete this run's ticket (by number: never someone else's)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        if self.ticket is None:
            return
        try:
            self.client.delete_model_version(self.name, self.ticket)
        except MlflowException as exc:
            logger.warning("Could not release the promotion lock %s: %s", self.name, exc)
        self.ticket = None

    def _ensure_lock_model(self) -> None:
        try:
            self.client.create_registered_model(
                self.name,
                description="Promotion tickets: the lowest live version moves the champion.",
            )
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise

    def _live(self) -> list[ModelVersion]:
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return sorted(found, key=lambda v: int(v.version))

    def _tickets_ahead(self) -> list[ModelVersion]:
        assert self.ticket is not None
        return [v for v in self._live() if int(v.version) < int(self.ticket)]

    def _take_over_abandoned(self, ahead: list[ModelVersion]) -> None:
        """Delete the tickets ahead whose lease this run has seen unchanged for ``stale_s``."""
        now = time.monotonic()
        for version in ahead:
            number = str(version.version)
            lease = version.tags.get(LEASE_TAG)
            seen = self._seen.get(number)
            if seen is None or seen.lease != lease:
                self._seen[number] = _Observation(lease, now)
                continue
            if now - seen.since < self.stale_s:
                continue
            logger.warning(
                "Taking over the promotion lock %s: ticket v%s (%s) has not renewed its lease "
                "for %.0f s (> %g s: a run that did not finish).",
                self.name,
                number,
                version.tags.get(HOLDER_TAG),
                now - seen.since,
                self.stale_s,
            )
            # By number: if another waiter deleted it first, this is a no-op, not a takeover
            # of whatever ticket came next.
            with suppress(MlflowException):
                self.client.delete_model_version(self.name, number)

    def _start_heartbeat(self) -> None:
        interval = max(0.05, self.stale_s * RENEW_FRACTION)

        def renew() -> None:
            count = 0
            while not self._stop.wait(interval):
                count += 1
                try:
                    self.client.set_model_version_tag(
                        self.name, str(self.ticket), LEASE_TAG, str(count)
                    )
                except MlflowException as exc:
                    # A deleted ticket (taken over) cannot be renewed; ensure_held says so.
                    logger.warning("Promotion lock lease not renewed: %s", exc)

        self._heartbeat = threading.Thread(target=renew, name="promotion-lock-lease", daemon=True)
        self._heartbeat.start()
