"""Validation of moderator feedback records, with a stated rule for conflicting verdicts.

A record names an image (its sha256, or any URI ingestion saw it under), the class a human gave
it (``verdict``), who decided (``reviewer``), when (``timestamp``, ISO 8601 with a time zone),
what kind of feedback it is (``kind``: ``appeal`` of a flag, user ``report`` of a miss, or a
moderator's ``review``) and an optional ``note``. Every problem is reported; none stops the run,
and every record read is either accepted (``valid``) or rejected with its status and reason:
``read = accepted + rejected``, in total and per file.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from eyecatcher.monitoring.online_metrics import FEEDBACK_KINDS
from eyecatcher.pipelines.feedback.settings import FeedbackSettings

REQUIRED_FIELDS = ("image", "verdict", "reviewer", "timestamp", "kind")
OPTIONAL_FIELDS = ("note",)
#: Record statuses, in the order the report lists them.
STATUSES = (
    "valid",
    "duplicate",
    "malformed",
    "too_large",
    "future_timestamp",
    "unknown_class",
    "unknown_image",
)
ITEM_COLUMNS = [
    "sha256",
    "uri",
    "verdict",
    "kind",
    "reviewer",
    "timestamp",
    "note",
    "file",
    "line",
]
VERDICT_COLUMNS = [
    "sha256",
    "uri",
    "verdict",
    "kind",
    "reviewer",
    "timestamp",
    "n_records",
    "resolution",
]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _uri_lookup(image_index: pd.DataFrame) -> dict[str, tuple[str, str]]:
    lookup: dict[str, tuple[str, str]] = {}
    has_all = "all_uris" in image_index.columns
    for row in image_index.itertuples(index=False):
        sha, uri = str(row.sha256), str(row.uri)
        lookup[sha] = (sha, uri)
        lookup[uri] = (sha, uri)
        if has_all and row.all_uris is not None:
            for other in row.all_uris:
                lookup[str(other)] = (sha, uri)
    return lookup


#: What a field's value may be (a JSON string or number, a Parquet scalar or timestamp).
_SCALARS = (str, int, float, datetime)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def _not_scalar(record: Mapping[str, Any]) -> str | None:
    """Why a field this module reads is not a scalar (a JSON list or object), or ``None``."""
    for name in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS):
        value = record.get(name)
        if value is not None and not isinstance(value, _SCALARS):
            return f"field {name!r} is a {type(value).__name__}, not text"
    return None


def _parse_timestamp(text: str) -> tuple[pd.Timestamp | None, str | None]:
    try:
        timestamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        return None, f"timestamp {text!r} is not ISO 8601"
    if pd.isna(timestamp):
        return None, f"timestamp {text!r} is not a time"
    if timestamp.tzinfo is None:
        return None, f"timestamp {text!r} has no time zone (write e.g. 2026-11-25T10:00Z)"
    return timestamp.tz_convert("UTC"), None


def _malformed(values: Mapping[str, str | None]) -> str | None:
    """Why a record is malformed, or ``None``."""
    missing = [name for name in REQUIRED_FIELDS if values[name] is None]
    if missing:
        return f"missing or empty field(s) {missing}"
    if str(values["kind"]).lower() not in FEEDBACK_KINDS:
        return f"kind {values['kind']!r} is not one of {list(FEEDBACK_KINDS)}"
    return _parse_timestamp(str(values["timestamp"]))[1]


def _check_record(
    record: Mapping[str, Any],
    classes: set[str],
    lookup: Mapping[str, tuple[str, str]],
    latest_allowed: pd.Timestamp,
) -> tuple[str, str | None, dict[str, Any] | None]:
    """``(status, detail, item)`` for one raw record."""
    if "_problem" in record:  # the file or row could not be read (files.py says why)
        status = str(record.get("_status", "malformed"))
        return status, str(record["_problem"]).removeprefix("malformed: "), None
    values = {name: _text(record.get(name)) for name in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)}
    problem = _not_scalar(record) or _malformed(values)
    if problem is not None:
        return "malformed", problem, None
    timestamp = _parse_timestamp(str(values["timestamp"]))[0]
    assert timestamp is not None  # _malformed checked it
    if timestamp > latest_allowed:
        return (
            "future_timestamp",
            f"timestamp {values['timestamp']!r} is after the run's clock plus the allowed "
            f"skew ({latest_allowed.isoformat()})",
            None,
        )
    if values["verdict"] not in classes:
        detail = f"verdict {values['verdict']!r} is not a class ({', '.join(sorted(classes))})"
        return "unknown_class", detail, None
    image = str(values["image"])
    key = image.lower() if _SHA256.match(image.lower()) else image
    if key not in lookup:
        return "unknown_image", f"image {image!r} is not in the image index", None
    sha, uri = lookup[key]
    item = {
        "sha256": sha,
        "uri": uri,
        "verdict": values["verdict"],
        "kind": str(values["kind"]).lower(),
        "reviewer": values["reviewer"],
        "timestamp": timestamp,
        "note": values["note"],
    }
    return "valid", None, item


def _resolve(group: pd.DataFrame, rule: str) -> tuple[pd.Series, str]:
    """The deciding record of one image's verdicts and how it was chosen."""
    ordered = group.sort_values(["timestamp", "file", "line"])
    latest = ordered.iloc[-1]
    if ordered["verdict"].nunique() == 1:
        return latest, "single" if len(ordered) == 1 else "agreed"
    if rule == "latest":
        return latest, "latest"
    counts = ordered["verdict"].value_counts()
    tied = set(counts[counts == counts.max()].index)
    winner = ordered[ordered["verdict"].isin(tied)].iloc[-1]
    return winner, "majority" if len(tied) == 1 else "majority_tie_latest"


