"""Hostile lines in the response cache: wrongly typed, huge numbers, deep nesting.

Each is valid JSON or close to it; each must be skipped with a warning by every load and moved to
the quarantine by the next writer, like a cut-off line, while every good record stays usable:
records read = records kept + lines quarantined.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eyecatcher.rekognition.cache import ResponseCache, scan_bytes


def _answer(*confidences: float) -> dict:
    return {
        "ModerationLabels": [
            {"Name": f"L{c}", "ParentName": "", "Confidence": c, "TaxonomyLevel": 1}
            for c in confidences
        ],
        "ModerationModelVersion": "7.0",
        "ContentTypes": [],
    }


def _good(sha: str) -> dict:
    return {"sha256": sha * 64, "min_confidence": 50.0, "response": _answer(80.0)}


#: (what, the raw line, words the quarantine reason must contain)
HOSTILE_LINES = [
    (
        "text min_confidence",
        json.dumps({**_good("1"), "min_confidence": "fifty"}),
        "min_confidence is 'fifty'",
    ),
    ("boolean min_confidence", json.dumps({**_good("1"), "min_confidence": True}), "True"),
    (
        "NaN min_confidence",
        '{"sha256": "' + "1" * 64 + '", "min_confidence": NaN, "response": {}}',
        "nan",
    ),
    ("list as sha256", json.dumps({**_good("1"), "sha256": ["a" * 64]}), "sha256 is ['"),
    ("short sha256", json.dumps({**_good("1"), "sha256": "abc"}), "64 lowercase hex"),
    ("response a list", json.dumps({**_good("1"), "response": [1, 2]}), "response is a JSON list"),
    (
        "labels not a list",
        json.dumps({**_good("1"), "response": {"ModerationLabels": "Nudity"}}),
        "ModerationLabels is a JSON str",
    ),
    (
        "label not an object",
        json.dumps({**_good("1"), "response": {"ModerationLabels": ["Nudity"]}}),
        "ModerationLabels[0] is a JSON str",
    ),
    (
        "text confidence",
        json.dumps(
            {**_good("1"), "response": {"ModerationLabels": [{"Name": "X", "Confidence": "9"}]}}
        ),
        "Confidence is '9'",
    ),
    (
        "numeric label name",
        json.dumps(
            {**_good("1"), "response": {"ModerationLabels": [{"Name": 7, "Confidence": 9.0}]}}
        ),
        "Name is a JSON int",
    ),
    (
        "text taxonomy level",
        json.dumps(
            {
                **_good("1"),
                "response": {
                    "ContentTypes": [{"Name": "X", "Confidence": 1.0}],
                    "ModerationLabels": [{"Confidence": 9.0, "TaxonomyLevel": "1"}],
                },
            }
        ),
        "TaxonomyLevel is '1'",
    ),
    (
        "project_version a number",
        json.dumps({**_good("1"), "project_version": 3}),
        "project_version is a JSON int",
    ),
    ("request a string", json.dumps({**_good("1"), "request": "bytes"}), "request is a JSON str"),
    (
        "error without code",
        json.dumps({"sha256": "1" * 64, "min_confidence": 50.0, "error": {"message": "x"}}),
        "error.code is None",
    ),
    (
        "error a string",
        json.dumps({"sha256": "1" * 64, "min_confidence": 50.0, "error": "Throttled"}),
        "error is a JSON str",
    ),
    (
        "5,000-digit integer",
        '{"sha256": "' + "1" * 64 + '", "min_confidence": ' + "9" * 5000 + ', "response": {}}',
        "integer string conversion",
    ),
    ("deep nesting", '{"sha256": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
]


@pytest.mark.parametrize(
    ("line", "reason"),
    [(line, reason) for _, line, reason in HOSTILE_LINES],
    ids=[what for what, _, _ in HOSTILE_LINES],
)
def test_each_hostile_line_is_a_bad_line_with_its_reason(line: str, reason: str) -> None:
    scan = scan_bytes(json.dumps(_good("a")).encode() + b"\n" + line.encode() + b"\n")
    assert len(scan.records) == 1
    assert [number for number, _, _ in scan.bad_lines] == [2]
    assert reason in scan.bad_lines[0][2], scan.bad_lines[0][2]


def test_every_hostile_line_is_skipped_by_loads_then_quarantined_and_every_line_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.jsonl"
    good = [json.dumps(_good(sha)) for sha in "abc"]
    # Hostile lines between good ones: none may hide the records after it.
    lines = [good[0], *(line for _, line, _ in HOSTILE_LINES[:8]), good[1]]
    lines += [*(line for _, line, _ in HOSTILE_LINES[8:]), good[2]]
    path.write_text("\n".join(lines) + "\n")

    cache = ResponseCache(path)  # a load never raises on them
    n_hostile = len(HOSTILE_LINES)
    assert cache.n_records == 3 and cache.n_skipped_lines == n_hostile
    assert cache.n_records + cache.n_skipped_lines == len(lines)  # read = kept + set aside
    assert all(cache.lookup(sha * 64, 50.0) is not None for sha in "abc")
    assert "min_confidence is 'fifty'" in caplog.text

    with cache.exclusive():
        cache.append(_good("d"))
    quarantined = [json.loads(q) for q in (tmp_path / "c.jsonl.quarantine.jsonl").open()]
    assert len(quarantined) == n_hostile
    assert sorted(q["line"] for q in quarantined) == [
        number for number, line in enumerate(lines, start=1) if line not in good
    ]
    reopened = ResponseCache(path)
    assert reopened.n_records == 4 and reopened.n_skipped_lines == 0


def test_a_bad_line_in_a_read_only_seed_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed = tmp_path / "seed.jsonl"
    seed.write_text(
        json.dumps({**_good("a"), "min_confidence": "fifty"}) + "\n" + json.dumps(_good("b")) + "\n"
    )
    cache = ResponseCache(None, seed_paths=[seed])
    assert cache.n_records == 1 and cache.n_skipped_lines == 1
    assert cache.lookup("b" * 64, 50.0) is not None
    assert "seed.jsonl:1" in caplog.text


def test_well_typed_optional_fields_still_load(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    record = {
        "sha256": "a" * 64,
        "min_confidence": 20,  # an integer threshold is a number
        "project_version": None,
        "request": {"image": "bytes", "format_checked": True},
        "response": {},
        "extra": {"anything": ["goes"]},  # fields no code reads are not checked
    }
    error = {"sha256": "b" * 64, "error": {"code": "InvalidImageFormatException"}}
    path.write_text(json.dumps(record) + "\n" + json.dumps(error) + "\n")
    cache = ResponseCache(path)
    assert cache.n_records == 2 and cache.n_skipped_lines == 0
