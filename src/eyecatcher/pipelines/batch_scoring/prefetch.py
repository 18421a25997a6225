"""A bounded read-ahead: prepare the next batches in a thread while the current one is scored.

Reading files (from a disk or from ``s3://``) waits on I/O and releases the GIL, so it can run
while the model's forward pass (ONNX Runtime or torch, which also release it) works on the batch
before. At most ``depth`` prepared batches wait beyond the one being scored, so memory stays
bounded whatever the number of files.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetched(prepare: Callable[[T], R], items: Iterable[T], depth: int = 1) -> Iterator[R]:
    """``prepare(item)`` for every item, in order, computed up to ``depth`` items ahead.

    Args:
        prepare: The work to run ahead (one thread runs it, item after item).
        items: The inputs, consumed lazily.
        depth: How many prepared results may wait beyond the one being used; 0 runs
            ``prepare`` in the caller's thread, with no read-ahead at all.

    Yields:
        ``prepare(item)`` per item, in the order of ``items``.

    Raises:
        Exception: Whatever ``prepare`` raised, when its result is reached.
    """
    if depth <= 0:
        yield from (prepare(item) for item in items)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-read-ahead") as pool:
        waiting: deque[Future[R]] = deque()
        try:
            for item in items:
                waiting.append(pool.submit(prepare, item))
                if len(waiting) > depth:
                    yield waiting.popleft().result()
            while waiting:
                yield waiting.popleft().result()
        finally:
            # A consumer that stops early (or an error) must not leave reads queued behind it.
            for future in waiting:
                future.cancel()
