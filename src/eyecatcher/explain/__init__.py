"""Explainability heatmaps: Grad-CAM for CNNs and for ViTs (token grid), overlays, examples.

One interface, chosen by architecture: :func:`explainer_for` returns an explainer whose
``heatmaps(batch, targets)`` gives one ``[0, 1]`` map per image at the input's resolution.

Names are imported on first use: the served model imports :mod:`eyecatcher.explain.gradcam`
alone (torch and captum), without the gallery's image reading and plotting dependencies.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "pick_examples": "examples",
    "explain_examples": "gallery",
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
    "explain_examples",
    "explainer_for",
    "overlay_heatmap",
    "pick_examples",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
