"""The light third candidate runs through training and quantization like the other two.

``test_efficientnet`` is timm's tiny counterpart of the light production candidate (timm has no
``test_mobilenetv3``; EfficientNet and MobileNetV3 share the same depthwise-separable blocks with
squeeze-and-excitation, so the same graph operators reach the quantizer). Offline, random
weights, 64 px.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eyecatcher.features.cache import FeatureCache
from eyecatcher.images import decode_image
from eyecatcher.models.onnx_runtime import OnnxClassifier
from eyecatcher.pipelines.quantization.nodes import benchmark_candidate, build_onnx_models
from eyecatcher.pipelines.training.nodes import train_candidate
from eyecatcher.preprocessing import images_to_batch
from tests.conftest import copy_demo
from tests.pipelines.training.conftest import manifest_for, tiny_training

LIGHT = "test_efficientnet"
PARAMS = {
    "methods": ["static", "dynamic"],
    "calibration_size": 6,
    "threads": 1,
    "eval_batch_size": 8,
    "latency": {"warmup": 1, "iterations": 3},
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    folder = copy_demo(tmp_path_factory.mktemp("light_demo"), per_class=6)
    return manifest_for(folder, train=4, validation=1, test=1)


def test_light_candidate_trains_on_cached_features_and_gets_int8_models(
    manifest: pd.DataFrame, tmp_path: Path
) -> None:
    training = tiny_training(candidates=["test_resnet", "test_vit", LIGHT], epochs=2)
    cache = FeatureCache(tmp_path / "cache")

    bundle, report = train_candidate(manifest, cache, training, candidate=LIGHT)
    assert bundle.architecture == LIGHT and bundle.classes
    assert report["cache"]["misses"] > 0 and any((tmp_path / "cache").rglob("*.npy"))

    models, attempt = build_onnx_models(bundle, manifest, PARAMS)
    assert attempt["failure"] is None
    assert set(models) == {"fp32", "int8_static", "int8_dynamic"}
    # A CNN: no attention to simplify, nothing for the transformer optimizer.
    assert attempt["export"]["transformer_optimizer"] is None
    assert attempt["export"]["max_abs_logit_diff"] <= attempt["export"]["allowed_diff"]

    result = benchmark_candidate(models, bundle, manifest, attempt, PARAMS)
    assert result["precision"] in {"int8", "fp32"} and result["reason"]
    assert set(result["int8"]) == {"static", "dynamic"}
    for measured in (result["fp32"], *result["int8"].values()):
        assert measured["latency_ms_p50"] > 0 and 0.0 <= measured["accuracy"] <= 1.0

    # The served int8 graph takes the same preprocessed batch as training's evaluation.
    rows = manifest[manifest["split"] == "test"]
    images = [decode_image(Path(uri).read_bytes()) for uri in rows["uri"]]
    batch = images_to_batch(images, bundle.data_config).numpy()
    proba = OnnxClassifier(models["int8_static"], threads=1).predict_proba(batch)
    assert proba.shape == (len(rows), len(bundle.classes))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
