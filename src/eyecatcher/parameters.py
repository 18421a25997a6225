"""Typed parameter blocks; unknown keys are refused (or warned about) with the closest key.

A misspelt key in YAML or ``--params`` would otherwise be ignored without a word: a setting
that never applies (``features.engin=ray`` runs everything on one machine). Each pipeline's
block is a :class:`Settings` model (pydantic, ``extra="forbid"``) whose errors are worded by
:func:`unknown_keys_error`, so the message reads the same everywhere:
``Unknown training.features parameter(s) 'engin' (did you mean 'engine'?)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self, get_args

from pydantic import BaseModel, ConfigDict, ValidationError


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


class Settings(BaseModel):
    """A pipeline's parameter block, typed: unknown keys refused with the closest known key.

    Subclasses are pydantic models (frozen, ``extra="forbid"``); :meth:`parse` turns pydantic's
    errors into one ``ValueError`` that reads like the rest of the project's: unknown keys
    through :func:`unknown_keys_error` (per nested block), any other problem as
    ``<block>.<key>: <reason>``. A field's default is the value ``conf/base`` sets for it
    (``tests/test_parameters.py`` fails on any difference), so a block given in part, by a test
    or an older report, means what ``make run`` means.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The block's dotted name in the parameters, e.g. ``training.features``.
    kind: ClassVar[str] = ""
    #: The ``ValueError`` subclass :meth:`parse` raises (a pipeline's own, e.g. one that
    #: ``eyecatcher.outcomes`` maps to the ``bad_configuration`` exit code).
    error: ClassVar[type[ValueError]] = ValueError

    @classmethod
    def parse(cls, params: Mapping[str, Any] | None, kind: str | None = None) -> Self:
        """Validate a parameter block (``None``: every default).

        Args:
            params: The block as Kedro passes it.
            kind: Its dotted name for messages; defaults to the class's :attr:`kind`.

        Returns:
            The validated, frozen settings.

        Raises:
            ValueError: (:attr:`error`) Naming every unknown key (with the closest known one)
                and bad value.
        """
        try:
            return cls.model_validate(dict(params or {}))
        except ValidationError as exc:
            raise cls.error(str(settings_error(kind or cls.kind, cls, exc))) from None


def settings_error(kind: str, model: type[BaseModel], exc: ValidationError) -> ValueError:
    """One ``ValueError`` for pydantic's errors of ``model`` validating the block ``kind``.

    ``extra_forbidden`` errors are grouped by the nested block they occur in and worded by
    :func:`unknown_keys_error` (with that block's known keys); the others are listed as
    ``<block>.<path> must ...`` (a validator's reason) or ``<block>.<path>: <pydantic's>``.
    """
    unknown: dict[tuple[str | int, ...], set[str]] = {}
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], set()).add(str(loc[-1]))
            continue
        where = ".".join([kind, *(str(part) for part in loc)]) if loc else kind
        if error["type"] in ("bool_type", "bool_parsing"):
            problems.append(f"{where} must be true or false, got {error['input']!r}")
            continue
        # Our validators say "must ...": "<where> must be >= 1"; pydantic's own say more.
        reason = str(error["msg"]).removeprefix("Value error, ")
        if reason.startswith(f"{kind}."):  # a whole-block check that names its keys
            problems.append(reason)
        else:
            problems.append(
                f"{where} {reason}" if reason.startswith("must") else f"{where}: {reason}"
            )
    messages = [
        str(unknown_keys_error(".".join([kind, *map(str, parent)]), keys, _known(model, parent)))
        for parent, keys in sorted(unknown.items(), key=lambda item: str(item[0]))
    ]
    return ValueError(" ".join([*messages, *problems]))


def _known(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The field names of the (nested) model at ``loc``; list indices and dict keys skipped."""
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:  # an index or a mapping key: the same model continues
            continue
        nested = _nested_model(field.annotation)
        if nested is None:
            return []
        model = nested
    return list(model.model_fields)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The settings model an annotation holds (directly, in a list, a dict or an optional)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None
