"""An fp32 model served through its ONNX graph once packaging checked it against PyTorch.

Packaged by ``log_served_model`` with the fp32 ONNX export of a tiny ``test_resnet``, as
registration does with quantization's fp32 graph, then loaded with ``mlflow.pyfunc``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.onnx_runtime import OnnxClassifier, export_onnx
from eyecatcher.serving.in_process import load_registered_model
from eyecatcher.serving_model import DecisionThresholds, ServingConfig
from eyecatcher.serving_model.backends import TorchClassifier
from eyecatcher.serving_model.contract import encode_image
from eyecatcher.serving_model.packaging import log_served_model
from eyecatcher.serving_model.runtime_check import DEFAULT_TOLERANCE
from tests.image_factory import good_images
from tests.pipelines.serving.tiny_champion import CLASSES, make_bundle


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A sqlite store with its artefacts in a temporary folder (never the repository's)."""
    root = tmp_path_factory.mktemp("runtime")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.create_experiment(
            "runtime-tests", artifact_location=(root / "artifacts").as_uri()
        )
        mlflow.set_experiment(experiment_id=experiment)
        yield root
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def bundle() -> ClassifierBundle:
    return make_bundle(seed=3)


def fp32_config() -> ServingConfig:
    return ServingConfig(
        model_name="runtime-test",
        model_version="1",
        candidate="tiny_resnet",
        precision="fp32",
        classes=CLASSES,
        safe_class="safe",
        thresholds=DecisionThresholds(review=0.5, block=0.8),
        operating_threshold=0.5,
        max_image_bytes=300_000,
    )


def export(bundle: ClassifierBundle, path: Path) -> Path:
    return export_onnx(bundle.build_model(), bundle.data_config["input_size"], path)


def package(bundle: ClassifierBundle, onnx: Path | None) -> tuple[object, mlflow.entities.Run]:
    with mlflow.start_run() as run:
        info = log_served_model(bundle=bundle, config=fp32_config(), fp32_onnx_path=onnx)
    return load_registered_model(info.model_uri), mlflow.get_run(run.info.run_id)


def request() -> pd.DataFrame:
    images = [good_images(seed=4)["rgb.jpg"], good_images(seed=4)["gray_alpha.png"]]
    return pd.DataFrame({"image": [encode_image(i) for i in images], "explain": [True, False]})


def probabilities(out: pd.DataFrame) -> np.ndarray:
    return np.array([[row[c] for c in CLASSES] for row in out["probabilities"]])


def test_an_fp32_model_serves_through_its_checked_onnx_graph(tracking, bundle, tmp_path) -> None:
    served, run = package(bundle, export(bundle, tmp_path / "fp32.onnx"))
    model = served.unwrap_python_model()
    assert model.config_.runtime == "onnxruntime"
    assert isinstance(model.classifier_, OnnxClassifier)
    check = model.config_.runtime_check
    assert check["passed"] and check["max_abs_prob_diff"] <= DEFAULT_TOLERANCE
    assert run.data.tags["served_runtime"] == "onnxruntime"
    assert run.data.tags["served_runtime_check"] == "passed"
    # The same verdicts as the PyTorch-served model, within the tolerance.
    torch_served, _ = package(bundle, None)
    assert isinstance(torch_served.unwrap_python_model().classifier_, TorchClassifier)
    out, expected = served.predict(request()), torch_served.predict(request())
    np.testing.assert_allclose(probabilities(out), probabilities(expected), atol=DEFAULT_TOLERANCE)
    assert list(out["class"]) == list(expected["class"])
    # Heatmaps still come from PyTorch, and the row says so.
    assert out["heatmap_png"].iloc[0] is not None
    assert "fp32 ONNX model was made from" in out["heatmap_info"].iloc[0]
    requirements = Path(
        mlflow.artifacts.download_artifacts(f"models:/{served.metadata.model_id}")
    ).joinpath("requirements.txt")
    assert any(line.startswith("onnxruntime==") for line in requirements.read_text().split())


def test_a_graph_that_disagrees_with_pytorch_serves_pytorch_said_and_recorded(
    tracking, bundle, tmp_path, caplog
) -> None:
    other = export(make_bundle(seed=11), tmp_path / "other.onnx")  # not this bundle's graph
    with caplog.at_level(logging.WARNING, logger="eyecatcher.serving_model.runtime_check"):
        served, run = package(bundle, other)
    model = served.unwrap_python_model()
    assert model.config_.runtime == "torch"
    assert isinstance(model.classifier_, TorchClassifier)
    check = model.config_.runtime_check
    assert not check["passed"] and check["max_abs_prob_diff"] > DEFAULT_TOLERANCE
    assert "exceeds the tolerance" in check["detail"]
    assert run.data.tags["served_runtime"] == "torch"
    assert run.data.tags["served_runtime_check"] == "failed"
    recorded = mlflow.artifacts.load_dict(
        f"{run.info.artifact_uri}/served_model_runtime_check.json"
    )
    assert recorded["passed"] is False
    assert any("serving the fp32 PyTorch model" in r.getMessage() for r in caplog.records)


def test_a_missing_or_broken_graph_serves_pytorch(tracking, bundle, tmp_path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")
    for path, detail in [(tmp_path / "absent.onnx", "does not exist"), (broken, "could not")]:
        served, run = package(bundle, path)
        check = served.unwrap_python_model().config_.runtime_check
        assert detail in check["detail"]
        assert run.data.tags["served_runtime"] == "torch"


def test_a_config_without_runtime_uses_its_precisions_own() -> None:
    payload = fp32_config().to_dict()
    del payload["runtime"], payload["runtime_check"]
    assert ServingConfig.from_dict(payload).runtime == "torch"
    assert ServingConfig.from_dict({**payload, "precision": "int8"}).runtime == "onnxruntime"
    with pytest.raises(ValueError, match="int8 model is served by onnxruntime only"):
        ServingConfig.from_dict({**payload, "precision": "int8", "runtime": "torch"})
    with pytest.raises(ValueError, match="unknown runtime"):
        ServingConfig.from_dict({**payload, "runtime": "tensorrt"})
