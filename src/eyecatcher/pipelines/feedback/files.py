"""Reading feedback files (CSV, JSON Lines, Parquet) into raw records, one per row.

Parsing never raises on bad content: a file or a row that cannot be read becomes a record with
a ``_problem``, so validation can report it next to the good rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

#: Extensions read as feedback; other files in the folder are ignored (and counted).
FEEDBACK_EXTENSIONS = (".csv", ".jsonl", ".ndjson", ".parquet")


def is_feedback_file(name: str) -> bool:
    """Whether a file name has one of :data:`FEEDBACK_EXTENSIONS` (case-insensitive)."""
    return name.lower().endswith(FEEDBACK_EXTENSIONS)


def _problem(file: str, line: int | None, detail: str) -> dict[str, Any]:
    return {"_file": file, "_line": line, "_problem": f"malformed: {detail}"}


def _csv_records(name: str, data: bytes) -> list[dict[str, Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [_problem(name, None, f"not UTF-8 text ({exc.reason})")]
    reader = csv.DictReader(io.StringIO(text))
    records = []
    try:
        for row in reader:
            line = reader.line_num
            if None in row:  # more fields than the header names
                records.append(_problem(name, line, f"{len(row[None])} field(s) beyond the header"))
                continue
            if any(value is None for value in row.values()):
                records.append(_problem(name, line, "fewer fields than the header"))
                continue
            records.append({**row, "_file": name, "_line": line})
    except csv.Error as exc:
        records.append(_problem(name, reader.line_num, f"CSV error: {exc}"))
    return records


def _jsonl_records(name: str, data: bytes) -> list[dict[str, Any]]:
    records = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            records.append(_problem(name, number, f"not JSON ({exc})"))
            continue
        if not isinstance(value, dict):
            records.append(_problem(name, number, f"a JSON {type(value).__name__}, not an object"))
            continue
        records.append({**value, "_file": name, "_line": number})
    return records


def _parquet_records(name: str, data: bytes) -> list[dict[str, Any]]:
    try:
        table = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        return [_problem(name, None, f"unreadable Parquet file ({type(exc).__name__}: {exc})")]
    records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    return [{**r, "_file": name, "_line": i + 2} for i, r in enumerate(records)]


def parse_feedback_files(files: Mapping[str, bytes]) -> list[dict[str, Any]]:
    """Parse every feedback file into raw records.

    Args:
        files: File name → contents, e.g. from :class:`FeedbackFilesDataset`.

    Returns:
        One dict per row with the row's fields plus ``_file`` and ``_line`` (the CSV line, the
        JSONL line, or the Parquet row + 2 as a spreadsheet shows it); rows or files that
        could not be parsed carry ``_problem`` instead of fields.
    """
    records: list[dict[str, Any]] = []
    for name in sorted(files):
        data = files[name]
        lower = name.lower()
        if lower.endswith(".csv"):
            records.extend(_csv_records(name, data))
        elif lower.endswith((".jsonl", ".ndjson")):
            records.extend(_jsonl_records(name, data))
        elif lower.endswith(".parquet"):
            records.extend(_parquet_records(name, data))
    return records
