"""Explainability heatmaps: Grad-CAM for CNNs and for ViTs (token grid), overlays, examples.

One interface, chosen by architecture: :func:`explainer_for` returns an explainer whose
``heatmaps(batch, targets)`` gives one ``[0, 1]`` map per image at the input's resolution.

Names are imported on first use: the served model imports :mod:`eyecatcher.explain.gradcam`
alone (torch and captum), without the overlays' and the example choice's dependencies. The
training pipeline's gallery (:mod:`eyecatcher.pipelines.training.gallery`) puts them together
for one trained classifier; it reads images and bundles, so it sits above this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "pick_examples": "examples",
    "HeatmapExplainer": "gradcam",
    "UnsupportedArchitectureError": "gradcam",
    "explainer_for": "gradcam",
    "display_image": "overlay",
    "overlay_heatmap": "overlay",
}

__all__ = [
    "HeatmapExplainer",
    "UnsupportedArchitectureError",
    "display_image",
    "explainer_for",
    "overlay_heatmap",
    "pick_examples",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
