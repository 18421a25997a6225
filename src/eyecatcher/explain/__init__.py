"""Explainability heatmaps: Grad-CAM for CNNs and for ViTs (token grid), overlays, examples.

One interface, chosen by architecture: :func:`explainer_for` returns an explainer whose
``heatmaps(batch, targets)`` gives one ``[0, 1]`` map per image at the input's resolution.
"""

from eyecatcher.explain.examples import pick_examples
from eyecatcher.explain.gallery import explain_examples
from eyecatcher.explain.gradcam import (
    HeatmapExplainer,
    UnsupportedArchitectureError,
    explainer_for,
)
from eyecatcher.explain.overlay import display_image, overlay_heatmap

__all__ = [
    "HeatmapExplainer",
    "UnsupportedArchitectureError",
    "display_image",
    "explain_examples",
    "explainer_for",
    "overlay_heatmap",
    "pick_examples",
]
