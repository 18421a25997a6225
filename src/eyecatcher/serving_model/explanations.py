"""Heatmaps in the served model's response: Grad-CAM of the class the served model chose.

Grad-CAM needs gradients, so the heatmap always comes from the bundle's fp32 PyTorch network,
whatever runtime serves the probabilities. When that runtime is the int8 (or fp32) ONNX model,
the heatmap explains the class *that* model chose, computed on its fp32 PyTorch source; each
row's ``heatmap_info`` says so, so a heatmap is never read as something it is not.

The heatmap is raw heat, not an overlay: a grayscale PNG of ``heatmap_size`` pixels a side,
255 where the evidence for the class is strongest in that image and 0 where there is none. It
covers the whole image as the model saw it (resized to the model's input, no crop), so a
client overlays it by stretching it over its own image.
"""

from __future__ import annotations

import base64
import io
import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from eyecatcher.models.bundle import ClassifierBundle

if TYPE_CHECKING:
    from eyecatcher.explain.gradcam import HeatmapExplainer

logger = logging.getLogger(__name__)


def heatmap_png(heatmap: np.ndarray, size: int) -> str:
    """One ``[0, 1]`` heatmap as a base64 grayscale PNG of ``size`` x ``size`` pixels."""
    levels = (np.clip(heatmap, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    image = Image.fromarray(levels, "L").resize((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class ServedExplainer:
    """Grad-CAM heatmaps for the served model, built on first use.

    The network is rebuilt only when a request first asks for a heatmap: a deployment whose
    clients never ask holds no second copy of the weights.

    Args:
        bundle: The served bundle (fp32 weights, classes, preprocessing config).
        runtime: What serves the probabilities (``torch`` or ``onnxruntime``).
        precision: The served precision (``fp32`` or ``int8``).
        size: Side of the PNG in pixels.
        model: The served PyTorch network when the runtime is ``torch`` (shared, not copied).

    Attributes:
        explainer_: The :class:`~eyecatcher.explain.gradcam.HeatmapExplainer`, once built.
    """

    def __init__(
        self,
        bundle: ClassifierBundle,
        *,
        runtime: str,
        precision: str,
        size: int,
        model: torch.nn.Module | None = None,
    ) -> None:
        self.bundle = bundle
        self.runtime = runtime
        self.precision = precision
        self.size = int(size)
        self.model = model
        self.explainer_: HeatmapExplainer | None = None

    def _explainer(self) -> HeatmapExplainer:
        if self.explainer_ is None:
            from eyecatcher.explain.gradcam import explainer_for

            model = self.model if self.model is not None else self.bundle.build_model()
            self.explainer_ = explainer_for(model)
            logger.info("Heatmaps: %s", self.explainer_.method)
        return self.explainer_

    def heatmaps(self, batch: torch.Tensor, targets: list[int]) -> list[str]:
        """Base64 PNG heatmaps, one per image of ``batch`` for its target class index."""
        maps = self._explainer().heatmaps(batch, targets)
        return [heatmap_png(heatmap, self.size) for heatmap in maps]

    def info(self, class_name: str) -> str:
        """What a heatmap shows, in one sentence (the row's ``heatmap_info``)."""
        height, width = self.bundle.data_config["input_size"][1:]
        if self.runtime == "torch":
            source = "the served fp32 PyTorch model"
        else:
            source = (
                f"the fp32 PyTorch model the served {self.precision} ONNX model was made from "
                "(ONNX Runtime gives no gradients)"
            )
        return (
            f"{self._explainer().method} of {source}, for class '{class_name}' (the class "
            f"the served model chose); {self.size}x{self.size} grayscale PNG, 255 = strongest "
            f"evidence, over the whole image resized to the model's {width}x{height} input"
        )
