"""Which runtime serves an fp32 model: its ONNX graph, once checked against PyTorch.

ONNX Runtime runs the fp32 graph the quantization stage exported faster than PyTorch runs the
network on the CPUs this project targets (``docs/benchmarks.md``). Before a registered version
is served through it, packaging scores the same images with both and compares the class
probabilities: within :data:`DEFAULT_TOLERANCE` the ONNX graph serves; beyond it, or if the
graph cannot be loaded or run, PyTorch serves and the reason is logged as a warning and
recorded with the version (``serving_config.json``'s ``runtime_check``, and MLflow tags on
the run that logged it). Nothing changes what the model means without saying so.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from eyecatcher import storage
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.preprocessing import bytes_to_batch
from eyecatcher.serving_model.backends import TorchClassifier, onnx_classifier

logger = logging.getLogger(__name__)

#: Largest accepted absolute difference between ONNX Runtime's and PyTorch's probabilities.
#: fp32 graphs differ from the eager network by float reassociation (fused kernels), about
#: 1e-6 on probabilities; 1e-4 leaves room for that and none for a wrong graph.
DEFAULT_TOLERANCE = 1e-4
#: Images the check scores (synthetic: gradients and noise at several sizes and aspects).
CHECK_IMAGES = 8


def check_images(count: int = CHECK_IMAGES, seed: int = 0) -> list[bytes]:
    """Deterministic PNGs of varied content and shape, decoded as the served model decodes."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        height, width = (96 + 32 * (index % 3), 128 + 48 * (index % 4))
        ramp = np.linspace(0, 255, width)[None, :, None] * rng.uniform(0.2, 1.0, size=3)
        noise = rng.normal(0, 12 + 20 * (index % 2), size=(height, width, 3))
        pixels = np.clip(ramp + noise + rng.uniform(0, 60), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def compare_onnx_with_torch(
    bundle: ClassifierBundle, onnx_path: str | Path, *, tolerance: float = DEFAULT_TOLERANCE
) -> dict[str, Any]:
    """Score the check images with the fp32 ONNX graph and with PyTorch; compare.

    Args:
        bundle: The trained bundle (the PyTorch side and the preprocessing).
        onnx_path: The fp32 ONNX graph exported from it.
        tolerance: Largest accepted max absolute probability difference.

    Returns:
        ``passed``, ``max_abs_prob_diff`` (``None`` when the graph could not run),
        ``argmax_agreement``, ``tolerance``, ``images``, ``onnx_path`` and ``detail`` (why it
        failed, in words; ``None`` when it passed).
    """
    result: dict[str, Any] = {
        "passed": False,
        "max_abs_prob_diff": None,
        "argmax_agreement": None,
        "tolerance": float(tolerance),
        "images": CHECK_IMAGES,
        "onnx_path": str(onnx_path),
        "detail": None,
    }
    if not storage.exists(str(onnx_path)):
        result["detail"] = f"the fp32 ONNX file {onnx_path} does not exist"
        return result
    batch = bytes_to_batch(check_images(), bundle.data_config)
    expected = TorchClassifier(bundle).predict_proba(batch)
    try:
        got = np.asarray(onnx_classifier(onnx_path).predict_proba(batch), dtype=np.float64)
    except Exception as exc:  # a graph the runtime cannot load or run is a failed check
        result["detail"] = f"ONNX Runtime could not run the graph: {type(exc).__name__}: {exc}"
        return result
    if got.shape != expected.shape:
        result["detail"] = f"ONNX output shape {got.shape} differs from PyTorch's {expected.shape}"
        return result
    diff = float(np.abs(got - expected).max())
    result["max_abs_prob_diff"] = diff
    result["argmax_agreement"] = float((got.argmax(1) == expected.argmax(1)).mean())
    result["passed"] = bool(np.isfinite(diff) and diff <= tolerance)
    if not result["passed"]:
        result["detail"] = (
            f"max abs probability difference {diff:.3g} exceeds the tolerance {tolerance:g}"
        )
    return result


def choose_fp32_runtime(check: dict[str, Any]) -> str:
    """``onnxruntime`` when the check passed, else ``torch`` with a warning saying why."""
    if check["passed"]:
        logger.info(
            "Served model: fp32 through ONNX Runtime (max abs probability difference with "
            "PyTorch %.2g <= %g)",
            check["max_abs_prob_diff"],
            check["tolerance"],
        )
        return "onnxruntime"
    logger.warning(
        "Served model: the fp32 ONNX graph failed its check against PyTorch (%s); serving the "
        "fp32 PyTorch model instead (slower, same meaning)",
        check["detail"],
    )
    return "torch"
