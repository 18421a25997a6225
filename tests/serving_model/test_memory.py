"""The served model trims the heap after a request that grew the process, not after each one."""

from __future__ import annotations

import sys

import pytest

from eyecatcher.serving_model.memory import FreedMemory, resident_bytes

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="malloc_trim and /proc are Linux (glibc) only"
)

MB = 1024 * 1024


def test_resident_bytes_reads_this_process() -> None:
    assert resident_bytes() > 10 * MB


def test_only_growth_beyond_the_slack_trims() -> None:
    freed = FreedMemory(slack_bytes=16 * MB)
    freed.release()  # nothing grew since it was made
    assert freed.trims_ == 0
    # One 100 MB block, every page written: glibc serves a request that large with a fresh
    # mmap (above its largest mmap threshold, 32 MB), so the resident set grows whatever
    # freed heap earlier tests left behind (many small blocks could reuse that heap and
    # not grow it at all, which made this test depend on what ran before it).
    grown = b"\x01" * (100 * MB)
    freed.release()
    assert freed.trims_ == 1
    freed.release()  # no growth since that trim
    assert freed.trims_ == 1
    del grown
