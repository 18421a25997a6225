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


#: Height of one caption line in pixels (Pillow's default bitmap font).
LINE_HEIGHT = 14


def overlay_heatmap(
    image: Image.Image,
    heatmap: np.ndarray,
    *,
    alpha: float = 0.45,
    caption: str = "",
    min_side: int = 224,
) -> Image.Image:
    """The image, and beside it the image blended with the heatmap (inferno), captioned.

    Args:
        image: The pixels the model saw.
        heatmap: ``(H, W)`` in ``[0, 1]``, same size as ``image``.
        alpha: Weight of the heatmap in the blend.
        caption: Text under the pair; each ``" | "`` starts a new line.
        min_side: Small model inputs are enlarged (nearest neighbour, so no pixel is
            invented) until their shorter side reaches this, for a readable panel.

    Returns:
        An RGB image twice the (enlarged) width, with the caption below.
    """
    if heatmap.shape != (image.height, image.width):
        raise ValueError(f"heatmap {heatmap.shape} does not match image {image.size[::-1]}")
    scale = max(1, -(-min_side // min(image.size)))
    if scale > 1:
        size = (image.width * scale, image.height * scale)
        image = image.resize(size, Image.Resampling.NEAREST)
        heatmap = np.kron(heatmap, np.ones((scale, scale), dtype=heatmap.dtype))
    colours = colormaps["inferno"](np.clip(heatmap, 0.0, 1.0))[..., :3]
    base = np.asarray(image, dtype=np.float32) / 255.0
    blended = ((1 - alpha) * base + alpha * colours).clip(0, 1)
    overlay = Image.fromarray((blended * 255).round().astype(np.uint8), "RGB")
    lines = caption.split(" | ") if caption else []
    canvas = Image.new(
        "RGB", (2 * image.width, image.height + LINE_HEIGHT * len(lines) + 4 * bool(lines)), "white"
    )
    canvas.paste(image, (0, 0))
    canvas.paste(overlay, (image.width, 0))
    draw = ImageDraw.Draw(canvas)
    for number, line in enumerate(lines):
        draw.text((4, image.height + 2 + number * LINE_HEIGHT), line, fill="black")
    return canvas
