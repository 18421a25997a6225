"""Label Studio JSON exports as feedback: every submitted annotation is one moderator verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from eyecatcher.datasets.feedback_files_dataset import FeedbackFilesDataset
from eyecatcher.label_studio import export_records
from eyecatcher.pipelines.feedback.files import parse_feedback_files
from eyecatcher.pipelines.feedback.nodes import validate_feedback
from tests.pipelines.labelling.conftest import labelling_params

SHA = {name: name * 64 for name in "abc"}


def annotation(choice: str | list[str], user: object = 7, **fields: object) -> dict:
    """One annotation as Label Studio's JSON export writes it."""
    choices = choice if isinstance(choice, list) else [choice]
    return {
        "id": 1001,
        "completed_by": user,
        "result": [
            {
                "value": {"choices": choices},
                "id": "aB3xY9",
                "from_name": "verdict",
                "to_name": "image",
                "type": "choices",
                "origin": "manual",
            }
        ],
        "was_cancelled": False,
        "ground_truth": False,
        "created_at": "2026-12-06T09:15:02.123456Z",
        "updated_at": "2026-12-06T09:16:40.654321Z",
        "lead_time": 12.5,
        "task": 1,
        **fields,
    }


def task(sha: str | None, *annotations: dict, task_id: int = 1, **data: object) -> dict:
    return {
        "id": task_id,
        "data": {"image": f"/data/local-files/?d=imgs/{task_id}.jpg", "sha256": sha, **data},
        "annotations": list(annotations),
        "predictions": [],
        "project": 3,
        "created_at": "2026-12-06T08:00:00.000000Z",
        "updated_at": "2026-12-06T09:16:40.654321Z",
    }


def test_each_submitted_annotation_is_one_review_record() -> None:
    export = [
        task(SHA["a"], annotation("safe"), task_id=1, queue="review"),
        task(
            SHA["b"],
            annotation("explicit_nudity", user={"id": 9, "email": "lead@example.org"}),
            annotation("safe", user=7, updated_at=None),
            task_id=2,
            queue="audit",
        ),
    ]
    records = export_records("ls.json", json.dumps(export).encode())
    assert [(r["image"], r["verdict"], r["reviewer"]) for r in records] == [
        (SHA["a"], "safe", "label-studio:7"),
        (SHA["b"], "explicit_nudity", "label-studio:9"),
        (SHA["b"], "safe", "label-studio:7"),
    ]
    assert {r["kind"] for r in records} == {"review"}
    assert records[0]["timestamp"] == "2026-12-06T09:16:40.654321Z"  # updated_at first
    assert records[2]["timestamp"] == "2026-12-06T09:15:02.123456Z"  # then created_at
    assert records[1]["note"] == "label studio task 2, annotation 1001, queued for audit"
    assert [r["_line"] for r in records] == [1, 2, 2]  # the task's position in the export
    assert {r["_file"] for r in records} == {"ls.json"}


def test_skipped_and_unlabelled_tasks_are_not_decisions_and_bad_ones_are_malformed() -> None:
    export = [
        task(SHA["a"], annotation("safe", was_cancelled=True), task_id=1),  # skipped
        task(SHA["b"], task_id=2),  # nobody labelled it yet
        task(SHA["c"], annotation(["safe", "explicit_nudity"]), task_id=3),
        task(SHA["c"], annotation("safe", result=[]), task_id=4),
        {"id": 5, "annotations": []},
        task(None, annotation("safe"), task_id=6, path="/imgs/6.jpg"),
    ]
    records = export_records("ls.json", json.dumps(export).encode())
    problems = [(r["_line"], r.get("_problem")) for r in records if "_problem" in r]
    assert [line for line, _ in problems] == [3, 4, 5]
    assert "exactly one choice" in problems[0][1]
    assert "0 'verdict' choices results" in problems[1][1]
    assert "without a 'data' object" in problems[2][1]
    # No sha256 in the task: the scored path identifies the image.
    assert records[-1]["image"] == "/imgs/6.jpg"
    assert export_records("x.json", b'{"data": {}}')[0]["_problem"].startswith(
        "a JSON dict, not a Label Studio JSON export"
    )
    assert "not JSON" in export_records("x.json", b"[{")[0]["_problem"]


def test_an_export_in_the_feedback_folder_is_validated_like_any_feedback(tmp_path: Path) -> None:
    index = pd.DataFrame(
        {
            "sha256": list(SHA.values()),
            "uri": [f"/imgs/{n}.jpg" for n in SHA],
            "all_uris": [[f"/imgs/{n}.jpg"] for n in SHA],
        }
    )
    export = [
        task(SHA["a"], annotation("safe"), task_id=1),
        task(SHA["b"], annotation("explicit_nudity"), task_id=2),
        task(SHA["c"], annotation("not_a_class"), task_id=3),
        task("f" * 64, annotation("safe"), task_id=4),  # never indexed
    ]
    (tmp_path / "project-3-at-2026-12-07.json").write_text(json.dumps(export))
    (tmp_path / "older.csv").write_text(
        "image,verdict,reviewer,timestamp,kind\n"
        f"{SHA['a']},explicit_nudity,mod-1,2026-12-01T10:00Z,appeal\n"
    )
    files = FeedbackFilesDataset(path=str(tmp_path)).load()
    assert set(files) == {"project-3-at-2026-12-07.json", "older.csv"}
    assert len(parse_feedback_files(files)) == 5
    items, verdicts, report, _ = validate_feedback(
        files, index, {"conflict_rule": "latest"}, labelling_params()
    )
    assert report["counts"]["valid"] == 3
    assert report["counts"]["unknown_class"] == 1 and report["counts"]["unknown_image"] == 1
    # The Label Studio verdict is newer than the CSV appeal: it wins under `latest`.
    assert verdicts.set_index("sha256")["verdict"].to_dict() == {
        SHA["a"]: "safe",
        SHA["b"]: "explicit_nudity",
    }
    assert report["conflicts"] == 1
    assert str(items["timestamp"].dt.tz) == "UTC"
