"""Handing memory that a request's decoders freed back to the OS, when there is some to hand.

glibc keeps freed heap memory for reuse: without ``malloc_trim`` a worker's RSS stays at the
high-water mark of its largest request, which looks like a leak to whoever watches the process
and to a container's memory limit. Trimming walks the whole heap, though, so it runs only after
a request that left the process larger than after the last trim by more than a slack: small
requests, whose decoders free little, pay for one read of ``/proc/self/statm`` instead.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from typing import Any

#: Growth of the resident set since the last trim above which the next request trims.
DEFAULT_SLACK_BYTES = 32 * 1024 * 1024


def _malloc_trim() -> Callable[[int], Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return None


_MALLOC_TRIM = _malloc_trim()
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """This process's resident set size, or ``None`` where ``/proc`` does not say."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


class FreedMemory:
    """Trims the heap after a request when the process grew by more than ``slack_bytes``.

    Args:
        slack_bytes: Resident growth since the last trim tolerated without trimming.

    Attributes:
        trims_: How many times the heap was trimmed.
    """

    def __init__(self, slack_bytes: int = DEFAULT_SLACK_BYTES) -> None:
        self.slack_bytes = int(slack_bytes)
        self.trims_ = 0
        self._after_last_trim = resident_bytes()

    def release(self) -> None:
        """Trim if the process holds more than the slack over its size after the last trim."""
        if _MALLOC_TRIM is None:
            return
        now = resident_bytes()
        last = self._after_last_trim
        if now is not None and last is not None and now <= last + self.slack_bytes:
            return
        _MALLOC_TRIM(0)
        self.trims_ += 1
        self._after_last_trim = resident_bytes()
