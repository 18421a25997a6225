"""Unit tests for the shared image module: validation reasons and normalisation to RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from eyecatcher.images import ImageRejectedError, decode_image, to_rgb, validate_image
from tests.image_factory import bad_files, encode, good_images


@pytest.mark.parametrize("name", sorted(good_images()))
def test_every_supported_format_and_mode_decodes_to_rgb(name: str) -> None:
    data = good_images()[name]
    info = validate_image(data)
    image = decode_image(data)
    assert image.mode == "RGB"
    assert image.size == (info.width, info.height)


@pytest.mark.parametrize("name", sorted(bad_files()))
def test_bad_files_are_rejected_with_their_reason(name: str) -> None:
    data, reason = bad_files()[name]
    with pytest.raises(ImageRejectedError) as excinfo:
        validate_image(data)
    assert excinfo.value.reason == reason
    if reason == "too_small":
        # Small but intact images still decode: only training-data ingestion sets a minimum.
        assert decode_image(data).mode == "RGB"
    else:
        with pytest.raises(ImageRejectedError):
            decode_image(data)


def test_exif_orientation_is_applied() -> None:
    data = good_images()["exif_rotated.jpg"]
    # The stored pixels are 120x96; orientation 6 means "rotate 90°" so the upright image is 96x120.
    assert Image.open(io.BytesIO(data)).size == (120, 96)
    assert decode_image(data).size == (96, 120)
    assert validate_image(data).width == 96


def test_transparency_is_composited_on_white_not_black() -> None:
    rgba = Image.new("RGBA", (100, 100), (255, 0, 0, 0))
    assert to_rgb(rgba).getpixel((5, 5)) == (255, 255, 255)
    data = encode(Image.new("LA", (100, 100), (0, 0)), "PNG")
    assert decode_image(data).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_grayscale_keeps_its_contrast() -> None:
    ramp = np.linspace(0, 65535, 100 * 100).reshape(100, 100).astype(np.uint16)
    image = decode_image(encode(Image.fromarray(ramp), "PNG"))
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (100, 100), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    image = decode_image(buffer.getvalue())
    red, _, blue = image.getpixel((50, 50))
    assert red > 200 and blue < 50


def test_pixel_budget_is_configurable() -> None:
    data = encode(Image.new("RGB", (1000, 1000)), "PNG")
    assert validate_image(data).width == 1000
    with pytest.raises(ImageRejectedError, match="decompression_bomb"):
        validate_image(data, max_pixels=500_000)


def test_minimum_side_is_configurable() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageRejectedError, match="too_small"):
        validate_image(data, min_side=120)
