"""The fused ViT graph: exported with plain attention, fused, quantized, checked against PyTorch.

Tiny ``test_vit`` at 64 px with random weights, on the demo's images; seconds per test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch

from eyecatcher.images import decode_image
from eyecatcher.models.onnx_runtime import OnnxClassifier, quantize_onnx
from eyecatcher.pipelines.quantization.export import check_against_torch, export_fp32_graph
from eyecatcher.pipelines.quantization.graph_optimization import (
    count_macs,
    has_attention,
    optimize_transformer_graph,
    plain_attention,
)
from eyecatcher.pipelines.quantization.settings import QuantizationSettings
from eyecatcher.preprocessing import data_config_for, images_to_batch

DEMO_IMAGES = Path(__file__).resolve().parents[3] / "data" / "01_raw" / "demo" / "images"

#: int8 logits may differ from fp32 by at most this share of the largest fp32 logit on the
#: demo images (random tiny weights: a smoke bound on a broken graph, not an accuracy claim).
INT8_RELATIVE_TOLERANCE = 0.35

#: The graph options switched on (they are off by default).
FUSED = {"plain_attention": True, "transformer_optimizer": "vit"}


def _vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False, num_classes=5, img_size=64).eval()


def _images(model: torch.nn.Module, n: int = 16) -> np.ndarray:
    paths = sorted(p for p in DEMO_IMAGES.rglob("*.png") if p.is_file())[:n]
    images = [decode_image(p.read_bytes()) for p in paths]
    return images_to_batch(images, data_config_for(model, 64)).numpy()


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_fused_vit_graph_matches_torch_and_its_int8_runs_close_to_it(tmp_path: Path) -> None:
    model = _vit()
    batch = _images(model)
    settings = QuantizationSettings.from_params(FUSED | {"threads": 1})
    fp32 = tmp_path / "fp32.onnx"

    record = export_fp32_graph(model, [3, 64, 64], fp32, settings)

    assert record["plain_attention"] is True and record["transformer_optimizer"] == "vit"
    assert record["fused_operators"]["SkipLayerNormalization"] > 0
    assert {"SkipLayerNormalization", "BiasGelu"} <= _ops(fp32)
    check = check_against_torch(model, fp32, batch, settings)
    assert check["max_abs_logit_diff"] <= check["allowed_diff"]
    assert model.blocks[0].attn.fused_attn is True  # the PyTorch model is left as it was

    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", method="dynamic")
    assert "MatMulInteger" in _ops(int8)
    expected = OnnxClassifier(fp32, threads=1).predict_logits(batch)
    got = OnnxClassifier(int8, threads=1).predict_logits(batch)
    assert got.shape == expected.shape and np.isfinite(got).all()
    assert np.abs(got - expected).max() <= INT8_RELATIVE_TOLERANCE * np.abs(expected).max()


def test_static_int8_of_the_fused_graph_builds_and_runs(tmp_path: Path) -> None:
    model = _vit()
    batch = _images(model, 8)
    fp32 = tmp_path / "fp32.onnx"
    export_fp32_graph(model, [3, 64, 64], fp32, QuantizationSettings.from_params(FUSED))
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", method="static", calibration=batch)
    logits = OnnxClassifier(int8, threads=1).predict_logits(batch)
    assert logits.shape == (8, 5) and np.isfinite(logits).all()


def test_a_cnn_is_exported_as_is(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()
    assert not has_attention(model)
    record = export_fp32_graph(
        model, [3, 64, 64], tmp_path / "fp32.onnx", QuantizationSettings.from_params(FUSED)
    )
    assert record["plain_attention"] is False
    assert record["transformer_optimizer"] is None and record["fused_operators"] == {}


def test_by_default_timm_attention_is_exported_unfused(tmp_path: Path) -> None:
    settings = QuantizationSettings.from_params({})
    fp32 = tmp_path / "fp32.onnx"
    record = export_fp32_graph(_vit(), [3, 64, 64], fp32, settings)
    assert record["plain_attention"] is False and record["transformer_optimizer"] is None
    assert "SkipLayerNormalization" not in _ops(fp32)


def test_plain_attention_is_restored_even_after_an_error() -> None:
    model = _vit()
    with pytest.raises(RuntimeError), plain_attention(model):
        assert all(not block.attn.fused_attn for block in model.blocks)
        raise RuntimeError("export failed")
    assert all(block.attn.fused_attn for block in model.blocks)


def test_unknown_transformer_model_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="transformer model type 'bert'"):
        optimize_transformer_graph(tmp_path / "a.onnx", tmp_path / "b.onnx", model_type="bert")


def test_settings_validate_the_graph_options() -> None:
    with pytest.raises(ValueError, match="transformer_optimizer must be null or one of"):
        QuantizationSettings.from_params({"transformer_optimizer": "gpt2"})
    with pytest.raises(ValueError, match="plain_attention must be true or false"):
        QuantizationSettings.from_params({"plain_attention": "yes"})
    with pytest.raises(ValueError, match="did you mean 'transformer_optimizer'"):
        QuantizationSettings.from_params({"transformer_optimiser": "vit"})
    settings = QuantizationSettings.from_params(
        {"by_architecture": {"test_vit": FUSED}}, "test_vit"
    )
    assert settings.plain_attention is True and settings.transformer_optimizer == "vit"


def test_macs_are_counted_from_the_model() -> None:
    # A Linear over the last axis of a (1, 3, 4, 8) input: 3 * 4 rows of 8 -> 5.
    assert count_macs(torch.nn.Linear(8, 5), (3, 4, 8)) == 3 * 4 * 8 * 5
    # A ViT by hand: patch embedding, per block qkv + projection + MLP + the two attention
    # products (q k^T and attention @ v), and the head on the class token.
    model = _vit()
    patch = model.patch_embed.patch_size[0]
    patches = (64 // patch) ** 2
    tokens, dim = patches + model.num_prefix_tokens, model.embed_dim
    hidden = model.blocks[0].mlp.fc1.out_features
    per_block = tokens * dim * 3 * dim + tokens * dim * dim + 2 * tokens * dim * hidden
    per_block += 2 * tokens * tokens * dim
    expected = patches * 3 * patch * patch * dim + len(model.blocks) * per_block + dim * 5
    assert count_macs(model, (3, 64, 64)) == expected
