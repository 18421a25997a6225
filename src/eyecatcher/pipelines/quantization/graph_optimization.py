"""Preparing a transformer's ONNX graph before quantization, and counting its arithmetic.

Two steps bring an exported timm ViT closer to what ONNX Runtime's fused CPU kernels expect:

* :func:`plain_attention` exports attention as the explicit ``softmax(q k^T * scale) v``
  instead of timm's ``scaled_dot_product_attention`` path, whose TorchScript export splits the
  scale into two square roots applied to ``q`` and ``k`` (extra ``Sqrt``/``Mul`` nodes per
  block). The arithmetic is the same; the graph is simpler.
* :func:`optimize_transformer_graph` runs ONNX Runtime's transformer optimizer
  (``onnxruntime.transformers.optimizer.optimize_model``, ``model_type='vit'``), which fuses
  residual-add + LayerNorm into ``SkipLayerNormalization`` and bias + GELU into ``BiasGelu``.
  It does not fuse timm's attention into one ``Attention`` op (timm computes q, k and v with one
  packed projection, which the fusion's pattern does not match): those nodes stay as they are.

Both are settings of the quantization pipeline, off by default: on full-size ViT-B/16 neither
changed latency measurably on this project's CPU, where the GEMMs dominate (docs/quantization.md).

:func:`count_macs` counts multiply-accumulates per image from the model itself, for the
throughput arithmetic in docs/quantization.md.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

#: Model types of ONNX Runtime's transformer optimizer that this project has checked on timm
#: exports (the optimizer knows more, for Hugging Face graphs).
TRANSFORMER_MODEL_TYPES: tuple[str, ...] = ("vit",)


@contextlib.contextmanager
def plain_attention(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run (and export) timm attention blocks without ``scaled_dot_product_attention``.

    Every module with a boolean ``fused_attn`` attribute (timm's attention blocks) computes
    attention explicitly inside the ``with`` block; the previous values are restored after.
    Models without such modules are unchanged.

    Args:
        model: A timm model.

    Yields:
        The same model.
    """
    changed = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    previous = [m.fused_attn for m in changed]
    try:
        for module in changed:
            module.fused_attn = False
        yield model
    finally:
        for module, value in zip(changed, previous, strict=True):
            module.fused_attn = value


def has_attention(model: torch.nn.Module) -> bool:
    """Whether ``model`` has timm attention blocks (what the transformer optimizer targets)."""
    return any(isinstance(getattr(m, "fused_attn", None), bool) for m in model.modules())


def optimize_transformer_graph(
    src: str | Path, dst: str | Path, *, model_type: str = "vit"
) -> dict[str, int]:
    """Fuse a transformer's ONNX graph with ONNX Runtime's transformer optimizer.

    Heads and hidden size are detected from the graph. The optimizer's own ONNX Runtime pass
    is off (``opt_level=0``): the session applies its graph optimizations when it loads the
    model, for fp32 and int8 alike, so the file stays portable across CPUs.

    Args:
        src: The exported fp32 model.
        dst: Where to write the fused fp32 model.
        model_type: The optimizer's model type (one of :data:`TRANSFORMER_MODEL_TYPES`).

    Returns:
        ``{fused operator: count}`` for each fusion that applied.

    Raises:
        ValueError: For a model type this project has not checked.
    """
    if model_type not in TRANSFORMER_MODEL_TYPES:
        raise ValueError(
            f"Unknown transformer model type {model_type!r}; expected one of "
            f"{TRANSFORMER_MODEL_TYPES}."
        )
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(src), model_type=model_type, num_heads=0, hidden_size=0, opt_level=0, use_gpu=False
    )
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    optimized.save_model_to_file(str(dst))
    fused = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    logger.info("Transformer optimizer (%s) fused %s", model_type, fused or "nothing")
    return fused


def count_macs(model: torch.nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on one image, counted by PyTorch.

    Uses ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions; a
    multiply-add counts as 2 FLOPs there, as 1 MAC here), with attention computed explicitly
    so that its two matrix products are counted too. Elementwise work (softmax, LayerNorm,
    GELU, BatchNorm) is not counted: it is a small share of these models' arithmetic.

    Args:
        model: The classifier, in eval mode.
        input_size: ``(channels, height, width)``.

    Returns:
        MACs per image.
    """
    from torch.utils.flop_counter import FlopCounterMode

    example = torch.zeros((1, *[int(v) for v in input_size]))
    counter = FlopCounterMode(display=False)
    with plain_attention(model), counter, torch.no_grad():
        model(example)
    return int(counter.get_total_flops() // 2)