def _check_records(
    records: Iterable[Mapping[str, Any]],
    classes: set[str],
    lookup: Mapping[str, tuple[str, str]],
    latest_allowed: pd.Timestamp,
) -> tuple[list[dict[str, Any]], dict[str, Counter[str]], dict[str, list[dict[str, Any]]]]:
    """Check each record and drop exact duplicates.

    Returns:
        ``(items, per_file, problems)``: the valid records with their file and line, the
        status counts per file, and every rejected record's file, line and reason per status.
    """
    per_file: dict[str, Counter[str]] = {}
    items: list[dict[str, Any]] = []
    problems: dict[str, list[dict[str, Any]]] = {s: [] for s in STATUSES if s != "valid"}
    seen: set[tuple[Any, ...]] = set()
    for record in records:
        status, detail, item = _check_record(record, classes, lookup, latest_allowed)
        where = {"file": record.get("_file"), "line": record.get("_line")}
        if item is not None:
            key = (
                item["sha256"],
                item["verdict"],
                item["reviewer"],
                item["timestamp"],
                item["kind"],
            )
            if key in seen:
                status, detail = "duplicate", "same image, verdict, reviewer, kind and time"
            else:
                seen.add(key)
                items.append({**item, **where})
        per_file.setdefault(str(record.get("_file")), Counter())[status] += 1
        if status != "valid":
            problems[status].append({**where, "detail": detail})
    return items, per_file, problems


def _conflict(sha: str, chosen: pd.Series, resolution: str, group: pd.DataFrame) -> dict[str, Any]:
    """One image's conflict for the report: every verdict and the one the rule chose."""
    return {
        "sha256": sha,
        "uri": chosen["uri"],
        "chosen": chosen["verdict"],
        "rule": resolution,
        "verdicts": [
            {
                "verdict": r.verdict,
                "reviewer": r.reviewer,
                "kind": r.kind,
                "timestamp": r.timestamp.isoformat(),
                "file": r.file,
                "line": r.line,
            }
            for r in group.sort_values("timestamp").itertuples(index=False)
        ],
    }


