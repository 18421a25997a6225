"""Images a reviewer reads: the model's input beside its heatmap overlay, with a caption."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw


def display_image(tensor: torch.Tensor, data_config: Mapping[str, Any]) -> Image.Image:
    """Undo the normalisation of one preprocessed image ``(3, H, W)``: the pixels the model saw."""
    mean = torch.tensor(data_config["mean"]).view(3, 1, 1)
    std = torch.tensor(data_config["std"]).view(3, 1, 1)
    pixels = (tensor.detach().cpu() * std + mean).clamp(0, 1)
    array = (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array, "RGB")


def overlay_heatmap(
    image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.45, caption: str = ""
) -> Image.Image:
    """The image, and beside it the image blended with the heatmap (inferno), captioned.

    Args:
        image: The pixels the model saw.
        heatmap: ``(H, W)`` in ``[0, 1]``, same size as ``image``.
        alpha: Weight of the heatmap in the blend.
        caption: One line under the pair (truth, prediction, scores).

    Returns:
        An RGB image ``2W`` wide.
    """
    if heatmap.shape != (image.height, image.width):
        raise ValueError(f"heatmap {heatmap.shape} does not match image {image.size[::-1]}")
    colours = colormaps["inferno"](np.clip(heatmap, 0.0, 1.0))[..., :3]
    base = np.asarray(image, dtype=np.float32) / 255.0
    blended = ((1 - alpha) * base + alpha * colours).clip(0, 1)
    overlay = Image.fromarray((blended * 255).round().astype(np.uint8), "RGB")
    band = 16 if caption else 0
    canvas = Image.new("RGB", (2 * image.width, image.height + band), "white")
    canvas.paste(image, (0, 0))
    canvas.paste(overlay, (image.width, 0))
    if caption:
        ImageDraw.Draw(canvas).text((3, image.height + 2), caption, fill="black")
    return canvas
