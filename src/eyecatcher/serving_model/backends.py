"""Inference backends for the served model: torch fp32 from the bundle, or the ONNX model.

Both take the same normalised NCHW batch (from :mod:`eyecatcher.preprocessing`) and return
class probabilities, so the served model's preprocessing and output are the same whichever
precision the quantization stage chose. The ONNX side is the quantization stage's own
:class:`eyecatcher.models.onnx_runtime.OnnxClassifier`: the int8 model is served by the runtime
and session settings it was benchmarked with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.softmax import softmax


class ProbabilityClassifier(Protocol):
    """Anything that maps a normalised NCHW batch to ``(N, n_classes)`` probabilities."""

    def predict_proba(self, batch: torch.Tensor) -> np.ndarray:
        """Class probabilities for a batch."""
        ...


class TorchClassifier:
    """The fp32 network rebuilt from a :class:`ClassifierBundle`, in eval mode on CPU.

    Args:
        bundle: The trained bundle.

    Attributes:
        model_: The rebuilt timm network.
    """

    def __init__(self, bundle: ClassifierBundle) -> None:
        self.bundle = bundle
        self.model_ = bundle.build_model()

    @torch.inference_mode()
    def predict_proba(self, batch: torch.Tensor) -> np.ndarray:
        """Class probabilities for a normalised NCHW batch, shape ``(N, n_classes)``."""
        return softmax(self.model_(batch).float().numpy())


def onnx_classifier(path: str | Path) -> ProbabilityClassifier:
    """The ONNX model (int8 or fp32) behind the same interface as the torch one.

    Imported lazily: an fp32 model needs neither ONNX Runtime nor the quantization module.
    """
    from eyecatcher.models.onnx_runtime import OnnxClassifier

    # Idle intra-op threads must not busy-wait after a forward pass: in this process the next
    # thing to run is decoding (the next request, or batch scoring's next chunk), and spinning
    # threads take the cores it needs (docs/benchmarks.md, batch scoring vs raw ONNX Runtime).
    return OnnxClassifier(Path(path), spinning=False)
