"""The training pipeline as Kedro sees it: candidates from config, namespaces, the catalog, and
ingestion -> labelling -> splitting -> training end to end in a KedroSession."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from kedro.framework.session import KedroSession

from eyecatcher import candidates
from eyecatcher.candidates import (
    CandidateConfigError,
    candidate_config,
    candidate_names,
    configured_candidates,
)
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.pipelines.training.pipeline import create_pipeline


@pytest.fixture
def fresh_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget any config loader captured from an earlier session in this process."""
    monkeypatch.setattr(candidates, "_captured", {})


def test_candidates_come_from_the_run_environment(kedro_project: Path, fresh_candidates) -> None:
    assert configured_candidates(env="test", project_path=kedro_project) == [
        "test_resnet",
        "test_vit",
    ]
    # `local` has no training overrides: the base defaults apply.
    assert configured_candidates(env="local", project_path=kedro_project) == [
        "resnet50",
        "vit_base_patch16_224",
    ]


def test_adding_a_candidate_is_a_config_change_only(
    kedro_project: Path, fresh_candidates, monkeypatch: pytest.MonkeyPatch
) -> None:
    params_file = kedro_project / "conf" / "test" / "parameters_training.yml"
    params = yaml.safe_load(params_file.read_text())
    params["training"]["candidates"].append("convnext_tiny")
    params["training"]["candidate_overrides"] = {"convnext_tiny": {"epochs": 2}}
    params_file.write_text(yaml.safe_dump(params))
    monkeypatch.setenv("KEDRO_ENV", "test")

    pipeline = create_pipeline()

    names = {node.name for node in pipeline.nodes}
    for candidate in ("test_resnet", "test_vit", "convnext_tiny"):
        assert {
            f"{candidate}.train_candidate",
            f"{candidate}.evaluate_candidate",
            f"{candidate}.plot_candidate",
            f"{candidate}.log_candidate_run",
        } <= names
    assert "select_candidate" in names
    assert pipeline.inputs() == {"split_manifest", "feature_cache", "params:training"}
    assert "candidate_selection" in pipeline.outputs()
    # The catalog's dataset factories give the new candidate its files without any edit.
    with KedroSession.create(project_path=kedro_project, env="test") as session:
        catalog = session.load_context().catalog
        dataset = catalog["convnext_tiny.model_bundle"]
        assert type(dataset).__name__ == "ClassifierBundleDataset"
        assert dataset._describe()["filepath"].endswith(
            "data/06_models/convnext_tiny/model_bundle.pt"
        )
        assert "data/08_reporting/convnext_tiny/evaluation.json" in str(
            catalog["convnext_tiny.evaluation"]._describe()["filepath"]
        )
    config = candidate_config(params["training"], "convnext_tiny")
    assert config["architecture"] == "convnext_tiny"
    assert config["epochs"] == 2
    assert candidate_config(params["training"], "test_vit")["epochs"] == 3


def test_candidate_overrides_merge_over_the_shared_settings() -> None:
    training = {
        "candidates": ["small", "b"],
        "candidate_overrides": {"small": {"architecture": "test_vit", "features": {"views": 1}}},
        "epochs": 10,
        "features": {"cache": True, "views": 3},
    }
    small = candidate_config(training, "small")
    assert small["architecture"] == "test_vit"
    assert small["features"] == {"cache": True, "views": 1}
    assert small["epochs"] == 10
    assert candidate_config(training, "b")["architecture"] == "b"
    with pytest.raises(CandidateConfigError, match="Unknown candidate"):
        candidate_config(training, "c")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "at least one"),
        (["vit.base"], "not usable as Kedro namespaces"),
        (["a", "a"], "Duplicate"),
        ({"resnet50": {}}, "must be a list"),
    ],
)
def test_bad_candidate_lists_are_clear_errors(value: object, message: str) -> None:
    with pytest.raises(CandidateConfigError, match=message):
        candidate_names({"candidates": value})


@pytest.mark.slow
def test_ingestion_to_training_end_to_end(kedro_project: Path, fresh_candidates) -> None:
    with KedroSession.create(project_path=kedro_project, env="test") as session:
        session.run(pipeline_names=["ingestion", "labelling", "splitting", "training"])

    reporting = kedro_project / "data" / "08_reporting"
    selection = json.loads((reporting / "candidate_selection.json").read_text())
    assert selection["selected"] in {"test_resnet", "test_vit"}
    assert selection["split"] == "validation" and selection["reason"]
    for candidate in ("test_resnet", "test_vit"):
        bundle = ClassifierBundle.load(
            kedro_project / "data" / "06_models" / candidate / "model_bundle.pt"
        )
        assert bundle.architecture == candidate and bundle.weights_source == "random"
        evaluation = json.loads((reporting / candidate / "evaluation.json").read_text())
        assert evaluation["classes"] == bundle.classes
        assert (reporting / candidate / "confusion_matrix.png").is_file()
        assert (reporting / candidate / "training_curves.png").is_file()
        run = json.loads((reporting / candidate / "mlflow_run.json").read_text())
        child = mlflow.MlflowClient().get_run(run["run_id"])
        assert child.data.tags["mlflow.parentRunId"] == run["parent_run_id"]
        assert child.data.tags["candidate"] == candidate
        assert "test.macro_f1" in child.data.metrics
    # The plots also land in the `kedro run`'s own run, one folder per candidate.
    parent_artifacts = {
        a.path for a in mlflow.MlflowClient().list_artifacts(run["parent_run_id"], "test_vit")
    }
    assert "test_vit/roc_curve.png" in parent_artifacts
    assert any((kedro_project / "data" / "04_feature" / "feature_cache").rglob("*.npy"))


def test_misspelt_candidate_overrides_are_warned_not_silently_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    training = {
        "candidates": ["resnet50", "vit"],
        "candidate_overrides": {
            "resnet_50": {"weights": "/models/resnet50.safetensors"},
            "vit": {"epoch": 20, "architecture": "test_vit"},
        },
        "epochs": 10,
        "weights": "imagenet",
    }
    with caplog.at_level("WARNING", logger="eyecatcher.candidates"):
        assert candidate_config(training, "resnet50")["weights"] == "imagenet"
        assert candidate_config(training, "vit")["epochs"] == 10
    assert "candidate_overrides.resnet_50 is IGNORED" in caplog.text
    assert "did you mean 'resnet50'?" in caplog.text
    assert "candidate_overrides.vit.epoch is not a training setting" in caplog.text
    assert "did you mean 'epochs'?" in caplog.text
    assert "architecture" not in caplog.text
