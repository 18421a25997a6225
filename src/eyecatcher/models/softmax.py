"""The one softmax of the project: logits to class probabilities, in float64.

Training's evaluation, quantization's scoring, the ONNX Runtime classifier and the served
model's PyTorch backend all turn logits into probabilities here, so a served probability, a
calibration score and an evaluation score of the same logits are the same numbers (callers
that store float32 cast the result; they do not compute it differently). It is part of the
served code (imported by ``serving_model/backends.py`` and ``models/onnx_runtime.py``).
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, computed and returned in float64.

    Args:
        logits: ``(..., n_classes)`` scores, any float dtype.

    Returns:
        Probabilities of the same shape; each row sums to 1.
    """
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
