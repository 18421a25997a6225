"""Unknown parameter keys are refused (or warned about) with the closest known key.

A misspelt key in YAML or ``--params`` would otherwise be ignored without a word: a setting
that never applies (``features.engin=ray`` runs everything on one machine). Every pipeline's
settings validate their block through these two functions, so the message reads the same
everywhere: ``Unknown training.features parameter(s) 'engin' (did you mean 'engine'?)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(key: str, known: Iterable[str]) -> str | None:
    """The known key most like ``key`` (its last dotted part), or ``None`` if none is close."""
    matches = difflib.get_close_matches(key.rsplit(".", 1)[-1], sorted(known), n=1)
    return matches[0] if matches else None


def unknown_keys_error(kind: str, unknown: Iterable[str], known: Iterable[str]) -> ValueError:
    """A ``ValueError`` naming each unknown key with its closest known key.

    Args:
        kind: The block, e.g. ``training.features``.
        unknown: The keys that are not settings (dotted paths allowed).
        known: The block's settings.

    Returns:
        The error to raise.
    """
    known = sorted(known)
    parts = []
    for key in sorted(unknown):
        match = closest(key, known)
        parts.append(f"'{key}'" + (f" (did you mean '{match}'?)" if match else ""))
    return ValueError(f"Unknown {kind} parameter(s) {', '.join(parts)}; known: {known}.")


def refuse_unknown(kind: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Raise :func:`unknown_keys_error` if ``given`` holds a key that is not in ``known``.

    Raises:
        ValueError: Naming every unknown key and its closest known key.
    """
    known = set(known)
    unknown = set(given) - known
    if unknown:
        raise unknown_keys_error(kind, unknown, known)
