"""What a reviewer sees in MLflow after the default `kedro run`, checked through the client:
the experiment opens on its runs, runs have readable names and dataset inputs, each candidate
run carries a logged model, the registered version has a description."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from eyecatcher.mlflow_review import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, frame_digest, run_name

pytestmark = pytest.mark.slow


def _parent_run(project: Path):
    report = json.loads(
        (project / "data" / "08_reporting" / "registration_report.json").read_text()
    )
    return MlflowClient().get_run(report["run_id"]), report


def test_the_experiment_opens_on_training_runs(demo_run: Path) -> None:
    run, _ = _parent_run(demo_run)
    experiment = MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_runs_have_names_a_person_can_scan(demo_run: Path) -> None:
    run, report = _parent_run(demo_run)
    selection = json.loads(
        (demo_run / "data" / "08_reporting" / "candidate_selection.json").read_text()
    )
    assert run.info.run_name == (
        f"default · test_resnet vs test_vit → {selection['selected']} · registered v1"
    )
    children = MlflowClient().search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["test_resnet", "test_vit"]
    assert report["outcome"] == "registered"


def test_split_manifest_and_labels_are_dataset_inputs_with_their_digests(demo_run: Path) -> None:
    run, _ = _parent_run(demo_run)
    manifest = pd.read_parquet(demo_run / "data" / "05_model_input" / "split_manifest.parquet")
    labels = pd.read_parquet(demo_run / "data" / "03_primary" / "image_labels.parquet")
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"split_manifest", "image_labels"}
    assert inputs["split_manifest"].dataset.digest == frame_digest(manifest)
    assert inputs["image_labels"].dataset.digest == frame_digest(labels)
    assert inputs["split_manifest"].dataset.source.endswith('split_manifest.parquet"}')
    contexts = {d.dataset.name: {t.key: t.value for t in d.tags} for d in inputs.values()}
    assert contexts["split_manifest"]["mlflow.data.context"] == "training"
    # Each candidate run names the data it was trained and evaluated on.
    for candidate in ("test_resnet", "test_vit"):
        record = json.loads(
            (demo_run / "data" / "08_reporting" / candidate / "mlflow_run.json").read_text()
        )
        child = MlflowClient().get_run(record["run_id"])
        digests = {d.dataset.name: d.dataset.digest for d in child.inputs.dataset_inputs}
        assert digests == {"split_manifest": frame_digest(manifest)}


def test_each_candidate_run_carries_a_logged_model(demo_run: Path) -> None:
    run, _ = _parent_run(demo_run)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    by_name = {m.name: m for m in models}
    for candidate in ("test_resnet", "test_vit"):
        record = json.loads(
            (demo_run / "data" / "08_reporting" / candidate / "mlflow_run.json").read_text()
        )
        model = by_name[f"{candidate}-head"]
        assert model.source_run_id == record["run_id"] and model.model_id == record["model_id"]
        assert "test.accuracy" in {m.key for m in model.metrics}


def test_the_registered_version_describes_itself(demo_run: Path) -> None:
    version = MlflowClient().get_model_version("eyecatcher-moderation", "1")
    assert "Model card:" in version.description and "Gate: passed" in version.description


def test_run_names_for_the_other_pipelines() -> None:
    assert run_name("serving", {"smoke_test": True, "served_version": "3"}) == (
        "serving · v3 smoke test passed"
    )
    assert run_name("batch_scoring", {"scored": 120}) == "batch_scoring · 120 files scored"
    assert run_name(None, {"candidates": ["a"], "failed_node": "a.train_candidate"}) == (
        "default · a · FAILED at a.train_candidate"
    )
    assert run_name("registration", {"outcome": "rejected", "version": None}) == (
        "registration · rejected"
    )
