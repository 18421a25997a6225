"""Backbone features in bfloat16 (``features.runtime: torch_bf16``), for CPUs that have it.

On a CPU with native bfloat16 (AVX512-BF16 or AMX) the frozen backbone's matrix products run
about twice as fast in bfloat16 as in float32 (ViT-B/16 on 2 vCPUs of a Zen 4 host: 7.6 vs 3.5
images/s, docs/benchmarks.md). The price is precision: bfloat16 keeps 8 bits of mantissa, so
the vectors differ from float32 ones by about 1% of their norm. That changes what the head is
trained on, so it is opt-in, said on the console, part of the feature cache key (the runtime
name) and recorded with the candidate's parameters in MLflow; the served backbone stays the
fp32 or int8 ONNX graph, whose accuracy the quantization pipeline measures on its own.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eyecatcher.features.runtimes.onnx_graph import agreement_on_probe
from eyecatcher.models.factory import extract_features

logger = logging.getLogger(__name__)

#: The ``features.runtime`` value of this module.
BF16_RUNTIME = "torch_bf16"

#: Largest allowed |bf16 - fp32| per feature, relative to the largest |feature| (or 1). Not a
#: precision promise (bfloat16 is ~1% off by design) but a guard against broken kernels.
BF16_TOLERANCE = 0.05

# x86 CPU flags of native bfloat16 arithmetic (Linux names).
_NATIVE_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


class Bf16Unavailable(RuntimeError):
    """This machine has no native bfloat16 for the backbone's device."""


def _cpu_flags() -> set[str] | None:
    """The CPU's flags from /proc/cpuinfo, or None where that file does not exist."""
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (emulated bfloat16 is slower than fp32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu" or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    flags = _cpu_flags()
    if flags is None or platform.machine().lower() not in {"x86_64", "amd64"}:
        return True  # no x86 flags to read: oneDNN's answer above stands
    return bool(flags & _NATIVE_FLAGS)


@dataclass
class Bf16Features:
    """The backbone's pooled features under bfloat16 autocast, returned as float32.

    Attributes:
        model: The frozen timm model (eval mode).
        check: ``max_abs_diff`` and ``allowed_diff`` against float32 on a probe batch.
    """

    model: torch.nn.Module
    check: dict[str, float] = field(default_factory=dict)

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """Features ``(N, n_features)`` float32 of a preprocessed ``(N, C, H, W)`` batch."""
        device = next(self.model.parameters()).device
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            vectors = extract_features(self.model, batch.to(device))
        return vectors.float().cpu().numpy()

    def to_cpu(self) -> Bf16Features:
        """The same function with the model on the CPU (what a Ray worker runs)."""
        return Bf16Features(self.model.cpu().eval(), dict(self.check))


def bf16_features(
    model: torch.nn.Module,
    input_size: tuple[int, int, int] | list[int],
    *,
    probe_batch: int = 2,
    tolerance: float = BF16_TOLERANCE,
) -> Bf16Features:
    """The bfloat16 feature function of ``model``, checked against float32 on a probe batch.

    Args:
        model: The frozen timm model, on its device.
        input_size: ``(channels, height, width)`` of one preprocessed image.
        probe_batch: Images in the seeded random probe batch.
        tolerance: See :data:`BF16_TOLERANCE`.

    Returns:
        The checked function.

    Raises:
        Bf16Unavailable: If the model's device has no native bfloat16.
        RuntimeError: If bfloat16 features differ from float32 by more than allowed.
    """
    device = next(model.parameters()).device
    if not native_bf16(device):
        raise Bf16Unavailable(
            f"training.features.runtime: {BF16_RUNTIME} needs native bfloat16 (a CPU with "
            f"AVX512-BF16 or AMX, or a CUDA GPU that supports it); {device} has none, and "
            "emulated bfloat16 is slower than float32. Use onnxruntime or torch."
        )
    start = time.perf_counter()
    function = Bf16Features(model)
    max_diff, allowed, expected, got = agreement_on_probe(
        lambda probe: extract_features(model, probe.to(device)).float().cpu().numpy(),
        function,
        input_size,
        probe_batch=probe_batch,
        tolerance=tolerance,
    )
    if not max_diff <= allowed:
        raise RuntimeError(
            f"bfloat16 features of {type(model).__name__} differ from float32 by {max_diff:.3g} "
            f"(allowed {allowed:.3g}); use training.features.runtime: onnxruntime or torch"
        )
    function.check = {
        "max_abs_diff": max_diff,
        "allowed_diff": allowed,
        "relative_l2": float(np.linalg.norm(got - expected) / max(np.linalg.norm(expected), 1e-12)),
        "check_seconds": time.perf_counter() - start,
    }
    logger.warning(
        "Backbone features in bfloat16 (%s): %.2g%% of the float32 vectors' norm away from "
        "them on a probe batch (max |diff| %.2g). The head trains on these; the served "
        "backbone stays fp32/int8 ONNX.",
        BF16_RUNTIME,
        100 * function.check["relative_l2"],
        max_diff,
    )
    return function


# One check (and one console warning) per backbone and process: a candidate's training,
# evaluation and heatmap steps share it, as they share an exported feature graph.
_checked: dict[tuple[str, tuple[int, ...], str], Bf16Features] = {}
_checked_lock = threading.Lock()
_KEPT = 2


def checked_bf16_features(
    model: torch.nn.Module, fingerprint: str, input_size: tuple[int, int, int] | list[int]
) -> Bf16Features:
    """:func:`bf16_features` of the backbone with ``fingerprint``, checked on first use only.

    Args:
        model: The frozen timm model, on its device.
        fingerprint: :func:`eyecatcher.features.cache.backbone_fingerprint` of ``model``.
        input_size: ``(channels, height, width)``.

    Returns:
        The checked function, bound to ``model``.
    """
    device = str(next(model.parameters()).device)
    key = (fingerprint, tuple(int(v) for v in input_size), device)
    with _checked_lock:
        checked = _checked.get(key)
        if checked is None:
            while len(_checked) >= _KEPT:
                _checked.pop(next(iter(_checked)))
            checked = bf16_features(model, input_size)
            _checked[key] = checked
        # Same fingerprint, same backbone tensors: the check holds for this copy too.
        return checked if checked.model is model else Bf16Features(model, dict(checked.check))
