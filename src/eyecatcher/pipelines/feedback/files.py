"""Reading feedback files (CSV, JSON Lines, Parquet) into raw records, one per row.

Parsing never raises on bad content, however hostile: a file or a row that cannot be read
becomes a record with a ``_problem`` (and the ``_status`` it is counted under), so validation
reports it next to the good rows and every row read is accounted for. A bad row never hides
the rows after it:

- a file over the size cap is refused before it is read (one ``too_large`` record naming the
  file, its size and the cap);
- a field longer than :data:`MAX_FIELD_CHARS` (CSV, JSON or Parquet) is a ``too_large`` row,
  and the CSV reader carries on after it instead of ending the file (after the end of the
  quoted field when the huge field spans several lines: they are all that one rejected row);
- a JSON line with an integer Python refuses to convert (more than 4,300 digits) or nesting too
  deep to parse is a ``too_large`` row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from eyecatcher.datasets.feedback_files_dataset import EXPORT_EXTENSION, FeedbackFile
from eyecatcher.label_studio import export_records

#: Longest field (and JSON key) accepted, in characters: the csv module's default
#: ``field_size_limit``, applied to every format alike (a verdict, a URI or a note is far
#: shorter; the csv module's own limit is process-wide state another library may change).
MAX_FIELD_CHARS = 131_072
#: The default for ``feedback.max_file_bytes``.
DEFAULT_MAX_FILE_BYTES = 50_000_000


def _problem(file: str, line: int | None, detail: str, status: str = "malformed") -> dict[str, Any]:
    return {"_file": file, "_line": line, "_problem": detail, "_status": status}


def _row(file: str, line: int, row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row as a record, or a ``too_large`` problem when a field or key is over the limit."""
    for key, value in row.items():
        if len(str(key)) > MAX_FIELD_CHARS:
            return _problem(
                file,
                line,
                f"field_too_large: a field name has {len(str(key)):,} characters "
                f"(limit {MAX_FIELD_CHARS:,})",
                "too_large",
            )
        if isinstance(value, str | bytes) and len(value) > MAX_FIELD_CHARS:
            return _problem(
                file,
                line,
                f"field_too_large: field {str(key)!r} has {len(value):,} characters "
                f"(limit {MAX_FIELD_CHARS:,})",
                "too_large",
            )
    return {**row, "_file": file, "_line": line}


def _fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """A parsed record without its ``_file``/``_line`` bookkeeping."""
    return {k: v for k, v in record.items() if k not in ("_file", "_line")}


class _Lines:
    """The lines of a text, counted, remembering those of the row being read.

    The csv reader pulls lines from it; when a row fails, the lines it had pulled tell whether
    the failure was inside a quoted field, so :func:`_csv_records` can skip to the field's end.
    """

    def __init__(self, text: str) -> None:
        self._lines = iter(io.StringIO(text))
        self.number = 0
        self.row: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.number += 1
        self.row.append(line)
        return line

    def skip_to_closing_quote(self) -> None:
        """After an error inside a quoted field, consume lines up to the one that closes it.

        Quote characters come in pairs in a well-formed row (an escaped quote is doubled), so
        an odd count means the reader stopped inside a quoted field.
        """
        quotes = "".join(self.row).count('"')
        while quotes % 2:
            try:
                quotes += next(self).count('"')
            except StopIteration:
                return


