"""OnnxModelsDataset, local and on S3: models saved, stale variants removed, loaded back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eyecatcher import storage
from eyecatcher.datasets.onnx_models_dataset import OnnxModelsDataset
from eyecatcher.models.onnx_runtime import OnnxClassifier, export_onnx


def test_onnx_models_dataset_removes_stale_variants(tmp_path) -> None:
    dataset = OnnxModelsDataset(path=str(tmp_path / "onnx"))
    assert dataset.load() == {}
    dataset.save({"fp32": b"a", "int8_static": b"b"})
    assert set(dataset.load()) == {"fp32", "int8_static"}
    dataset.save({"fp32": b"c"})  # this time quantization failed
    loaded = dataset.load()
    assert list(loaded) == ["fp32"]
    assert Path(loaded["fp32"]).read_bytes() == b"c"


def test_onnx_models_on_s3(s3_bucket: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    ).eval()
    exported = tmp_path / "fp32.onnx"
    export_onnx(model, [3, 32, 32], exported)
    dataset = OnnxModelsDataset(path=f"{s3_bucket}/06_models/cnn/onnx")
    assert dataset.load() == {} and not dataset.exists()

    dataset.save({"fp32": exported.read_bytes(), "int8_static": b"stale"})
    # A nested file is not one of this folder's models.
    storage.write_atomic(f"{s3_bucket}/06_models/cnn/onnx/old/fp32.onnx", b"elsewhere")
    assert set(dataset.load()) == {"fp32", "int8_static"}
    dataset.save({"fp32": exported.read_bytes()})  # this time quantization failed
    loaded = dataset.load()
    assert loaded == {"fp32": f"{s3_bucket}/06_models/cnn/onnx/fp32.onnx"}

    batch = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    logits = OnnxClassifier(loaded["fp32"], threads=1).predict_logits(batch)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_invalid_variant_names_are_refused_before_anything_is_written(s3_bucket: str) -> None:
    from kedro.io import DatasetError

    dataset = OnnxModelsDataset(path=f"{s3_bucket}/onnx")
    with pytest.raises(DatasetError, match="Invalid ONNX variant"):
        dataset.save({"fp32": b"model", "../escape": b"x"})
    assert not storage.exists(f"{s3_bucket}/onnx/fp32.onnx")
