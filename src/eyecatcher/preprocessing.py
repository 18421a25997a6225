"""Turning decoded images into model inputs: one definition for training, evaluation and serving.

The data config (input size, mean, std, interpolation) comes from the model itself through
timm's ``resolve_model_data_config``; it is stored with the trained model so that serving
preprocesses exactly like training did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torchvision import transforms

from eyecatcher.images import DecodeLimits, decode_for_model

_INTERPOLATION = {
    "nearest": transforms.InterpolationMode.NEAREST,
    "bilinear": transforms.InterpolationMode.BILINEAR,
    "bicubic": transforms.InterpolationMode.BICUBIC,
    "lanczos": transforms.InterpolationMode.LANCZOS,
}


def data_config_for(model: torch.nn.Module, image_size: int | None = None) -> dict[str, Any]:
    """Resolve a model's preprocessing config, optionally forcing a square input size.

    Args:
        model: A timm model (its pretrained config gives mean, std and interpolation).
        image_size: Side of the square input in pixels; ``None`` keeps the model's default.

    Returns:
        A JSON-serialisable dict with ``input_size`` (C, H, W), ``mean``, ``std`` and
        ``interpolation``.
    """
    from timm.data import resolve_model_data_config

    config = resolve_model_data_config(model)
    input_size = tuple(config["input_size"])
    if image_size is not None:
        input_size = (input_size[0], int(image_size), int(image_size))
    return {
        "input_size": list(input_size),
        "mean": [float(v) for v in config["mean"]],
        "std": [float(v) for v in config["std"]],
        "interpolation": str(config.get("interpolation", "bilinear")),
    }


def eval_transform(data_config: Mapping[str, Any]) -> transforms.Compose:
    """The deterministic transform used for validation, test, quantization and serving.

    The whole image is resized to the input size (no centre crop), so nothing at the border of
    an image escapes moderation.

    Args:
        data_config: The dict returned by :func:`data_config_for`.

    Returns:
        A torchvision transform from an RGB PIL image to a normalised CHW float tensor.
    """
    _, height, width = data_config["input_size"]
    return transforms.Compose(
        [
            transforms.Resize(
                (height, width),
                interpolation=_INTERPOLATION.get(
                    data_config.get("interpolation", "bilinear"),
                    transforms.InterpolationMode.BILINEAR,
                ),
                antialias=True,
            ),
            transforms.ToTensor(),
            transforms.Normalize(data_config["mean"], data_config["std"]),
        ]
    )


def train_transform(
    data_config: Mapping[str, Any],
    *,
    horizontal_flip: float = 0.5,
    vertical_flip: float = 0.5,
    rotation_degrees: float = 15.0,
) -> transforms.Compose:
    """The augmenting transform used on the training split only.

    Args:
        data_config: The dict returned by :func:`data_config_for`.
        horizontal_flip: Probability of a horizontal flip.
        vertical_flip: Probability of a vertical flip.
        rotation_degrees: Maximum absolute rotation in degrees.

    Returns:
        A torchvision transform from an RGB PIL image to a normalised CHW float tensor.
    """
    base = eval_transform(data_config).transforms
    augment = [
        transforms.RandomHorizontalFlip(horizontal_flip),
        transforms.RandomVerticalFlip(vertical_flip),
        transforms.RandomRotation(rotation_degrees),
    ]
    # Augment at model resolution, before tensor conversion and normalisation.
    return transforms.Compose([base[0], *augment, *base[1:]])


def images_to_batch(images: Sequence[Image.Image], data_config: Mapping[str, Any]) -> torch.Tensor:
    """Stack RGB images into one normalised batch with the evaluation transform."""
    transform = eval_transform(data_config)
    return torch.stack([transform(image) for image in images])


def decode_min_side(data_config: Mapping[str, Any]) -> int:
    """The side images are shrunk to (no less) before the model's own resize: twice its input.

    Decoding for a model (:func:`eyecatcher.images.decode_for_model`) never keeps more pixels
    than this needs, so a 50 Mpx photo costs the memory of a small one; the antialiased resize
    to the input size then starts from at least twice that size.
    """
    _, height, width = data_config["input_size"]
    return 2 * max(int(height), int(width))


def bytes_to_batch(
    encoded: Sequence[bytes], data_config: Mapping[str, Any], *, max_pixels: int | None = None
) -> torch.Tensor:
    """Decode encoded images into one batch exactly as the served model does (first frame).

    Args:
        encoded: Encoded image files.
        data_config: The model's preprocessing config.
        max_pixels: Decompression-bomb guard (the default of :class:`DecodeLimits` if None).

    Returns:
        The normalised NCHW batch.
    """
    limits = DecodeLimits(frames_to_score=1)
    if max_pixels is not None:
        limits = DecodeLimits(
            max_pixels=max_pixels,
            frames_to_score=1,
            max_decode_pixels=max(max_pixels, limits.max_decode_pixels),
        )
    side = decode_min_side(data_config)
    images = [decode_for_model(data, min_side=side, limits=limits)[0] for data in encoded]
    return images_to_batch(images, data_config)
