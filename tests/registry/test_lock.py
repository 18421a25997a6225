"""The promotion lock against a real sqlite registry: crashed and stalled holders, two waiters.

A "crashed" holder is a real process killed with SIGKILL while it holds the lock; a "stalled"
one is a real process stopped with SIGSTOP. Nothing is mocked: the only test device is a
client subclass that makes one thread's deletes arrive late, the interleaving in which the
previous design (read the lock, then delete it by name) let two runs hold it at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from eyecatcher.registry.lock import LockLostError, lock_name
from eyecatcher.registry.versions import Registry

MODEL = "lock-test-model"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    SqlAlchemyStore(uri, (tmp_path / "artifacts").as_uri())
    return uri


_HOLDER = textwrap.dedent(
    """
    import sys
    from mlflow import MlflowClient
    from eyecatcher.registry.versions import Registry

    uri, model, stale_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    registry = Registry(model, MlflowClient(tracking_uri=uri, registry_uri=uri))
    with registry.promotion_lock("holder", wait_s=30, stale_s=stale_s) as lock:
        print("held", flush=True)
        sys.stdin.readline()  # the test stops (SIGSTOP) or kills (SIGKILL) us here
        try:
            lock.ensure_held()
            print("still held", flush=True)
        except Exception as exc:
            print(f"{type(exc).__name__}: {exc}", flush=True)
    """
)


def _holder(uri: str, stale_s: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, uri, MODEL, str(stale_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    return process


class _LateDeletes(MlflowClient):
    """Deletes issued from the thread named ``late`` arrive ``delay_s`` after they are made."""

    delay_s = 0.6

    def _maybe_wait(self) -> None:
        if threading.current_thread().name == "late":
            time.sleep(self.delay_s)

    def delete_registered_model(self, name: str) -> None:
        self._maybe_wait()
        super().delete_registered_model(name)

    def delete_model_version(self, name: str, version: str) -> None:
        self._maybe_wait()
        super().delete_model_version(name, version)


def test_two_waiters_never_both_take_over_a_crashed_holders_lock(store_uri: str) -> None:
    stale_s = 1.0
    crashed = _holder(store_uri, stale_s)
    crashed.kill()  # SIGKILL: no finally block runs, the lock is left behind
    crashed.wait(timeout=30)
    time.sleep(stale_s + 0.2)
    held: list[tuple[str, float, float]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2, timeout=30)

    def contend() -> None:
        client = _LateDeletes(tracking_uri=store_uri, registry_uri=store_uri)
        registry = Registry(MODEL, client)
        try:
            start.wait()
            with registry.promotion_lock(
                threading.current_thread().name, wait_s=30, stale_s=stale_s
            ):
                entered = time.monotonic()
                time.sleep(1.5)
                held.append((threading.current_thread().name, entered, time.monotonic()))
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)

    threads = [threading.Thread(target=contend, name=n) for n in ("prompt", "late")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not errors, errors
    assert sorted(name for name, _, _ in held) == ["late", "prompt"]
    (_, _, first_out), (_, second_in, _) = sorted(held, key=lambda h: h[1])
    assert second_in >= first_out, "both runs held the promotion lock at the same time"
    # Nothing is left behind: every ticket was deleted on release.
    client = MlflowClient(tracking_uri=store_uri, registry_uri=store_uri)
    assert client.search_model_versions(f"name = '{lock_name(MODEL)}'") == []


def test_a_stalled_holder_learns_it_lost_the_lock_before_moving_anything(store_uri: str) -> None:
    stale_s = 1.0
    stalled = _holder(store_uri, stale_s)
    try:
        os.kill(stalled.pid, signal.SIGSTOP)  # a run frozen (swap, GC, a debugger) holding it
        registry = Registry(MODEL, MlflowClient(tracking_uri=store_uri, registry_uri=store_uri))
        began = time.monotonic()
        with registry.promotion_lock("waiter", wait_s=30, stale_s=stale_s) as lock:
            waited = time.monotonic() - began
            lock.ensure_held()
            os.kill(stalled.pid, signal.SIGCONT)
            out, _ = stalled.communicate("go\n", timeout=60)
    finally:
        if stalled.poll() is None:
            os.kill(stalled.pid, signal.SIGCONT)
            stalled.kill()
    # Judged on the waiter's own clock: at least stale_s of seeing no renewal.
    assert waited >= stale_s
    assert out.startswith("LockLostError:"), out
    assert "taken over" in out


def test_a_live_holder_is_waited_for_not_taken_over(store_uri: str) -> None:
    client = MlflowClient(tracking_uri=store_uri, registry_uri=store_uri)
    first, second = Registry(MODEL, client), Registry(MODEL, client)
    with first.promotion_lock("first", wait_s=5, stale_s=0.5) as lock:
        # Three times stale_s: a renewing holder is never judged abandoned.
        waiting = second.promotion_lock("second", wait_s=1.5, stale_s=0.5)
        with pytest.raises(TimeoutError, match="held"):
            waiting.__enter__()
        lock.ensure_held()
    with second.promotion_lock("second", wait_s=5, stale_s=0.5) as lock:
        lock.ensure_held()


def test_promote_refuses_when_the_lock_was_lost(store_uri: str) -> None:
    client = MlflowClient(tracking_uri=store_uri, registry_uri=store_uri)
    registry = Registry(MODEL, client)
    registry.ensure_model()
    with registry.promotion_lock("v1", wait_s=5, stale_s=5) as lock:
        # Another run's takeover, as seen from this one: its ticket is gone.
        client.delete_model_version(lock_name(MODEL), lock.ticket)
        with pytest.raises(LockLostError, match="taken over"):
            registry.promote("1", expected_champion=None, floor=None, lock=lock)
    assert registry.champion() is None
