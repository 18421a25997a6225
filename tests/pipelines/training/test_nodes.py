"""Training nodes on demo images with timm's tiny test models: cache, loops, evaluation, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from eyecatcher.datasets.classifier_bundle_dataset import ClassifierBundleDataset
from eyecatcher.features.cache import FeatureCache
from eyecatcher.features.views import ImageIntegrityError, read_image
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.pipelines.training.nodes import (
    ManifestError,
    check_manifest,
    evaluate_candidate,
    explain_candidate,
    log_candidate_run,
    plot_candidate,
    train_candidate,
)
from tests.pipelines.training.conftest import tiny_training


def _train(manifest: pd.DataFrame, cache_dir: Path, candidate: str = "test_vit", **overrides):
    return train_candidate(
        manifest, FeatureCache(cache_dir), tiny_training(**overrides), candidate=candidate
    )


def test_cache_hits_on_the_second_run_and_misses_when_the_transform_changes(
    small_manifest: pd.DataFrame, tmp_path: Path
) -> None:
    demo_manifest = small_manifest
    n_train = int((demo_manifest["split"] == "train").sum())
    n_val = int((demo_manifest["split"] == "validation").sum())
    cache = tmp_path / "cache"

    first_bundle, first = _train(demo_manifest, cache)
    assert (first["cache"]["hits"], first["cache"]["misses"]) == (0, 2 * n_train + n_val)
    files = sorted(cache.rglob("*.npy"))
    assert len(files) == 2 * n_train + n_val

    second_bundle, second = _train(demo_manifest, cache)
    assert (second["cache"]["hits"], second["cache"]["misses"]) == (2 * n_train + n_val, 0)
    assert second["cache"]["key_digests"] == first["cache"]["key_digests"]
    # Same seeds, same cached features: the same head, bit for bit.
    for name, tensor in first_bundle.state_dict.items():
        assert torch.equal(tensor, second_bundle.state_dict[name]), name

    # Another rotation changes the augmented view only: the clean view is still reused.
    rotated = tiny_training()["augmentation"] | {"rotation_degrees": 30.0}
    _, third = _train(demo_manifest, cache, augmentation=rotated)
    assert (third["cache"]["hits"], third["cache"]["misses"]) == (n_train + n_val, n_train)

    # Another input size changes every input: nothing is reused.
    _, fourth = _train(demo_manifest, cache, image_size=48)
    assert (fourth["cache"]["hits"], fourth["cache"]["misses"]) == (0, 2 * n_train + n_val)

    # Another random initialisation is another backbone.
    _, fifth = _train(demo_manifest, cache, weights_seed=1)
    assert fifth["cache"]["hits"] == 0
    assert fifth["cache"]["backbone_fingerprint"] != first["cache"]["backbone_fingerprint"]


def test_cached_and_reference_loops_reach_comparable_accuracy(
    demo_manifest: pd.DataFrame, tmp_path: Path
) -> None:
    settings = {"epochs": 6, "features": tiny_training()["features"] | {"views": 3}}
    cached_bundle, cached = _train(demo_manifest, tmp_path / "cache", **settings)
    reference_settings = {**settings, "features": settings["features"] | {"cache": False}}
    reference_bundle, reference = _train(demo_manifest, tmp_path / "none", **reference_settings)

    assert cached["mode"] == "cached_features" and reference["mode"] == "reference"
    assert not (tmp_path / "none").exists()
    training = tiny_training(**reference_settings)
    scores = {}
    for name, bundle in (("cached", cached_bundle), ("reference", reference_bundle)):
        evaluation, _ = evaluate_candidate(
            bundle, demo_manifest, FeatureCache(tmp_path / "eval"), training, candidate="test_vit"
        )
        scores[name] = (evaluation["validation"]["accuracy"] + evaluation["test"]["accuracy"]) / 2
    # The demo classes are separable even with random features; both loops learn them, and
    # neither is more than a few images (of 20) behind the other.
    assert min(scores.values()) >= 0.7, scores
    assert abs(scores["cached"] - scores["reference"]) <= 0.2, scores
    assert cached["history"][-1]["val_accuracy"] >= 0.7
    assert reference["history"][-1]["val_accuracy"] >= 0.7


def test_evaluation_record_is_complete_standard_json(
    demo_manifest: pd.DataFrame, tmp_path: Path
) -> None:
    bundle, report = _train(demo_manifest, tmp_path / "cache", candidate="test_resnet")
    evaluation, predictions = evaluate_candidate(
        bundle,
        demo_manifest,
        FeatureCache(tmp_path / "cache"),
        tiny_training(),
        candidate="test_resnet",
    )
    json.dumps(evaluation, allow_nan=False)  # NaN/inf would not be standard JSON
    json.dumps(report, allow_nan=False)
    classes = sorted(demo_manifest["class"].unique())
    assert evaluation["classes"] == classes
    for split, n in (("validation", 10), ("test", 10)):
        record = evaluation[split]
        assert record["n"] == n
        assert set(record["per_class"]) == set(classes)
        assert np.sum(record["confusion_matrix"]) == n
        assert 0.0 <= record["accuracy"] <= 1.0
        assert record["roc_auc"] is not None and record["pr_auc"] is not None
    threshold = evaluation["operating_threshold"]
    assert threshold["calibrated_on"] == "validation"
    assert threshold["target_fpr"] == 0.01
    # 2 safe validation images cannot resolve a 1% FPR: said, not hidden.
    assert threshold["n_safe"] == 2 and "only 2 safe images" in threshold["warning"]
    assert threshold["fpr"] == 0.0
    assert threshold["test_recall"] == evaluation["test"]["recall_at_threshold"]

    # One prediction row per test image, consistent with the test metrics.
    test_rows = demo_manifest[demo_manifest["split"] == "test"]
    assert sorted(predictions["sha256"]) == sorted(test_rows["sha256"])
    assert predictions["correct"].mean() == pytest.approx(evaluation["test"]["accuracy"])
    assert predictions["flagged"].mean() == pytest.approx(
        (predictions["unsafe_score"] > threshold["threshold"]).mean()
    )
    assert set(json.loads(predictions["probabilities"].iloc[0])) == set(classes)

    figures = plot_candidate(evaluation, report)
    assert len(figures) == 4 and all(isinstance(f, Figure) for f in figures)
    assert report["random_weights"] is True and report["weights_source"] == "random"
    assert report["n_trainable_parameters"] < report["n_parameters"]


def test_bundle_round_trip_rebuilds_the_same_model(
    small_manifest: pd.DataFrame, tmp_path: Path
) -> None:
    bundle, _ = _train(small_manifest, tmp_path / "cache", epochs=1)
    dataset = ClassifierBundleDataset(str(tmp_path / "test_vit" / "model_bundle.pt"))
    dataset.save(bundle)
    loaded = dataset.load()
    assert isinstance(loaded, ClassifierBundle)
    assert loaded.model_kwargs == {"img_size": 64}  # ViT built for 64 px, not its default 160
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(bundle.build_model()(x), loaded.build_model()(x))


def test_bad_manifests_are_clear_errors(demo_manifest: pd.DataFrame) -> None:
    with pytest.raises(ManifestError, match="no \\['test'\\] rows"):
        check_manifest(demo_manifest[demo_manifest["split"] != "test"], "safe")
    with pytest.raises(ManifestError, match="safe_class 'benign'"):
        check_manifest(demo_manifest, "benign")
    with pytest.raises(ManifestError, match="appear more than once"):
        check_manifest(pd.concat([demo_manifest, demo_manifest.head(1)]), "safe")
    with pytest.raises(ManifestError, match="lacks columns \\['split'\\]"):
        check_manifest(demo_manifest.drop(columns="split"), "safe")


def test_an_image_changed_since_the_manifest_is_refused(demo_manifest: pd.DataFrame) -> None:
    row = demo_manifest.iloc[0]
    assert read_image(row["uri"], row["sha256"]).mode == "RGB"
    with pytest.raises(ImageIntegrityError, match="changed since the split manifest"):
        read_image(row["uri"], "0" * 64)


def test_candidate_run_is_a_child_run_with_metrics_plots_and_head(
    small_manifest: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo_manifest = small_manifest
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("training-test")
    training = tiny_training(epochs=2)
    bundle, report = train_candidate(
        demo_manifest, FeatureCache(tmp_path / "cache"), training, candidate="test_resnet"
    )
    evaluation, predictions = evaluate_candidate(
        bundle, demo_manifest, FeatureCache(tmp_path / "cache"), training, candidate="test_resnet"
    )
    overlays, index = explain_candidate(
        bundle, predictions, evaluation, training, candidate="test_resnet"
    )
    assert len(overlays) >= 3 and len(index["examples"]) == len(overlays)
    assert {e["reason"] for e in index["examples"]} <= {
        "confident_error",
        "near_threshold",
        "correct",
    }
    assert all(image.size == (2 * 256, 256 + 3 * 14 + 4) for image in overlays.values())
    with mlflow.start_run(run_name="kedro run") as parent:
        info = log_candidate_run(
            bundle,
            report,
            evaluation,
            explanations=overlays,
            explanations_index=index,
            training=training,
            candidate="test_resnet",
        )
    assert info["parent_run_id"] == parent.info.run_id

    client = mlflow.MlflowClient()
    child = client.get_run(info["run_id"])
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.tags["random_weights"] == "true"
    assert "RANDOM WEIGHTS" in child.data.tags["warning"]
    assert child.data.tags["weights_source"] == "random"
    assert "safe images to calibrate on" in child.data.tags["operating_threshold_warning"]
    assert child.data.params["architecture"] == "test_resnet"
    assert child.data.metrics["test.accuracy"] == pytest.approx(evaluation["test"]["accuracy"])
    assert "model_size_mb" in child.data.metrics and "time_s.features" in child.data.metrics
    history = client.get_metric_history(info["run_id"], "val_accuracy")
    assert [m.step for m in history] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(info["run_id"], "plots")}
    assert artifacts == {
        f"plots/{n}.png" for n in ("confusion_matrix", "roc_curve", "pr_curve", "training_curves")
    }
    model_files = {a.path for a in client.list_artifacts(info["run_id"], "model")}
    assert model_files == {"model/head_state_dict.pt", "model/bundle_info.json"}
    explanations = {a.path for a in client.list_artifacts(info["run_id"], "explanations")}
    assert explanations == {f"explanations/{name}.png" for name in overlays} | {
        "explanations/index.json"
    }
    # The head is the run's MLflow model: model views list it, with the test metrics linked.
    logged = mlflow.get_logged_model(info["model_id"])
    assert logged.source_run_id == info["run_id"] and logged.name == "test_resnet-head"
    assert {m.key for m in logged.metrics} >= {"test.accuracy", "validation.macro_f1"}
    head = mlflow.pytorch.load_model(f"models:/{info['model_id']}")
    n_features = bundle.build_model().num_features
    assert head(torch.zeros(2, n_features)).shape == (2, len(bundle.classes))
    # Its requirements are stated (pinned to what is installed), not inferred in a subprocess.
    requirements = Path(
        mlflow.pyfunc.get_model_dependencies(f"models:/{info['model_id']}")
    ).read_text()
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements.split()
    assert {"cloudpickle", "numpy", "pandas", "mlflow"} <= {
        line.split("==")[0] for line in requirements.split()
    }
