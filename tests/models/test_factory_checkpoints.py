"""Local checkpoints load without unpickling: safetensors or tensors-only files, never code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from eyecatcher.models.factory import WeightsUnavailableError, create_classifier, read_checkpoint


def _backbone(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model, _ = create_classifier("test_resnet", 1000, "random")
    return model.state_dict()


def _assert_backbone_loaded(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    classifier = model.pretrained_cfg["classifier"]
    for name, tensor in expected.items():
        if name.startswith(classifier + "."):
            continue  # a fresh head for this project's classes
        torch.testing.assert_close(loaded[name], tensor)
    assert loaded[f"{classifier}.weight"].shape[0] == 3


def test_a_safetensors_checkpoint_loads_with_a_new_head(tmp_path: Path) -> None:
    expected = _backbone()
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in expected.items()}, str(path))
    model, source = create_classifier("test_resnet", 3, str(path))
    assert source == f"checkpoint:{path}"
    _assert_backbone_loaded(model, expected)
    assert "state_dict" not in model.pretrained_cfg  # the weights are not kept twice


def test_a_tensors_only_pth_loads_even_when_wrapped(tmp_path: Path) -> None:
    expected = _backbone(1)
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in expected.items()}}, path)
    model, _ = create_classifier("test_resnet", 3, str(path))
    _assert_backbone_loaded(model, expected)


class _RunsCodeOnLoad:
    """What a malicious pickle does: name a callable that unpickling calls."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_a_pickled_object_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _backbone(), "payload": _RunsCodeOnLoad(marker)}, path)
    with pytest.raises(WeightsUnavailableError, match="refused") as caught:
        create_classifier("test_resnet", 3, str(path))
    assert not marker.exists()
    assert "safetensors" in str(caught.value) and "save_file" in str(caught.value)


def test_a_file_without_tensors_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, path)
    with pytest.raises(WeightsUnavailableError, match="holds no"):
        read_checkpoint(path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsUnavailableError, match="could not be read"):
        read_checkpoint(garbage)