def _csv_records(name: str, data: bytes) -> list[dict[str, Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [_problem(name, None, f"not UTF-8 text ({exc.reason})")]
    lines = _Lines(text)
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        # Without its header no row of the file can be read: the file is one rejected record.
        return [_problem(name, lines.number, f"the header is unreadable (CSV error: {exc})")]
    if header is None:
        return []
    records = []
    while True:
        lines.row = []
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # This row alone is rejected and the file goes on (before, the error ended the loop
            # and every later row was lost uncounted). The reader starts afresh at the next
            # line it pulls: past the end of the quoted field the error happened in, if any.
            first = lines.number - len(lines.row) + 1
            lines.skip_to_closing_quote()
            status = "too_large" if "field limit" in str(exc) else "malformed"
            prefix = "field_too_large: " if status == "too_large" else ""
            span = f" (lines {first}-{lines.number})" if lines.number > first else ""
            records.append(_problem(name, first, f"{prefix}CSV error: {exc}{span}", status))
            continue
        line = lines.number
        if not fields:  # a blank line, as csv.DictReader skips it
            continue
        if len(fields) > len(header):
            extra = len(fields) - len(header)
            records.append(_problem(name, line, f"{extra} field(s) beyond the header"))
            continue
        if len(fields) < len(header):
            records.append(_problem(name, line, "fewer fields than the header"))
            continue
        records.append(_row(name, line, dict(zip(header, fields, strict=True))))
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
        except ValueError as exc:
            # Not a syntax error: Python's int-str conversion limit (4,300 digits).
            records.append(_problem(name, number, f"number_too_large: {exc}", "too_large"))
            continue
        except RecursionError:
            records.append(
                _problem(name, number, "nesting_too_deep: JSON nested too deeply", "too_large")
            )
            continue
        if not isinstance(value, dict):
            records.append(_problem(name, number, f"a JSON {type(value).__name__}, not an object"))
            continue
        records.append(_row(name, number, value))
    return records


def _parquet_records(name: str, data: bytes, max_bytes: int) -> list[dict[str, Any]]:
    try:
        metadata = pq.ParquetFile(io.BytesIO(data)).metadata
        # A small compressed file can hold far more data: bound what the metadata says the
        # columns decode to by the same cap, before decoding any of them.
        decoded = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
        if decoded > max_bytes:
            return [
                _problem(
                    name,
                    None,
                    f"file_too_large: {name} decodes to {decoded:,} bytes, over "
                    f"feedback.max_file_bytes ({max_bytes:,}); split it",
                    "too_large",
                )
            ]
        table = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        return [_problem(name, None, f"unreadable Parquet file ({type(exc).__name__}: {exc})")]
    records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    return [_row(name, i + 2, r) for i, r in enumerate(records)]


def _read_capped(name: str, content: bytes | FeedbackFile, max_bytes: int) -> bytes | str:
    """The file's bytes, or why it is refused (over the cap, checked before reading it)."""

    def refused(size: str) -> str:
        return (
            f"file_too_large: {name} is {size}, over feedback.max_file_bytes "
            f"({max_bytes:,}); split it or raise the cap"
        )

    if isinstance(content, FeedbackFile):
        if content.size > max_bytes:
            return refused(f"{content.size:,} bytes")
        content = content.read(max_bytes)
        if len(content) > max_bytes:
            return refused(f"more than {max_bytes:,} bytes (it grew after it was listed)")
    elif len(content) > max_bytes:
        return refused(f"{len(content):,} bytes")
    return content


def parse_feedback_files(
    files: Mapping[str, bytes | FeedbackFile], max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> list[dict[str, Any]]:
    """Parse every feedback file into raw records.

    Args:
        files: File name → contents, or a :class:`FeedbackFile` to read (from
            :class:`~eyecatcher.datasets.feedback_files_dataset.FeedbackFilesDataset`).
        max_file_bytes: Files larger than this are refused unread, as one ``too_large`` record.

    Returns:
        One dict per row with the row's fields plus ``_file`` and ``_line`` (the CSV line, the
        JSONL line, or the Parquet row + 2 as a spreadsheet shows it); rows or files that
        could not be parsed carry ``_problem`` (why) and ``_status`` (``malformed`` or
        ``too_large``) instead of fields.
    """
    records: list[dict[str, Any]] = []
    for name in sorted(files):
        lower = name.lower()
        data = _read_capped(name, files[name], max_file_bytes)
        if isinstance(data, str):
            records.append(_problem(name, None, data, "too_large"))
        elif lower.endswith(".csv"):
            records.extend(_csv_records(name, data))
        elif lower.endswith((".jsonl", ".ndjson")):
            records.extend(_jsonl_records(name, data))
        elif lower.endswith(".parquet"):
            records.extend(_parquet_records(name, data, max_file_bytes))
        elif lower.endswith(EXPORT_EXTENSION):
            # The same per-field limit as every other format (a huge choice, id or path).
            records.extend(
                r if "_problem" in r else _row(name, r["_line"], _fields(r))
                for r in export_records(name, data)
            )
    return records
