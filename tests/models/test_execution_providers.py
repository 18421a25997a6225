"""Device choice: CUDA when present (torch and ONNX Runtime), the CPU otherwise, and a clear
error when CUDA is demanded but absent."""

from __future__ import annotations

import logging

import onnxruntime
import pytest
import torch

from eyecatcher.models.onnx_runtime import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    OnnxClassifier,
    execution_providers,
    export_onnx,
)
from eyecatcher.pipelines.training.backbone import resolve_device


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CPU_PROVIDER])


def test_onnx_runtime_uses_cuda_first_when_its_provider_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER]
    )
    assert execution_providers("auto") == [CUDA_PROVIDER, CPU_PROVIDER]
    assert execution_providers("cuda") == [CUDA_PROVIDER, CPU_PROVIDER]
    assert execution_providers("cpu") == [CPU_PROVIDER]


def test_onnx_runtime_falls_back_to_the_cpu_and_refuses_a_missing_cuda(no_gpu: None) -> None:
    assert execution_providers("auto") == [CPU_PROVIDER]
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        execution_providers("cuda")
    with pytest.raises(ValueError, match="'auto', 'cuda' or 'cpu'"):
        execution_providers("gpu")


def test_classifier_session_runs_on_the_providers_chosen(tmp_path, no_gpu: None) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2)).eval()
    path = tmp_path / "tiny.onnx"
    export_onnx(model, (3, 8, 8), path)
    classifier = OnnxClassifier(path, threads=1)
    assert classifier.session_.get_providers() == [CPU_PROVIDER]
    assert classifier.predict_logits(torch.zeros(2, 3, 8, 8)).shape == (2, 2)


def test_torch_device_auto_is_the_cpu_without_cuda_and_says_so(
    no_gpu: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="eyecatcher.pipelines.training.backbone"):
        assert resolve_device("auto") == torch.device("cpu")
    assert any("running on the CPU" in r.getMessage() for r in caplog.records)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")


def test_torch_device_auto_is_cuda_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU")
    assert resolve_device("auto") == torch.device("cuda")
