"""The review queue: which verdicts become Label Studio tasks, and what a task carries."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
from kedro.framework.project import configure_project

from eyecatcher.pipeline_registry import register_pipelines
from eyecatcher.pipelines.review_queue.nodes import audit_sample, build_review_queue, select_day
from eyecatcher.pipelines.review_queue.settings import ReviewQueueSettings
from tests.pipelines.labelling.conftest import labelling_params

DAY1 = pd.Timestamp("2026-12-06T23:50:00Z")
DAY2 = pd.Timestamp("2026-12-07T08:00:00Z")


def verdict_table(decisions: list[str], scored_at: pd.Timestamp = DAY2, start: int = 0):
    rows = []
    for i, decision in enumerate(decisions, start=start):
        cls = {"allow": "safe", "review": "swimwear_or_underwear", "block": "explicit_nudity"}
        probabilities = {"safe": 0.1, "swimwear_or_underwear": 0.1, "explicit_nudity": 0.1}
        probabilities[cls[decision]] = 0.7
        rows.append(
            {
                "path": f"/imgs/img_{i:04d}.jpg",
                "class": cls[decision],
                "probabilities": json.dumps(probabilities),
                "unsafe_score": {"allow": 0.05, "review": 0.5, "block": 0.95}[decision],
                "decision": decision,
                "model_name": "eyecatcher-moderation",
                "model_version": "3",
                "error": None,
                "scored_at": scored_at,
            }
        )
    return pd.DataFrame(rows)


def index_for(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sha256": [f"{i:064x}" for i in range(len(table))],
            "uri": table["path"].tolist(),
            "all_uris": [[p] for p in table["path"]],
        }
    )


def params(**overrides: object) -> dict:
    return {"day": "latest", "audit_rate": 0.0, "seed": 0, "image_url_prefix": None, **overrides}


def test_every_review_verdict_of_the_latest_day_becomes_a_task_with_a_pre_annotation() -> None:
    table = pd.concat(
        [
            verdict_table(["review", "review"], DAY1, start=100),  # yesterday: not queued
            verdict_table(["allow", "review", "block", "review", "allow"]),
        ],
        ignore_index=True,
    )
    table.loc[len(table)] = {
        **table.iloc[-1].to_dict(),
        "path": "/imgs/broken.jpg",
        "class": None,
        "decision": None,
        "unsafe_score": None,
        "probabilities": None,
        "error": "not_an_image",
    }
    tasks, config, report = build_review_queue(
        table, index_for(table), params(), labelling_params()
    )
    assert [t["data"]["path"] for t in tasks] == ["/imgs/img_0001.jpg", "/imgs/img_0003.jpg"]
    assert report["day"] == "2026-12-07"
    assert report["verdicts"] == 6 and report["errors_skipped"] == 1
    assert report["review"] == 2 and report["audit"] == {"allow": 0, "block": 0}
    task = tasks[0]
    sha = index_for(table).set_index("uri").loc["/imgs/img_0001.jpg", "sha256"]
    assert task["data"]["image"] == "/imgs/img_0001.jpg"
    assert task["data"]["sha256"] == sha
    assert task["data"]["queue"] == "review"
    assert task["data"]["decision"] == "review"
    assert task["data"]["unsafe_score"] == 0.5
    assert task["data"]["probabilities"]["swimwear_or_underwear"] == 0.7
    assert "heatmap" not in task["data"]
    (prediction,) = task["predictions"]
    assert prediction["model_version"] == "eyecatcher-moderation/3"
    assert prediction["score"] == 0.7
    (result,) = prediction["result"]
    assert result["type"] == "choices"
    assert (result["from_name"], result["to_name"]) == ("verdict", "image")
    assert result["value"] == {"choices": ["swimwear_or_underwear"]}
    # The labelling config is XML whose choices are exactly the taxonomy's classes.
    root = ET.fromstring(config)
    choices = root.find("Choices")
    assert choices.get("name") == "verdict" and choices.get("toName") == "image"
    assert choices.get("choice") == "single"
    classes = [c.get("value") for c in choices.findall("Choice")]
    assert classes == report["classes"] and "safe" in classes and "explicit_nudity" in classes
    assert root.find("Image").get("value") == "$image"


def test_the_audit_sample_is_seeded_rounded_up_and_independent_of_row_order() -> None:
    table = verdict_table(["allow"] * 40 + ["block"] * 9 + ["review"])
    index = index_for(table)
    tasks, _, report = build_review_queue(table, index, params(audit_rate=0.1), labelling_params())
    assert report["audit"] == {"allow": 4, "block": 1}  # ceil(4.0), ceil(0.9)
    assert report["tasks"] == 6
    queues = [t["data"]["queue"] for t in tasks]
    assert queues == ["review"] + ["audit"] * 5
    picked = {t["data"]["path"] for t in tasks}

    shuffled = table.sample(frac=1.0, random_state=3).reset_index(drop=True)
    again, _, _ = build_review_queue(shuffled, index, params(audit_rate=0.1), labelling_params())
    assert {t["data"]["path"] for t in again} == picked

    other, _, _ = build_review_queue(
        table, index, params(audit_rate=0.1, seed=1), labelling_params()
    )
    assert {t["data"]["path"] for t in other} != picked

    everything, _, report = build_review_queue(
        table, index, params(audit_rate=1.0), labelling_params()
    )
    assert len(everything) == 50 and report["audit"] == {"allow": 40, "block": 9}


def test_an_image_picked_for_audit_stays_picked_when_the_day_grows() -> None:
    small = verdict_table(["allow"] * 20).assign(_key=lambda f: f["path"])
    big = verdict_table(["allow"] * 200).assign(_key=lambda f: f["path"])
    # ceil(0.05 * 20) = 1 image of 20 and 10 of 200: the first pick is among the ten.
    assert set(audit_sample(small, 0.05, 0)["path"]) <= set(audit_sample(big, 0.05, 0)["path"])


def test_day_selection_by_date_and_all() -> None:
    table = pd.concat(
        [verdict_table(["review"], DAY1), verdict_table(["review"], DAY2, start=1)],
        ignore_index=True,
    )
    assert select_day(table, "2026-12-06")[0]["path"].tolist() == ["/imgs/img_0000.jpg"]
    assert len(select_day(table, "all")[0]) == 2
    with pytest.raises(ValueError, match="needs the verdicts' scored_at"):
        select_day(table.drop(columns="scored_at"), "latest")


def test_heatmaps_local_file_urls_and_unindexed_images() -> None:
    table = verdict_table(["review", "review"])
    table["heatmap_uri"] = ["s3://heat/0.png", None]
    table.loc[1, "path"] = "s3://bucket/incoming/x.jpg"
    index = index_for(table).iloc[:1]  # the s3 image was never ingested
    tasks, config, report = build_review_queue(
        table, index, params(image_url_prefix="/data/local-files/?d="), labelling_params()
    )
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=/imgs/img_0000.jpg"
    assert tasks[0]["data"]["heatmap"] == "s3://heat/0.png"
    assert tasks[1]["data"]["image"] == "s3://bucket/incoming/x.jpg"  # a URI is never prefixed
    assert "heatmap" not in tasks[1]["data"]
    assert tasks[1]["data"]["sha256"] is None
    assert report["not_indexed"] == 1 and report["heatmaps"] == 1
    assert ET.fromstring(config).find("Image[@name='heatmap']").get("value") == "$heatmap"


def test_settings_refuse_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="did you mean 'audit_rate'"):
        ReviewQueueSettings.parse({"audit_rat": 0.1})
    with pytest.raises(ValueError, match="audit_rate must be in"):
        ReviewQueueSettings.parse({"audit_rate": 1.5})
    with pytest.raises(ValueError, match="day must be"):
        ReviewQueueSettings.parse({"day": "yesterday"})
    assert ReviewQueueSettings.parse({}).day == "latest"


def test_the_pipeline_is_found_and_stays_out_of_the_default_run() -> None:
    configure_project("eyecatcher")
    pipelines = register_pipelines()
    assert "build_review_queue" in {n.name for n in pipelines["review_queue"].nodes}
    assert "build_review_queue" not in {n.name for n in pipelines["__default__"].nodes}


def test_an_image_scored_twice_in_the_day_is_one_task_with_its_latest_verdict() -> None:
    table = pd.concat(
        [
            verdict_table(["review"], pd.Timestamp("2026-12-07T01:00Z")),
            verdict_table(["review"], pd.Timestamp("2026-12-07T09:00Z")).assign(model_version="4"),
        ],
        ignore_index=True,
    )
    tasks, _, report = build_review_queue(table, index_for(table), params(), labelling_params())
    assert len(tasks) == 1 and report["repeats_skipped"] == 1
    assert tasks[0]["data"]["model_version"] == "4"
