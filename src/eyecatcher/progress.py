"""Progress bars that draw only where someone watches: a terminal or a notebook.

Every progress bar of the project comes from :func:`progress_bar`, so a CI log or a file that
stdout/stderr is redirected to gets the log lines, not hundreds of carriage-return frames.
``EYECATCHER_PROGRESS=always`` draws them anyway, ``never`` hides them on a terminal too
(docs/configuration.md#logging).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

PROGRESS_ENV = "EYECATCHER_PROGRESS"
_CHOICES = ("auto", "always", "never")


def progress_enabled(stream: Any = None) -> bool:
    """Whether a bar written to ``stream`` (default: stderr, as tqdm) should draw.

    Raises:
        ValueError: When ``EYECATCHER_PROGRESS`` is set to something other than auto, always
            or never.
    """
    choice = os.environ.get(PROGRESS_ENV, "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(f"{PROGRESS_ENV}={choice!r}: expected one of {', '.join(_CHOICES)}")
    if choice != "auto":
        return choice == "always"
    if "ipykernel" in sys.modules:  # a notebook shows tqdm.auto's widget, not a stream
        return True
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def progress_bar(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """``tqdm.auto.tqdm(iterable, **kwargs)``, disabled when :func:`progress_enabled` is false.

    Args:
        iterable: What to iterate over, or ``None`` for a bar updated by hand.
        **kwargs: tqdm's arguments; ``disable=True`` still hides the bar.

    Returns:
        The tqdm object (iterable, context manager, ``update()``), drawing or not.
    """
    kwargs["disable"] = bool(kwargs.get("disable")) or not progress_enabled(kwargs.get("file"))
    return tqdm(iterable, **kwargs)
