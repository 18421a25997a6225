"""Backbone features on ONNX Runtime: checked against PyTorch, keyed apart, shared per process."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from eyecatcher.features.cache import BackboneKey, FeatureCache
from eyecatcher.features.compute import compute_features
from eyecatcher.features.runtimes import onnx_graph as feature_graph_module
from eyecatcher.features.runtimes.onnx_graph import (
    FEATURE_TOLERANCE,
    FeatureGraphError,
    export_feature_graph,
    feature_graph,
)
from eyecatcher.features.views import training_views
from eyecatcher.pipelines.training.settings import FeatureSettings
from tests.models.backbones import image_files, small_backbone


@pytest.mark.parametrize("architecture", ["test_resnet", "test_vit"])
def test_the_graph_computes_pytorchs_features_within_the_tolerance(architecture: str) -> None:
    model, key = small_backbone(architecture)
    graph = export_feature_graph(model, key.data_config["input_size"], threads=1)
    batch = torch.rand((3, *key.data_config["input_size"]))
    with torch.inference_mode():
        expected = model.forward_head(model.forward_features(batch), pre_logits=True).numpy()
    got = graph(batch)
    assert got.dtype == np.float32 and got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(got - expected).max()) <= FEATURE_TOLERANCE * scale
    assert graph.check["max_abs_diff"] <= graph.check["allowed_diff"]
    # It travels to Ray actors as its bytes and computes the same numbers there.
    copy = pickle.loads(pickle.dumps(graph))
    np.testing.assert_array_equal(copy(batch), got)


def test_a_backbone_that_cannot_be_exported_says_how_to_go_on(monkeypatch) -> None:
    model, key = small_backbone("test_resnet")

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(feature_graph_module, "export_onnx", broken)
    with pytest.raises(FeatureGraphError, match=r"runtime: torch"):
        export_feature_graph(model, key.data_config["input_size"])


def test_a_graph_that_disagrees_with_pytorch_is_refused() -> None:
    model, key = small_backbone("test_resnet")
    with pytest.raises(FeatureGraphError, match="differ from PyTorch"):
        export_feature_graph(model, key.data_config["input_size"], tolerance=-1.0)


def test_one_export_per_backbone_and_process() -> None:
    model, key = small_backbone("test_resnet")
    size = key.data_config["input_size"]
    first = feature_graph(model, key.fingerprint, size, threads=1)
    assert feature_graph(model, key.fingerprint, size, threads=1) is first
    assert feature_graph(model, "0" * 64, size, threads=1) is not first


def test_runtimes_have_their_own_cache_entries_and_agree(tmp_path: Path) -> None:
    model, torch_key = small_backbone("test_vit")
    ort_key = dataclasses.replace(torch_key, runtime="onnxruntime")
    images = image_files(tmp_path / "images")
    views = training_views(2, {"horizontal_flip": 0.5, "rotation_degrees": 10.0}, seed=3)
    cache = FeatureCache(tmp_path / "cache")
    on_torch, torch_stats = compute_features(model, torch_key, images, views, cache=cache)
    on_ort, ort_stats = compute_features(model, ort_key, images, views, cache=cache)
    # Nothing computed by one runtime is served to the other.
    assert ort_stats.hits == 0 and ort_stats.misses == torch_stats.misses == 2 * len(images)
    assert set(ort_stats.digests.values()).isdisjoint(torch_stats.digests.values())
    assert ort_stats.runtime == "onnxruntime" and ort_stats.graph_check
    assert torch_stats.runtime == "torch" and not torch_stats.graph_check
    for name in on_torch:
        scale = max(1.0, float(np.abs(on_torch[name]).max()))
        np.testing.assert_allclose(on_ort[name], on_torch[name], atol=FEATURE_TOLERANCE * scale)
    keys = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("key.json")]
    assert sorted({k["runtime"] for k in keys}) == ["onnxruntime", "torch"]
    # A warm cache needs no export at all.
    _, again = compute_features(model, ort_key, images, views, cache=cache)
    assert again.misses == 0 and not again.graph_check


def test_the_setting_is_validated() -> None:
    assert FeatureSettings.parse({}).runtime == "onnxruntime"
    assert FeatureSettings.parse({"runtime": "torch"}).runtime == "torch"
    with pytest.raises(ValueError, match="runtime must be one of"):
        FeatureSettings.parse({"runtime": "tensorrt"})
    with pytest.raises(ValueError, match="runtime"):
        BackboneKey("a", "random", 0, "f", {}, runtime="jax")
