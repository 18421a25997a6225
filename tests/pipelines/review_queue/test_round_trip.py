"""Round trip through Label Studio's file formats, with the project's catalog and pipelines.

verdict table → ``kedro run --pipelines review_queue`` → tasks (import format) → a completed
project written here in Label Studio's JSON export shape → feedback folder →
``kedro run --pipelines feedback`` → the moderators' labels, unchanged, as feedback verdicts.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from eyecatcher.images import sha256_bytes


def _session(project: Path):
    from kedro.framework.session import KedroSession

    return KedroSession.create(project_path=project, env="test")


def _run(project: Path, pipelines: list[str]) -> None:
    try:
        with _session(project) as session:
            session.run(pipeline_names=pipelines)
    finally:
        while mlflow.active_run():  # kedro-mlflow leaves its run active in this process
            mlflow.end_run()


def _verdicts(paths: list[Path]) -> pd.DataFrame:
    """Batch scoring's columns for a deliberately mixed day: review, allow and block."""
    rows = []
    for i, path in enumerate(paths):
        decision = ["review", "allow", "block", "review"][i % 4]
        cls = {"review": "swimwear_or_underwear", "allow": "safe", "block": "explicit_nudity"}
        rows.append(
            {
                "path": str(path.resolve()),
                "class": cls[decision],
                "probabilities": json.dumps({cls[decision]: 0.8, "non_explicit_nudity": 0.2}),
                "unsafe_score": {"review": 0.6, "allow": 0.1, "block": 0.97}[decision],
                "decision": decision,
                "model_name": "eyecatcher-moderation",
                "model_version": "4",
                "error": None,
                "scored_at": pd.Timestamp("2026-12-06T22:00:00Z"),
            }
        )
    return pd.DataFrame(rows)


def _completed_export(tasks: list[dict], labels: dict[str, str]) -> list[dict]:
    """What Label Studio's "JSON" export of the project looks like once moderators finished."""
    exported = []
    for task_id, task in enumerate(tasks, start=1):
        sha = task["data"]["sha256"]
        annotations = []
        if sha in labels:
            annotations.append(
                {
                    "id": 500 + task_id,
                    "completed_by": {"id": 3, "email": "mod@example.org", "first_name": ""},
                    "result": [
                        {
                            "value": {"choices": [labels[sha]]},
                            "id": f"res{task_id}",
                            "from_name": "verdict",
                            "to_name": "image",
                            "type": "choices",
                            "origin": "manual",
                        }
                    ],
                    "was_cancelled": False,
                    "ground_truth": False,
                    "created_at": "2026-12-06T23:10:00.000000Z",
                    "updated_at": f"2026-12-06T23:{10 + task_id:02d}:30.000000Z",
                    "lead_time": 8.2,
                    "prediction": task["predictions"][0],
                    "result_count": 1,
                    "task": task_id,
                    "project": 7,
                }
            )
        exported.append(
            {
                "id": task_id,
                "annotations": annotations,
                "drafts": [],
                "predictions": task["predictions"],
                "data": task["data"],
                "meta": {},
                "created_at": "2026-12-06T22:30:00.000000Z",
                "updated_at": "2026-12-06T23:30:00.000000Z",
                "inner_id": task_id,
                "total_annotations": len(annotations),
                "cancelled_annotations": 0,
                "project": 7,
            }
        )
    return exported


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_verdicts_to_label_studio_tasks_and_back_as_the_same_labels(kedro_project: Path) -> None:
    _run(kedro_project, ["ingestion"])
    demo = kedro_project / "data/01_raw/demo/images"
    images = sorted(p for p in demo.rglob("*.*") if "_copy" not in p.name)[:16]
    with _session(kedro_project) as session:
        session.load_context().catalog.save("batch_verdicts", _verdicts(images))

    _run(kedro_project, ["review_queue"])
    out = kedro_project / "data/07_model_output/review_queue"
    tasks = json.loads((out / "label_studio_tasks.json").read_text())
    report = json.loads((kedro_project / "data/08_reporting/review_queue_report.json").read_text())
    assert report["review"] == 8 and report["not_indexed"] == 0
    assert report["audit"] == {"allow": 1, "block": 1}  # 2% of 4, rounded up
    assert len(tasks) == 10
    by_path = {str(p.resolve()): sha256_bytes(p.read_bytes()) for p in images}
    for task in tasks:
        assert task["data"]["sha256"] == by_path[task["data"]["path"]]
        assert task["predictions"][0]["result"][0]["type"] == "choices"
    config = ET.fromstring((out / "labelling_config.xml").read_text())
    classes = [c.get("value") for c in config.iter("Choice")]

    # Moderators overrule the model on every task but the last, which they skip.
    labels = {}
    for i, task in enumerate(tasks[:-1]):
        predicted = task["predictions"][0]["result"][0]["value"]["choices"][0]
        labels[task["data"]["sha256"]] = [c for c in classes if c != predicted][i % 2]
    feedback = kedro_project / "data/01_raw/demo/feedback"
    feedback.mkdir(parents=True, exist_ok=True)
    export = _completed_export(tasks, labels)
    (feedback / "project-7-at-2026-12-06-23-30.json").write_text(json.dumps(export))

    _run(kedro_project, ["feedback"])
    verdicts = pd.read_parquet(kedro_project / "data/03_primary/feedback_verdicts.parquet")
    assert verdicts.set_index("sha256")["verdict"].to_dict() == labels
    assert set(verdicts["reviewer"]) == {"label-studio:3"}
    assert set(verdicts["kind"]) == {"review"}
    feedback_report = json.loads(
        (kedro_project / "data/08_reporting/feedback_report.json").read_text()
    )
    assert feedback_report["counts"]["valid"] == len(labels)
    assert sum(feedback_report["counts"].values()) == len(labels)
