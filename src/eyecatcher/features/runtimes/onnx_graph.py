"""The frozen backbone's feature function as an ONNX Runtime graph (``features.runtime``).

Cold-cache feature extraction is the longest step of training on a CPU. ONNX Runtime runs the
same fp32 backbone faster than eager PyTorch here (ViT-B/16 most of all; docs/benchmarks.md),
so the pooled pre-logit features can be computed by an exported graph instead. The graph is
exported once per backbone and process, checked against PyTorch on a probe batch before any
vector is used, and the runtime is part of the feature cache key, so vectors of the two
runtimes are never mixed in one cache entry.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eyecatcher.models.factory import extract_features
from eyecatcher.models.onnx_runtime import (
    DEFAULT_OPSET,
    OnnxClassifier,
    export_onnx,
    graph_agreement,
)

logger = logging.getLogger(__name__)

#: Largest allowed |ONNX - PyTorch| per feature, relative to the largest |feature| (or 1).
#: fp32 kernels reassociate sums differently; measured differences are ~1e-6 of the scale.
FEATURE_TOLERANCE = 1e-4


class FeatureGraphError(RuntimeError):
    """The backbone could not be exported, or its graph disagrees with PyTorch."""


class _FeatureModule(torch.nn.Module):
    """``extract_features`` as a module, so that the exporter traces exactly that."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return extract_features(self.model, images)


@dataclass
class FeatureGraph:
    """An exported feature graph: what computes vectors with ``runtime: onnxruntime``.

    Pickles as its serialized ONNX bytes (the session is rebuilt where it is unpickled), so
    a Ray actor receives the very graph that was checked here.

    Attributes:
        onnx: The serialized graph (input ``images``, output ``features``).
        threads: Intra-op threads of the session (``None``: one per core).
        check: ``max_abs_diff``, ``allowed_diff`` and ``export_seconds`` of the export.
    """

    onnx: bytes
    threads: int | None
    check: Mapping[str, float]

    def __post_init__(self) -> None:
        self._session: OnnxClassifier | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"onnx": self.onnx, "threads": self.threads, "check": dict(self.check)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._session = None

    def __call__(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        """Features ``(N, n_features)`` float32 of a preprocessed ``(N, C, H, W)`` batch."""
        if self._session is None:
            # No spinning: decoding the next batch in Python needs the cores ONNX Runtime's
            # idle threads would otherwise busy-wait on.
            self._session = OnnxClassifier(self.onnx, threads=self.threads, spinning=False)
        return np.asarray(self._session.predict_logits(batch), dtype=np.float32)


def agreement_on_probe(
    reference: Callable[[torch.Tensor], np.ndarray],
    candidate: Callable[[torch.Tensor], np.ndarray],
    input_size: tuple[int, int, int] | list[int],
    *,
    probe_batch: int,
    tolerance: float,
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Run a seeded random probe batch through two feature functions and compare them.

    Args:
        reference: The float32 PyTorch features (the truth).
        candidate: Another way to compute them (an ONNX graph, bfloat16, ...).
        input_size: ``(channels, height, width)``.
        probe_batch: Images in the probe batch.
        tolerance: Relative tolerance, as :func:`~eyecatcher.models.onnx_runtime.graph_agreement`.

    Returns:
        ``max |difference|``, the allowed difference, and both outputs (float32).
    """
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn((probe_batch, *[int(v) for v in input_size]), generator=generator)
    with torch.inference_mode():
        expected = np.asarray(reference(probe), dtype=np.float32)
    got = np.asarray(candidate(probe), dtype=np.float32)
    max_diff, allowed = graph_agreement(expected, got, tolerance)
    return max_diff, allowed, expected, got


def export_feature_graph(
    model: torch.nn.Module,
    input_size: tuple[int, int, int] | list[int],
    *,
    threads: int | None = None,
    probe_batch: int = 2,
    tolerance: float = FEATURE_TOLERANCE,
) -> FeatureGraph:
    """Export ``model``'s pooled pre-logit features to ONNX and check them against PyTorch.

    Args:
        model: The frozen timm model (eval mode, on the CPU).
        input_size: ``(channels, height, width)`` of one preprocessed image.
        threads: Intra-op threads of the ONNX Runtime session.
        probe_batch: Images in the seeded random probe batch of the check.
        tolerance: See :data:`FEATURE_TOLERANCE`.

    Returns:
        The checked graph.

    Raises:
        FeatureGraphError: If export fails or the features differ by more than allowed.
    """
    start = time.perf_counter()
    module = _FeatureModule(model).eval()
    with tempfile.TemporaryDirectory(prefix="eyecatcher-features-") as scratch:
        path = Path(scratch) / "features.onnx"
        try:
            export_onnx(module, input_size, path, opset=DEFAULT_OPSET, output_name="features")
        except Exception as exc:  # any exporter error: no graph, and the user must choose
            raise FeatureGraphError(
                f"{type(model).__name__} could not be exported to ONNX ({exc}); "
                "set training.features.runtime: torch"
            ) from exc
        onnx_bytes = path.read_bytes()
    graph = FeatureGraph(onnx_bytes, threads, {})
    max_diff, allowed, expected, got = agreement_on_probe(
        lambda probe: module(probe).float().numpy(),
        graph,
        input_size,
        probe_batch=probe_batch,
        tolerance=tolerance,
    )
    if not max_diff <= allowed:
        raise FeatureGraphError(
            f"ONNX features of {type(model).__name__} differ from PyTorch's by {max_diff:.3g} "
            f"(allowed {allowed:.3g}, shapes {got.shape} vs {expected.shape}); "
            "set training.features.runtime: torch"
        )
    graph.check = {
        "max_abs_diff": max_diff,
        "allowed_diff": allowed,
        "export_seconds": time.perf_counter() - start,
    }
    logger.info(
        "Backbone features run on ONNX Runtime: exported in %.1f s, max |diff| vs PyTorch "
        "%.2g (allowed %.2g)",
        graph.check["export_seconds"],
        max_diff,
        allowed,
    )
    return graph


# One export per backbone and process: training and evaluation of a candidate (two nodes)
# share it. Keyed by the backbone fingerprint, which changes with any backbone tensor.
_graphs: dict[tuple[str, tuple[int, ...], int | None], FeatureGraph] = {}
_graphs_lock = threading.Lock()
KEPT_GRAPHS = 2


def feature_graph(
    model: torch.nn.Module,
    fingerprint: str,
    input_size: tuple[int, int, int] | list[int],
    *,
    threads: int | None = None,
) -> FeatureGraph:
    """The checked feature graph of the backbone with ``fingerprint``, exported on first use.

    Args:
        model: The frozen timm model.
        fingerprint: :func:`eyecatcher.features.cache.backbone_fingerprint` of ``model``.
        input_size: ``(channels, height, width)``.
        threads: Intra-op threads of the session.

    Returns:
        The graph (shared within this process).
    """
    key = (fingerprint, tuple(int(v) for v in input_size), threads)
    with _graphs_lock:
        graph = _graphs.get(key)
        if graph is None:
            # The two most recent backbones are kept (a ViT-B/16 graph is ~340 MB): a default
            # run trains two candidates, then evaluates each.
            while len(_graphs) >= KEPT_GRAPHS:
                _graphs.pop(next(iter(_graphs)))
            on_cpu = next(model.parameters()).device.type == "cpu"
            # The exporter traces on the CPU; a model on a GPU stays where the caller put it.
            source = model if on_cpu else copy.deepcopy(model).cpu()
            graph = export_feature_graph(source.eval(), input_size, threads=threads)
            _graphs[key] = graph
        return graph