def _resolve_verdicts(table: pd.DataFrame, rule: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """One deciding verdict per image (:data:`VERDICT_COLUMNS`) and the conflicts resolved."""
    verdict_rows = []
    conflicts = []
    for sha, group in table.groupby("sha256", sort=True):
        chosen, resolution = _resolve(group, rule)
        verdict_rows.append(
            {
                **{c: chosen[c] for c in ("sha256", "uri", "verdict", "kind", "reviewer")},
                "timestamp": chosen["timestamp"],
                "n_records": len(group),
                "resolution": resolution,
            }
        )
        if resolution not in ("single", "agreed"):
            conflicts.append(_conflict(str(sha), chosen, resolution, group))
    verdicts = pd.DataFrame(verdict_rows, columns=VERDICT_COLUMNS)
    verdicts["timestamp"] = pd.to_datetime(verdicts["timestamp"], utc=True)
    return verdicts, conflicts


def _file_counts(per_file: Mapping[str, Counter[str]]) -> dict[str, dict[str, int]]:
    """``read``, ``accepted``, ``rejected`` and each rejecting status's count, per file."""
    return {
        name: {
            "read": sum(c.values()),
            "accepted": c["valid"],
            "rejected": sum(c.values()) - c["valid"],
            **{s: n for s, n in c.items() if n and s != "valid"},
        }
        for name, c in sorted(per_file.items())
    }


def validate_records(
    records: Iterable[Mapping[str, Any]],
    image_index: pd.DataFrame,
    classes: Iterable[str],
    settings: FeedbackSettings,
    now: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Check every record, drop exact duplicates and resolve conflicting verdicts.

    Args:
        records: Raw records from :func:`~.files.parse_feedback_files`.
        image_index: Ingestion's index (``sha256``, ``uri``, ``all_uris``).
        classes: The classes a verdict may name (the labelling taxonomy's).
        settings: The conflict rule, report size and clock-skew allowance.
        now: The time future timestamps are judged against (UTC); the current time when
            ``None``.

    Returns:
        ``feedback_items`` (every valid, de-duplicated record: :data:`ITEM_COLUMNS`),
        ``feedback_verdicts`` (one row per image, the deciding verdict:
        :data:`VERDICT_COLUMNS`) and a report (``read``, ``accepted`` and ``rejected`` records,
        in total and ``per_file``; counts per status, the problems with file and line, the
        conflicts with every verdict and the one chosen).
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now).tz_convert("UTC")
    latest_allowed = now + pd.Timedelta(seconds=settings.max_clock_skew_seconds)
    items, per_file, problems = _check_records(
        records, set(classes), _uri_lookup(image_index), latest_allowed
    )
    counts: Counter[str] = sum(per_file.values(), Counter())
    table = pd.DataFrame(items, columns=ITEM_COLUMNS)
    table["timestamp"] = pd.to_datetime(table["timestamp"], utc=True)
    verdicts, conflicts = _resolve_verdicts(table, settings.conflict_rule)
    read = sum(counts.values())
    report = {
        "records": read,
        "read": read,
        "accepted": counts["valid"],
        "rejected": read - counts["valid"],
        "checked_at": now.isoformat(),
        "counts": {s: counts.get(s, 0) for s in STATUSES},
        "per_file": _file_counts(per_file),
        "images_with_verdicts": len(verdicts),
        "verdicts_per_class": dict(sorted(Counter(verdicts["verdict"]).items())),
        "records_per_kind": dict(sorted(Counter(table["kind"]).items())),
        "conflict_rule": settings.conflict_rule,
        "conflicts": len(conflicts),
        "conflicts_listed": conflicts[: settings.max_listed],
        "problems": {s: rows[: settings.max_listed] for s, rows in problems.items() if rows},
    }
    return table, verdicts, report
