"""Hostile feedback files: every row read is accepted or rejected with a reason, none is lost.

Huge fields, numbers and nesting are per-row rejections (the rows after them are read), a
timestamp in the future is rejected, and a file over the size cap is refused unread, as one
counted record naming the file, its size and the cap.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from eyecatcher.datasets.feedback_files_dataset import FeedbackFile, FeedbackFilesDataset
from eyecatcher.pipelines.feedback.files import MAX_FIELD_CHARS, parse_feedback_files
from eyecatcher.pipelines.feedback.nodes import validate_feedback
from eyecatcher.pipelines.feedback.settings import FeedbackConfigError, FeedbackSettings
from eyecatcher.pipelines.feedback.validation import validate_records
from tests.pipelines.labelling.conftest import labelling_params

SHA = {name: name * 64 for name in "abcd"}
CLASSES = {"safe", "explicit_nudity"}
HEADER = "image,verdict,reviewer,timestamp,kind,note\n"
NOW = pd.Timestamp("2026-12-07T12:00:00Z")


@pytest.fixture
def index() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sha256": list(SHA.values()),
            "uri": [f"s3://bucket/{n}.jpg" for n in SHA],
            "all_uris": [[f"s3://bucket/{n}.jpg"] for n in SHA],
        }
    )


def csv_row(sha: str, note: str = "", timestamp: str = "2026-11-25T10:00Z") -> str:
    return f"{sha},safe,mod-1,{timestamp},appeal,{note}\n"


def json_line(sha: str, **fields: object) -> str:
    base = {
        "image": sha,
        "verdict": "safe",
        "reviewer": "mod-1",
        "timestamp": "2026-11-25T10:00:00Z",
        "kind": "review",
    }
    return json.dumps({**base, **fields}) + "\n"


def validate(records: list[dict], index: pd.DataFrame, **settings: object):
    return validate_records(records, index, CLASSES, FeedbackSettings(**settings), now=NOW)


def assert_accounted(report: dict, read: int) -> None:
    """Every record read is accepted or rejected, in total and per file."""
    assert report["read"] == read == report["records"]
    assert report["accepted"] + report["rejected"] == report["read"]
    assert report["accepted"] == report["counts"]["valid"]
    assert sum(report["counts"].values()) == report["read"]
    assert sum(f["read"] for f in report["per_file"].values()) == report["read"]
    for per_file in report["per_file"].values():
        assert per_file["accepted"] + per_file["rejected"] == per_file["read"]


def test_a_csv_field_over_the_limit_rejects_its_row_and_the_file_goes_on(
    index: pd.DataFrame,
) -> None:
    huge = "x" * (csv.field_size_limit() + 10)
    text = HEADER + csv_row(SHA["a"]) + csv_row(SHA["b"], note=huge)
    text += csv_row(SHA["c"]) + csv_row(SHA["d"])
    records = parse_feedback_files({"f.csv": text.encode()})
    items, _, report = validate(records, index)
    # Before: the csv error ended the file at line 3, and c and d were lost uncounted.
    assert sorted(items["sha256"]) == [SHA["a"], SHA["c"], SHA["d"]]
    (problem,) = report["problems"]["too_large"]
    assert problem["line"] == 3 and problem["detail"].startswith("field_too_large: ")
    assert_accounted(report, read=4)
    assert report["per_file"]["f.csv"] == {
        "read": 4,
        "accepted": 3,
        "rejected": 1,
        "too_large": 1,
    }


def test_a_huge_quoted_field_over_several_lines_is_one_rejected_row(index: pd.DataFrame) -> None:
    quoted = '"' + ("x" * 100_000 + "\n") * 3 + '"'  # lines 3-6, over the limit at line 4
    text = HEADER + csv_row(SHA["a"]) + csv_row(SHA["b"], note=quoted) + csv_row(SHA["c"])
    records = parse_feedback_files({"f.csv": text.encode()})
    items, _, report = validate(records, index)
    # The reader resumes after the closing quote: the row after it is read as itself.
    assert sorted(items["sha256"]) == [SHA["a"], SHA["c"]]
    (problem,) = report["problems"]["too_large"]
    assert problem["line"] == 3 and problem["detail"].endswith("(lines 3-6)")
    assert items.set_index("sha256")["line"][SHA["c"]] == 7
    assert_accounted(report, read=3)


def test_the_field_limit_holds_even_where_the_csv_module_limit_was_raised(
    index: pd.DataFrame,
) -> None:
    previous = csv.field_size_limit(10 * MAX_FIELD_CHARS)  # process-wide: another library's
    try:
        text = HEADER + csv_row(SHA["a"], note="y" * (MAX_FIELD_CHARS + 1)) + csv_row(SHA["b"])
        records = parse_feedback_files({"f.csv": text.encode()})
    finally:
        csv.field_size_limit(previous)
    items, _, report = validate(records, index)
    assert items["sha256"].tolist() == [SHA["b"]]
    assert "field 'note' has 131,073 characters" in report["problems"]["too_large"][0]["detail"]
    assert_accounted(report, read=2)


def test_an_unreadable_csv_header_rejects_the_file_as_one_record(index: pd.DataFrame) -> None:
    text = "image," + "h" * (csv.field_size_limit() + 1) + "\n" + csv_row(SHA["a"])
    records = parse_feedback_files(
        {"f.csv": text.encode(), "g.csv": (HEADER + csv_row(SHA["b"])).encode()}
    )
    items, _, report = validate(records, index)
    assert items["sha256"].tolist() == [SHA["b"]]
    assert "header is unreadable" in report["problems"]["malformed"][0]["detail"]
    assert_accounted(report, read=2)


def test_huge_numbers_deep_nesting_and_non_text_fields_are_per_row_rejections(
    index: pd.DataFrame,
) -> None:
    lines = [
        json_line(SHA["a"]),
        '{"image": "' + SHA["b"] + '", "n": ' + "9" * 5000 + "}\n",  # int-str limit
        json_line(SHA["b"]),
        '{"image": ' + "[" * 100_000 + "]" * 100_000 + "}\n",  # RecursionError
        json_line(SHA["c"]),
        json_line(SHA["d"], verdict=["safe"]),  # valid JSON, wrong type
        json_line(SHA["d"], reviewer={"id": 1}),
        json_line(SHA["d"], note="z" * (MAX_FIELD_CHARS + 1)),
        json_line(SHA["d"]),
    ]
    records = parse_feedback_files({"f.jsonl": "".join(lines).encode()})
    items, _, report = validate(records, index)
    assert sorted(items["sha256"]) == [SHA["a"], SHA["b"], SHA["c"], SHA["d"]]
    too_large = {p["line"]: p["detail"] for p in report["problems"]["too_large"]}
    assert too_large[2].startswith("number_too_large: ")
    assert too_large[4].startswith("nesting_too_deep: ")
    assert too_large[8].startswith("field_too_large: field 'note'")
    malformed = {p["line"]: p["detail"] for p in report["problems"]["malformed"]}
    assert malformed == {
        6: "field 'verdict' is a list, not text",
        7: "field 'reviewer' is a dict, not text",
    }
    assert_accounted(report, read=len(lines))


def test_a_timestamp_in_the_future_is_rejected_and_never_wins_latest(
    index: pd.DataFrame,
) -> None:
    records = [
        {**json.loads(json_line(SHA["a"])), "_file": "f.jsonl", "_line": 1},
        # Within the 5-minute clock-skew allowance: accepted.
        {
            **json.loads(json_line(SHA["a"], verdict="explicit_nudity", reviewer="mod-2")),
            "timestamp": "2026-12-07T12:04:00Z",
            "_file": "f.jsonl",
            "_line": 2,
        },
        # A year ahead: it would have won `latest` until next December.
        {
            **json.loads(json_line(SHA["a"], reviewer="mod-3")),
            "timestamp": "2027-12-07T12:00:00+01:00",
            "_file": "f.jsonl",
            "_line": 3,
        },
    ]
    _, verdicts, report = validate(records, index)
    assert verdicts["verdict"].tolist() == ["explicit_nudity"]
    (problem,) = report["problems"]["future_timestamp"]
    assert problem["line"] == 3 and "2027-12-07T12:00:00+01:00" in problem["detail"]
    assert_accounted(report, read=3)
    # The allowance is a parameter: with none, the 4-minutes-ahead record goes too.
    _, _, strict = validate(records, index, max_clock_skew_seconds=0)
    assert strict["counts"]["future_timestamp"] == 2


def test_a_label_studio_export_gets_the_same_field_limit(index: pd.DataFrame) -> None:
    def task(sha: str, choice: str, task_id: int) -> dict:
        result = {"type": "choices", "from_name": "verdict", "to_name": "image"}
        annotation = {
            "id": task_id,
            "completed_by": 7,
            "result": [{**result, "value": {"choices": [choice]}}],
            "updated_at": "2026-12-06T09:16:40Z",
        }
        return {"id": task_id, "data": {"sha256": sha}, "annotations": [annotation]}

    export = [task(SHA["a"], "c" * (MAX_FIELD_CHARS + 1), 1), task(SHA["b"], "safe", 2)]
    records = parse_feedback_files({"ls.json": json.dumps(export).encode()})
    items, _, report = validate(records, index)
    assert items["sha256"].tolist() == [SHA["b"]]
    assert report["problems"]["too_large"][0]["detail"].startswith(
        "field_too_large: field 'verdict'"
    )
    assert_accounted(report, read=2)


def test_a_file_over_the_cap_is_refused_unread_and_counted(
    tmp_path: Path, index: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "feedback"
    folder.mkdir()
    (folder / "big.csv").write_text(HEADER + csv_row(SHA["a"]) * 200)
    (folder / "small.jsonl").write_text(json_line(SHA["b"]))
    files = FeedbackFilesDataset(str(folder)).load()
    size = (folder / "big.csv").stat().st_size
    with caplog.at_level(logging.INFO):
        items, _, report, metrics = validate_feedback(
            files, index, {"max_file_bytes": 1_000}, labelling_params()
        )
    assert items["sha256"].tolist() == [SHA["b"]]
    (problem,) = report["problems"]["too_large"]
    assert (problem["file"], problem["line"]) == ("big.csv", None)
    assert problem["detail"] == (
        f"file_too_large: big.csv is {size:,} bytes, over feedback.max_file_bytes (1,000); "
        "split it or raise the cap"
    )
    assert problem["detail"] in caplog.text  # said on the console, not only in the report
    assert_accounted(report, read=2)
    assert metrics["records_read"]["value"] == 2 and metrics["records_rejected"]["value"] == 1
    assert "2 record(s) read in 2 file(s): 1 accepted, 1 rejected" in caplog.text


def test_a_file_over_the_cap_is_never_opened_and_one_that_grew_is_cut_at_the_cap(
    index: pd.DataFrame,
) -> None:
    def never() -> io.BytesIO:
        raise AssertionError("a file over the cap must not be read")

    grown = (HEADER + csv_row(SHA["a"]) * 50).encode()
    files = {
        "listed_big.csv": FeedbackFile(size=10**12, opener=never),
        "grew.csv": FeedbackFile(size=10, opener=lambda: io.BytesIO(grown)),
    }
    records = parse_feedback_files(files, max_file_bytes=1_000)
    details = sorted(r["_problem"] for r in records)
    assert details == [
        "file_too_large: grew.csv is more than 1,000 bytes (it grew after it was listed), "
        "over feedback.max_file_bytes (1,000); split it or raise the cap",
        "file_too_large: listed_big.csv is 1,000,000,000,000 bytes, over "
        "feedback.max_file_bytes (1,000); split it or raise the cap",
    ]


def test_a_parquet_file_that_decodes_past_the_cap_is_refused(index: pd.DataFrame) -> None:
    rows = [json.loads(json_line(SHA["a"], note="n" * 1000 + str(i))) for i in range(200)]
    buffer = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buffer, compression="zstd")
    data = buffer.getvalue()
    assert len(data) < 20_000  # similar notes compress well: the bytes pass the cap
    records = parse_feedback_files({"p.parquet": data}, max_file_bytes=20_000)
    (record,) = records
    assert record["_status"] == "too_large"
    assert (
        "decodes to" in record["_problem"] and "over feedback.max_file_bytes" in record["_problem"]
    )
    assert len(parse_feedback_files({"p.parquet": data})) == 200  # under the default cap


def test_every_row_of_a_hostile_folder_is_accounted_for(
    tmp_path: Path, index: pd.DataFrame
) -> None:
    folder = tmp_path / "feedback"
    folder.mkdir()
    huge = "x" * (csv.field_size_limit() + 1)
    csv_rows = [csv_row(SHA["a"]), csv_row(SHA["b"], note=huge), "only,two\n", csv_row(SHA["c"])]
    csv_rows += [csv_row(SHA["d"], timestamp="2099-01-01T00:00Z"), csv_row(SHA["d"])]
    (folder / "a.csv").write_text(HEADER + "".join(csv_rows))
    json_rows = [json_line(SHA["a"], reviewer="mod-9"), "{broken\n", "[1]\n", json_line("e" * 64)]
    json_rows += ['{"x": ' + "1" * 4301 + "}\n", json_line(SHA["b"], verdict="nsfw")]
    (folder / "b.jsonl").write_text("".join(json_rows))
    (folder / "c.csv").write_text(HEADER + csv_row(SHA["c"]) * 3000)  # over the cap below
    files = FeedbackFilesDataset(str(folder)).load()
    _, _, report, _ = validate_feedback(
        files, index, {"max_file_bytes": 200_000}, labelling_params()
    )
    # 6 CSV rows + 6 JSON lines + 1 refused file = 13 records, none lost.
    assert_accounted(report, read=13)
    assert report["per_file"]["a.csv"]["read"] == len(csv_rows)
    assert report["per_file"]["b.jsonl"]["read"] == len(json_rows)
    assert report["per_file"]["c.csv"] == {"read": 1, "accepted": 0, "rejected": 1, "too_large": 1}
    assert report["accepted"] == 4  # a, c, d from a.csv; a from b.jsonl (the rest rejected)
    assert {s: n for s, n in report["counts"].items() if n} == {
        "valid": 4,
        "malformed": 3,
        "too_large": 3,
        "future_timestamp": 1,
        "unknown_class": 1,
        "unknown_image": 1,
    }


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"max_file_bytes": 0}, "max_file_bytes must be > 0"),
        ({"max_file_bytes": "50MB"}, "max_file_bytes must be an integer"),
        ({"max_clock_skew_seconds": -1}, "max_clock_skew_seconds must be between"),
    ],
)
def test_size_cap_and_skew_settings_are_checked(params: dict, match: str) -> None:
    with pytest.raises(FeedbackConfigError, match=match):
        FeedbackSettings.parse(params)


def test_settings_are_typed_once_and_misspelt_keys_name_the_closest() -> None:
    with pytest.raises(FeedbackConfigError, match=r"'max_listd' \(did you mean 'max_listed'\?\)"):
        FeedbackSettings.parse({"max_listd": 10})
    with pytest.raises(FeedbackConfigError, match="max_file_bytes must be an integer, got True"):
        FeedbackSettings.parse({"max_file_bytes": True})
    with pytest.raises(FeedbackConfigError, match="max_clock_skew_seconds must be between"):
        FeedbackSettings.parse({"max_clock_skew_seconds": 86_401})
    settings = FeedbackSettings.parse({"max_clock_skew_seconds": 0, "conflict_rule": "majority"})
    assert (settings.max_clock_skew_seconds, settings.conflict_rule) == (0, "majority")
    with pytest.raises(ValueError, match="frozen"):
        settings.max_listed = 1  # type: ignore[misc]
