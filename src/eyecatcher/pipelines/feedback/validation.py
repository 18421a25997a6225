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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from eyecatcher.monitoring.online_metrics import FEEDBACK_KINDS
from eyecatcher.pipelines.feedback.files import DEFAULT_MAX_FILE_BYTES

REQUIRED_FIELDS = ("image", "verdict", "reviewer", "timestamp", "kind")
OPTIONAL_FIELDS = ("note",)
CONFLICT_RULES = ("latest", "majority")
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


class FeedbackConfigError(ValueError):
    """The feedback settings are invalid."""


@dataclass(frozen=True)
class FeedbackSettings:
    """How feedback is validated.

    Attributes:
        conflict_rule: ``latest`` (the most recent verdict wins) or ``majority`` (the most
            frequent verdict wins; a tie goes to the most recent of the tied verdicts).
        max_listed: Problems and conflicts listed in full in the report (all are counted).
        max_file_bytes: Files larger than this are refused unread (one ``too_large`` record).
        max_clock_skew_seconds: How far past the run's clock a timestamp may be (clocks of
            moderation tools drift); later ones are ``future_timestamp`` (they would win the
            ``latest`` rule forever).
    """

    conflict_rule: str = "latest"
    max_listed: int = 50
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_clock_skew_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.conflict_rule not in CONFLICT_RULES:
            raise FeedbackConfigError(
                f"feedback.conflict_rule must be one of {list(CONFLICT_RULES)}, "
                f"got {self.conflict_rule!r}"
            )
        if self.max_listed < 0:
            raise FeedbackConfigError(f"feedback.max_listed must be >= 0, got {self.max_listed}")
        if isinstance(self.max_file_bytes, bool) or not isinstance(self.max_file_bytes, int):
            raise FeedbackConfigError(
                f"feedback.max_file_bytes must be an integer, got {self.max_file_bytes!r}"
            )
        if self.max_file_bytes <= 0:
            raise FeedbackConfigError(
                f"feedback.max_file_bytes must be > 0, got {self.max_file_bytes}"
            )
        skew = self.max_clock_skew_seconds
        if isinstance(skew, bool) or not isinstance(skew, int | float) or not 0 <= skew <= 86_400:
            raise FeedbackConfigError(
                "feedback.max_clock_skew_seconds must be between 0 and 86400, got "
                f"{self.max_clock_skew_seconds}"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> FeedbackSettings:
        """Build from the ``feedback`` parameter block (where the files are is the catalog's).

        Raises:
            FeedbackConfigError: On unknown keys or invalid values.
        """
        params = dict(params or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise FeedbackConfigError(
                f"unknown feedback setting(s) {unknown}; known: {sorted(known)}"
            )
        return cls(**params)


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
    per_file: dict[str, Counter[str]] = {}
    allowed = set(classes)
    lookup = _uri_lookup(image_index)
    items: list[dict[str, Any]] = []
    problems: dict[str, list[dict[str, Any]]] = {s: [] for s in STATUSES if s != "valid"}
    counts: Counter[str] = Counter()
    seen: set[tuple[Any, ...]] = set()
    for record in records:
        status, detail, item = _check_record(record, allowed, lookup, latest_allowed)
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
        counts[status] += 1
        per_file.setdefault(str(record.get("_file")), Counter())[status] += 1
        if status != "valid":
            problems[status].append({**where, "detail": detail})

    table = pd.DataFrame(items, columns=ITEM_COLUMNS)
    table["timestamp"] = pd.to_datetime(table["timestamp"], utc=True)
    verdict_rows = []
    conflicts = []
    for sha, group in table.groupby("sha256", sort=True):
        chosen, resolution = _resolve(group, settings.conflict_rule)
        verdict_rows.append(
            {
                **{c: chosen[c] for c in ("sha256", "uri", "verdict", "kind", "reviewer")},
                "timestamp": chosen["timestamp"],
                "n_records": len(group),
                "resolution": resolution,
            }
        )
        if resolution not in ("single", "agreed"):
            conflicts.append(
                {
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
            )
    verdicts = pd.DataFrame(verdict_rows, columns=VERDICT_COLUMNS)
    verdicts["timestamp"] = pd.to_datetime(verdicts["timestamp"], utc=True)
    read = sum(counts.values())
    report = {
        "records": read,
        "read": read,
        "accepted": counts["valid"],
        "rejected": read - counts["valid"],
        "checked_at": now.isoformat(),
        "counts": {s: counts.get(s, 0) for s in STATUSES},
        "per_file": {
            name: {
                "read": sum(c.values()),
                "accepted": c["valid"],
                "rejected": sum(c.values()) - c["valid"],
                **{s: n for s, n in c.items() if n and s != "valid"},
            }
            for name, c in sorted(per_file.items())
        },
        "images_with_verdicts": len(verdicts),
        "verdicts_per_class": dict(sorted(Counter(verdicts["verdict"]).items())),
        "records_per_kind": dict(sorted(Counter(table["kind"]).items())),
        "conflict_rule": settings.conflict_rule,
        "conflicts": len(conflicts),
        "conflicts_listed": conflicts[: settings.max_listed],
        "problems": {s: rows[: settings.max_listed] for s, rows in problems.items() if rows},
    }
    return table, verdicts, report
