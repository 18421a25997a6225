"""Backbone features in bfloat16: opt-in, checked against fp32, keyed apart, refused if slow."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from eyecatcher.features.cache import FeatureCache
from eyecatcher.features.compute import compute_features
from eyecatcher.features.runtimes import bf16 as bf16_module
from eyecatcher.features.runtimes.bf16 import (
    BF16_RUNTIME,
    BF16_TOLERANCE,
    Bf16Unavailable,
    bf16_features,
    checked_bf16_features,
    native_bf16,
)
from eyecatcher.features.views import training_views
from eyecatcher.pipelines.training.settings import FeatureSettings
from tests.models.backbones import image_files, small_backbone


@pytest.fixture
def bf16_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the bfloat16 path on any CPU: emulated bfloat16 computes the same, only slower."""
    monkeypatch.setattr(bf16_module, "native_bf16", lambda device: True)


@pytest.mark.parametrize("architecture", ["test_resnet", "test_vit"])
def test_bf16_features_are_close_to_float32_and_say_so(
    bf16_here: None, architecture: str, caplog: pytest.LogCaptureFixture
) -> None:
    model, key = small_backbone(architecture)
    with caplog.at_level(logging.WARNING, logger=bf16_module.__name__):
        function = bf16_features(model, key.data_config["input_size"])
    assert "bfloat16" in caplog.text  # said on the console
    batch = torch.rand((3, *key.data_config["input_size"]))
    with torch.inference_mode():
        expected = model.forward_head(model.forward_features(batch), pre_logits=True).numpy()
    got = function(batch)
    assert got.dtype == np.float32 and got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(got - expected).max()) <= BF16_TOLERANCE * scale
    assert 0 < function.check["relative_l2"] < BF16_TOLERANCE
    # Ray ships it to workers by pickling; it computes the same numbers there.
    copy = pickle.loads(pickle.dumps(function)).to_cpu()
    np.testing.assert_array_equal(copy(batch), got)


def test_without_native_bf16_it_is_refused_with_the_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, key = small_backbone("test_resnet")
    monkeypatch.setattr(bf16_module, "native_bf16", lambda device: False)
    with pytest.raises(Bf16Unavailable, match="onnxruntime or torch"):
        bf16_features(model, key.data_config["input_size"])


def test_native_bf16_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bf16_module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(bf16_module, "_cpu_flags", lambda: {"avx2", "avx512f"})
    assert not native_bf16(torch.device("cpu"))
    monkeypatch.setattr(bf16_module, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert native_bf16(torch.device("cpu"))
    monkeypatch.setattr(bf16_module, "_cpu_flags", lambda: {"amx_bf16"})
    assert native_bf16(torch.device("cpu"))


def test_a_kernel_that_breaks_the_features_is_refused(bf16_here: None) -> None:
    model, key = small_backbone("test_resnet")
    with pytest.raises(RuntimeError, match="differ from float32"):
        bf16_features(model, key.data_config["input_size"], tolerance=-1.0)


def test_bf16_vectors_have_their_own_cache_entries(bf16_here: None, tmp_path: Path) -> None:
    model, fp32_key = small_backbone("test_vit")
    bf16_key = dataclasses.replace(fp32_key, runtime=BF16_RUNTIME)
    images = image_files(tmp_path / "images")
    views = training_views(2, {"horizontal_flip": 0.5, "rotation_degrees": 10.0}, seed=3)
    cache = FeatureCache(tmp_path / "cache")
    on_fp32, fp32_stats = compute_features(model, fp32_key, images, views, cache=cache)
    on_bf16, bf16_stats = compute_features(model, bf16_key, images, views, cache=cache)
    assert bf16_stats.hits == 0 and bf16_stats.misses == fp32_stats.misses == 2 * len(images)
    assert set(bf16_stats.digests.values()).isdisjoint(fp32_stats.digests.values())
    assert bf16_stats.runtime == BF16_RUNTIME and bf16_stats.graph_check["relative_l2"] > 0
    for name in on_fp32:
        scale = max(1.0, float(np.abs(on_fp32[name]).max()))
        np.testing.assert_allclose(on_bf16[name], on_fp32[name], atol=BF16_TOLERANCE * scale)
    keys = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("key.json")]
    assert sorted({k["runtime"] for k in keys}) == ["torch", BF16_RUNTIME]
    # Warm: read back, nothing computed, no check run.
    _, again = compute_features(model, bf16_key, images, views, cache=cache)
    assert again.misses == 0 and not again.graph_check


def test_the_setting_accepts_it() -> None:
    assert FeatureSettings.parse({"runtime": BF16_RUNTIME}).runtime == BF16_RUNTIME


def test_one_check_and_one_warning_per_backbone_and_process(
    bf16_here: None, caplog: pytest.LogCaptureFixture
) -> None:
    model, key = small_backbone("test_resnet")
    twin, _ = small_backbone("test_resnet")  # same seed: same tensors, same fingerprint, new object
    size = key.data_config["input_size"]
    with caplog.at_level(logging.WARNING, logger=bf16_module.__name__):
        first = checked_bf16_features(model, key.fingerprint, size)
        assert checked_bf16_features(model, key.fingerprint, size) is first
        for_twin = checked_bf16_features(twin, key.fingerprint, size)
    assert caplog.text.count("Backbone features in bfloat16") == 1
    assert for_twin.model is twin and for_twin.check == first.check
