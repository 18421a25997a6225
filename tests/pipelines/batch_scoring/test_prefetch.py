"""The local engine's read-ahead: order kept, errors passed on, never more than depth ahead."""

from __future__ import annotations

import threading

import pytest

from eyecatcher.pipelines.batch_scoring.prefetch import prefetched


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_results_come_in_order_of_the_items(depth: int) -> None:
    assert list(prefetched(lambda n: n * n, range(10), depth=depth)) == [n * n for n in range(10)]


def test_read_ahead_runs_in_another_thread_and_stays_within_depth() -> None:
    started: list[int] = []
    threads: set[str] = set()
    lock = threading.Lock()

    def prepare(item: int) -> int:
        with lock:
            started.append(item)
            threads.add(threading.current_thread().name)
        return item

    consumed = []
    for item in prefetched(prepare, range(6), depth=2):
        # Work is never started more than `depth` items beyond the one being used.
        with lock:
            assert max(started) <= item + 2
        consumed.append(item)
    assert consumed == list(range(6))
    assert threading.current_thread().name not in threads


def test_an_error_in_prepare_reaches_the_consumer_at_its_item() -> None:
    def prepare(item: int) -> int:
        if item == 3:
            raise OSError("disk gone")
        return item

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetched(prepare, range(6), depth=1):
            got.append(item)
    assert got == [0, 1, 2]


def test_stopping_early_does_not_prepare_everything() -> None:
    prepared: list[int] = []
    results = prefetched(lambda n: prepared.append(n) or n, range(100), depth=1)
    assert next(results) == 0
    results.close()
    assert len(prepared) <= 3
