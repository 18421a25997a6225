"""Feedback validation: every bad-input case is reported, none stops the run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from eyecatcher.datasets.feedback_files_dataset import FeedbackFilesDataset
from eyecatcher.pipelines.feedback.files import parse_feedback_files
from eyecatcher.pipelines.feedback.nodes import validate_feedback
from eyecatcher.pipelines.feedback.settings import FeedbackConfigError, FeedbackSettings
from eyecatcher.pipelines.feedback.validation import validate_records
from tests.pipelines.labelling.conftest import labelling_params

SHA = {name: name * 64 for name in "abc"}
CLASSES = {"safe", "explicit_nudity", "swimwear_or_underwear"}
HEADER = "image,verdict,reviewer,timestamp,kind,note\n"


@pytest.fixture
def index() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sha256": list(SHA.values()),
            "uri": [f"s3://bucket/{n}.jpg" for n in SHA],
            "all_uris": [[f"s3://bucket/{n}.jpg", f"s3://bucket/copy/{n}.jpg"] for n in SHA],
        }
    )


def record(image: str = SHA["a"], verdict: str = "safe", **fields: object) -> dict:
    base = {
        "image": image,
        "verdict": verdict,
        "reviewer": "mod-1",
        "timestamp": "2026-11-25T10:00:00Z",
        "kind": "appeal",
        "_file": "f.jsonl",
        "_line": 1,
    }
    return {**base, **fields}


def validate(records: list[dict], index: pd.DataFrame, **settings: object):
    return validate_records(records, index, CLASSES, FeedbackSettings(**settings))


def test_valid_records_resolve_sha256_and_every_uri_of_an_image(index: pd.DataFrame) -> None:
    items, verdicts, report = validate(
        [
            record(SHA["a"].upper()),
            record("s3://bucket/b.jpg", "explicit_nudity", kind="report"),
            record("s3://bucket/copy/c.jpg", "swimwear_or_underwear", kind="review", note="ok"),
        ],
        index,
    )
    assert report["counts"] == {
        "valid": 3,
        "duplicate": 0,
        "malformed": 0,
        "too_large": 0,
        "future_timestamp": 0,
        "unknown_class": 0,
        "unknown_image": 0,
    }
    assert items["sha256"].tolist() == [SHA["a"], SHA["b"], SHA["c"]]
    assert items["uri"].tolist()[2] == "s3://bucket/c.jpg"  # the index's own uri
    assert verdicts.set_index("sha256")["verdict"].to_dict() == {
        SHA["a"]: "safe",
        SHA["b"]: "explicit_nudity",
        SHA["c"]: "swimwear_or_underwear",
    }
    assert set(verdicts["resolution"]) == {"single"}
    assert str(verdicts["timestamp"].dt.tz) == "UTC"


@pytest.mark.parametrize(
    ("bad", "status", "detail"),
    [
        ({"verdict": "nsfw"}, "unknown_class", "'nsfw' is not a class"),
        ({"image": "f" * 64}, "unknown_image", "not in the image index"),
        ({"image": "s3://bucket/other.jpg"}, "unknown_image", "not in the image index"),
        ({"reviewer": "  "}, "malformed", "['reviewer']"),
        ({"timestamp": None}, "malformed", "['timestamp']"),
        ({"timestamp": "yesterday"}, "malformed", "not ISO 8601"),
        ({"timestamp": "2026-11-25T10:00:00"}, "malformed", "no time zone"),
        ({"kind": "complaint"}, "malformed", "'complaint' is not one of"),
    ],
)
def test_each_bad_record_is_set_aside_with_its_reason_and_the_rest_kept(
    index: pd.DataFrame, bad: dict, status: str, detail: str
) -> None:
    good = record(SHA["b"], _line=2)
    items, verdicts, report = validate([record(**bad), good], index)
    assert report["counts"][status] == 1 and report["counts"]["valid"] == 1
    (problem,) = report["problems"][status]
    assert detail in problem["detail"] and (problem["file"], problem["line"]) == ("f.jsonl", 1)
    assert items["sha256"].tolist() == [SHA["b"]]
    assert verdicts["sha256"].tolist() == [SHA["b"]]


def test_malformed_files_and_rows_are_reported_with_file_and_line(index: pd.DataFrame) -> None:
    csv_text = (
        HEADER
        + f"{SHA['a']},safe,mod-1,2026-11-25T10:00Z,appeal,\n"
        + f"{SHA['b']},safe,mod-1,2026-11-25T10:00Z,appeal,note,EXTRA\n"
        + f"{SHA['c']},safe\n"
    )
    jsonl = (
        json.dumps(record(SHA["b"], "explicit_nudity", kind="report")) + "\n{not json\n[1, 2]\n\n"
    )
    buffer = io.BytesIO()
    pd.DataFrame([{k: v for k, v in record(SHA["c"]).items() if not k.startswith("_")}]).to_parquet(
        buffer
    )
    files = {
        "a.csv": csv_text.encode(),
        "b.jsonl": jsonl.encode(),
        "c.parquet": buffer.getvalue(),
        "d.parquet": b"PAR1 broken",
        "e.csv": b"\xff\xfe\x00bad",
    }
    records = parse_feedback_files(files)
    items, _, report = validate(records, index)
    assert report["counts"]["valid"] == 3
    assert sorted(items["file"]) == ["a.csv", "b.jsonl", "c.parquet"]
    malformed = {(p["file"], p["line"]): p["detail"] for p in report["problems"]["malformed"]}
    assert "beyond the header" in malformed[("a.csv", 3)]
    assert "fewer fields" in malformed[("a.csv", 4)]
    assert "not JSON" in malformed[("b.jsonl", 2)]
    assert "not an object" in malformed[("b.jsonl", 3)]
    assert "unreadable Parquet" in malformed[("d.parquet", None)]
    assert "not UTF-8" in malformed[("e.csv", None)]
    assert len(malformed) == 6


def test_exact_duplicates_count_once(index: pd.DataFrame) -> None:
    items, verdicts, report = validate([record(), record(_line=2), record(kind="review")], index)
    assert report["counts"]["duplicate"] == 1 and report["counts"]["valid"] == 2
    assert report["problems"]["duplicate"][0]["line"] == 2
    assert len(items) == 2
    assert verdicts["n_records"].tolist() == [2] and verdicts["resolution"].tolist() == ["agreed"]


def _conflict(index: pd.DataFrame, rule: str, verdicts_in_order: list[str]):
    records = [
        record(verdict=v, reviewer=f"mod-{i}", timestamp=f"2026-11-2{i}T10:00:00+01:00", _line=i)
        for i, v in enumerate(verdicts_in_order, start=1)
    ]
    return validate(records, index, conflict_rule=rule)


def test_conflicts_resolve_by_latest_and_are_listed(index: pd.DataFrame) -> None:
    _, verdicts, report = _conflict(index, "latest", ["explicit_nudity", "explicit_nudity", "safe"])
    assert verdicts["verdict"].tolist() == ["safe"]
    assert verdicts["resolution"].tolist() == ["latest"]
    assert report["conflicts"] == 1
    listed = report["conflicts_listed"][0]
    assert listed["chosen"] == "safe" and listed["rule"] == "latest"
    assert [v["verdict"] for v in listed["verdicts"]] == [
        "explicit_nudity",
        "explicit_nudity",
        "safe",
    ]
    assert listed["verdicts"][0]["timestamp"] == "2026-11-21T09:00:00+00:00"


def test_conflicts_resolve_by_majority_and_ties_go_to_the_latest(index: pd.DataFrame) -> None:
    _, verdicts, _ = _conflict(index, "majority", ["explicit_nudity", "explicit_nudity", "safe"])
    assert (verdicts["verdict"].item(), verdicts["resolution"].item()) == (
        "explicit_nudity",
        "majority",
    )
    _, verdicts, _ = _conflict(index, "majority", ["safe", "explicit_nudity"])
    assert (verdicts["verdict"].item(), verdicts["resolution"].item()) == (
        "explicit_nudity",
        "majority_tie_latest",
    )


def test_settings_refuse_unknown_keys_and_rules() -> None:
    with pytest.raises(FeedbackConfigError, match="conflict_rul"):
        FeedbackSettings.parse({"conflict_rul": "latest"})
    with pytest.raises(FeedbackConfigError, match="oldest"):
        FeedbackSettings.parse({"conflict_rule": "oldest"})


def test_the_dataset_reads_feedback_files_and_skips_others(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    (folder / "2026-11").mkdir(parents=True)
    (folder / "2026-11" / "a.csv").write_text(HEADER)
    (folder / "b.JSONL").write_text("")
    (folder / "README.md").write_text("not feedback")
    loaded = FeedbackFilesDataset(str(folder)).load()
    assert sorted(loaded) == ["2026-11/a.csv", "b.JSONL"]
    # Listed with their sizes, read only when asked to (a file over the cap never is).
    assert loaded["2026-11/a.csv"].size == len(HEADER)
    assert loaded["2026-11/a.csv"].read(1000) == HEADER.encode()
    assert FeedbackFilesDataset(str(tmp_path / "missing")).load() == {}


def test_node_validates_against_the_taxonomy_classes(index: pd.DataFrame) -> None:
    line = record(verdict="explicit_sexual_activity")
    files = {
        "x.jsonl": (
            json.dumps({k: v for k, v in line.items() if not k.startswith("_")}) + "\n"
        ).encode()
    }
    _, verdicts, report, metrics = validate_feedback(
        files, index, {"conflict_rule": "latest"}, labelling_params()
    )
    assert verdicts["verdict"].tolist() == ["explicit_sexual_activity"]
    assert report["files"] == ["x.jsonl"] and report["counts"]["valid"] == 1
    assert metrics["records_valid"] == {"value": 1.0, "step": 0}
    assert metrics["images_with_verdicts"]["value"] == 1
