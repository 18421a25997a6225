"""The one softmax: stable, float64, and the numbers every stage used before."""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import softmax as scipy_softmax

from eyecatcher.models.softmax import softmax


def test_rows_sum_to_one_even_for_huge_logits() -> None:
    logits = np.array([[1000.0, 999.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    probabilities = softmax(logits)
    assert probabilities.dtype == np.float64
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert np.allclose(probabilities[1], 1 / 3)
    assert np.isfinite(probabilities).all()


def test_it_equals_what_quantization_and_training_computed_before() -> None:
    logits = np.random.default_rng(0).normal(size=(64, 5)) * 4
    # Quantization used scipy in float64: identical.
    assert np.array_equal(softmax(logits), scipy_softmax(logits, axis=1))
    # Training used torch in float32: equal within float32 rounding.
    before = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=1).numpy()
    now = softmax(logits.astype(np.float32)).astype(np.float32)
    assert np.allclose(now, before, atol=1e-6, rtol=0)
    assert (now.argmax(1) == before.argmax(1)).all()
