"""The fp32 ONNX graph of a candidate: exported, optionally fused, checked against PyTorch.

The fp32 graph built here is both the fp32 row of the quantization table and the graph every
int8 model is quantized from, so a graph optimisation speeds up both precisions alike and the
int8/fp32 ratio stays a statement about precision, not about fusion.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eyecatcher.models.onnx_runtime import OnnxClassifier, export_onnx, graph_agreement
from eyecatcher.pipelines.quantization.graph_optimization import (
    has_attention,
    optimize_transformer_graph,
    plain_attention,
)
from eyecatcher.pipelines.quantization.settings import QuantizationSettings


def export_fp32_graph(
    model: torch.nn.Module,
    input_size: list[int] | tuple[int, int, int],
    path: str | Path,
    settings: QuantizationSettings,
) -> dict[str, Any]:
    """Export ``model`` to ``path``; simplify attention and fuse the graph as configured.

    ``plain_attention`` and ``transformer_optimizer`` only apply to models with timm attention
    blocks; for any other model the record says they did not apply.

    Args:
        model: The fp32 classifier (left as it was).
        input_size: ``(channels, height, width)``.
        path: Where to write the fp32 ``.onnx`` file.
        settings: The candidate's quantization settings.

    Returns:
        What was done: ``opset``, ``plain_attention`` and ``transformer_optimizer`` (as
        applied, ``False``/``None`` otherwise), ``fused_operators`` and ``seconds``.

    Raises:
        QuantizationError: If the exporter fails.
    """
    start = time.perf_counter()
    attention = has_attention(model)
    plain = settings.plain_attention and attention
    optimizer = settings.transformer_optimizer if attention else None
    with tempfile.TemporaryDirectory(prefix="eyecatcher-export-") as scratch:
        exported = Path(scratch) / "exported.onnx"
        with plain_attention(model) if plain else contextlib.nullcontext(model):
            export_onnx(model, input_size, exported, opset=settings.opset)
        fused: dict[str, int] = {}
        if optimizer:
            fused = optimize_transformer_graph(exported, path, model_type=optimizer)
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(exported, path)
    return {
        "opset": settings.opset,
        "plain_attention": plain,
        "transformer_optimizer": optimizer,
        "fused_operators": fused,
        "seconds": time.perf_counter() - start,
    }


def check_against_torch(
    model: torch.nn.Module, onnx_path: str | Path, batch: np.ndarray, settings: QuantizationSettings
) -> dict[str, float]:
    """Compare the ONNX graph's logits with PyTorch's on ``batch``.

    The allowed difference is ``export_tolerance`` scaled as :func:`graph_agreement` says.

    Args:
        model: The PyTorch classifier the graph was exported from (its own attention path).
        onnx_path: The fp32 ONNX graph.
        batch: ``(N, C, H, W)`` float32 images.
        settings: Gives ``export_tolerance`` and ``threads``.

    Returns:
        ``max_abs_logit_diff`` and ``allowed_diff``.

    Raises:
        RuntimeError: If the logits differ by more than allowed.
    """
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(batch)).numpy()
    got = OnnxClassifier(onnx_path, threads=settings.threads).predict_logits(batch)
    max_diff, allowed = graph_agreement(expected, got, settings.export_tolerance)
    if not max_diff <= allowed:
        raise RuntimeError(f"ONNX logits differ from PyTorch by {max_diff:.3g} > {allowed:.3g}")
    return {"max_abs_logit_diff": max_diff, "allowed_diff": allowed}
