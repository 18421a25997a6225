"""The production (``aws``) environment through Kedro: catalog, credentials, live endpoint.

The endpoint is the local stand-in on 127.0.0.1 (``REKOGNITION_ENDPOINT_URL``); everything else
is the project's real ``conf/aws`` configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from eyecatcher.rekognition.local_endpoint import LocalRekognition, ScriptedBehaviour
from tests.pipelines.labelling.conftest import index_rows

ANSWER = {
    "ModerationLabels": [
        {
            "Confidence": 77.0,
            "Name": "Non-Explicit Nudity",
            "TaxonomyLevel": 2,
            "ParentName": "Non-Explicit Nudity of Intimate parts and Kissing",
        },
        {
            "Confidence": 78.0,
            "Name": "Non-Explicit Nudity of Intimate parts and Kissing",
            "ParentName": "",
            "TaxonomyLevel": 1,
        },
    ],
    "ModerationModelVersion": "7.0",
    "ContentTypes": [],
}


@pytest.mark.slow
def test_aws_env_sends_only_uncached_images_and_a_rerun_sends_none(
    kedro_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kedro.framework.session import KedroSession

    demo = kedro_project / "data/01_raw/demo"
    new = demo / "images" / "new_uploads"
    new.mkdir()
    for i in range(3):
        Image.new("RGB", (120, 90), (200, 30 * i, 90)).save(new / f"upload_{i}.png")
    index = index_rows(sorted(p for p in (demo / "images").rglob("*") if p.is_file()))
    index = index.drop_duplicates("sha256").reset_index(drop=True)
    index.to_parquet(kedro_project / "data/02_intermediate/image_index.parquet")

    # An earlier production run answered 30 of the demo images.
    records = [json.loads(line) for line in (demo / "rekognition_responses.jsonl").open()]
    cache_path = kedro_project / "data/01_raw/rekognition/responses.jsonl"
    cache_path.parent.mkdir(parents=True)
    cache_path.write_text("".join(json.dumps(r) + "\n" for r in records[:30]))
    expected_sent = set(index["sha256"]) - {r["sha256"] for r in records[:30]}
    assert len(expected_sent) == len(index) - 30 == 13

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with LocalRekognition(ScriptedBehaviour(answer=lambda _: ANSWER)) as server:
        monkeypatch.setenv("REKOGNITION_ENDPOINT_URL", server.url)
        for _ in range(2):
            with KedroSession.create(project_path=kedro_project, env="aws") as session:
                session.run(pipeline_names=["labelling"])
        sent = [image for image, _ in server.requests]

    assert sorted(sent) == sorted(expected_sent)  # once each, and nothing on the re-run
    labels = pd.read_parquet(kedro_project / "data/03_primary/image_labels.parquet")
    assert len(labels) == len(index)
    assert set(labels["label_source"]) == {"rekognition"}
    by_source = labels.groupby("answer_source")["sha256"].count().to_dict()
    assert by_source == {"cache:rekognition": 13, "cache:synthetic-demo": 30}
    fresh = labels[labels["sha256"].isin(expected_sent)]
    assert set(fresh["class"]) == {"non_explicit_nudity"}
    assert len(cache_path.read_text().splitlines()) == 30 + 13
