"""Dynamic int8 quantization without ONNX Runtime's pre-processing, and its fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch
from onnx import TensorProto, helper, numpy_helper

from eyecatcher.models import onnx_runtime
from eyecatcher.models.onnx_runtime import (
    OnnxClassifier,
    export_onnx,
    quantize_onnx,
    weight_matmuls_left,
)


def _ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("architecture", ["test_vit", "test_resnet"])
def test_dynamic_int8_without_pre_processing_equals_the_pre_processed_one(
    architecture: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    size = {"img_size": 64} if architecture == "test_vit" else {}
    model = timm.create_model(architecture, pretrained=False, num_classes=5, **size).eval()
    fp32 = export_onnx(model, (3, 64, 64), tmp_path / "fp32.onnx")
    direct = quantize_onnx(fp32, tmp_path / "direct.onnx", method="dynamic")
    assert weight_matmuls_left(direct) == 0

    # The pre-processed path, forced by making the direct result look incomplete.
    monkeypatch.setattr(onnx_runtime, "weight_matmuls_left", lambda path: 1)
    prepared = quantize_onnx(fp32, tmp_path / "prepared.onnx", method="dynamic")

    # Pre-processing may tidy other nodes; the quantized ones are the same.
    for op in ("MatMulInteger", "DynamicQuantizeLinear"):
        assert _ops(direct).count(op) == _ops(prepared).count(op) > 0
    images = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    got = OnnxClassifier(direct, threads=1).predict_logits(images)
    expected = OnnxClassifier(prepared, threads=1).predict_logits(images)
    np.testing.assert_array_equal(got, expected)


def _run(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


def _matmul_through_a_transpose(path: Path) -> Path:
    """Y = X @ transpose(W): the weight reaches MatMul through a node, not as an initializer."""
    weight = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
            helper.make_node("MatMul", ["images", "Wt"], ["logits"]),
        ],
        "transposed_weight",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_weight_behind_a_node_is_counted_and_quantized_through_pre_processing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fp32 = _matmul_through_a_transpose(tmp_path / "fp32.onnx")
    assert weight_matmuls_left(fp32) == 1  # constant, though not an initializer

    with caplog.at_level(logging.INFO, logger=onnx_runtime.__name__):
        int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", method="dynamic")

    assert "left in fp32; pre-processing first" in caplog.text

    assert weight_matmuls_left(int8) == 0
    assert "MatMulInteger" in _ops(int8)
    images = np.random.default_rng(2).standard_normal((5, 8)).astype(np.float32)
    expected, got = (_run(path, images) for path in (fp32, int8))
    assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()


def test_an_activation_matmul_is_not_a_weight(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["logits"])],
        "attention_like",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 2]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 2])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    assert weight_matmuls_left(tmp_path / "m.onnx") == 0


def test_a_graph_the_quantizer_refuses_as_exported_is_pre_processed_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import onnxruntime.quantization as ort_quantization

    real = ort_quantization.quantize_dynamic
    sources: list[str] = []

    def picky(source, *args, **kwargs):
        sources.append(Path(source).name)
        if Path(source).name != "prepared.onnx":
            raise ValueError("shape inference needed")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(ort_quantization, "quantize_dynamic", picky)
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()
    fp32 = export_onnx(model, (3, 64, 64), tmp_path / "fp32.onnx")
    with caplog.at_level(logging.INFO, logger=onnx_runtime.__name__):
        int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", method="dynamic")
    assert sources == ["fp32.onnx", "prepared.onnx"]
    assert "shape inference needed; pre-processing first" in caplog.text
    assert weight_matmuls_left(int8) == 0 and "MatMulInteger" in _ops(int8)
