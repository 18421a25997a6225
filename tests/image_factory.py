"""Builders for images in every format and mode the project must handle, and for bad files.

Shared by the image, ingestion and serving tests so that "every kind of input" means the same
list everywhere.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image


def _pattern(width: int = 120, height: int = 96, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "RGB")


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    """Encode ``image`` with Pillow into ``fmt`` and return the bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@functools.cache
def _good_images(seed: int) -> dict[str, bytes]:
    """Valid images, one per format/mode the product supports (all at least 96 px a side)."""
    rgb = _pattern(seed=seed)
    rotated = encode(rgb, "JPEG", exif=_exif_orientation(6))
    palette_t = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    palette_t.info["transparency"] = 0
    frames = [_pattern(seed=seed + i) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    i16 = Image.fromarray((np.linspace(0, 65535, 96 * 120).reshape(96, 120)).astype(np.uint16))
    return {
        "rgb.jpg": encode(rgb, "JPEG", quality=90),
        "exif_rotated.jpg": rotated,
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "gray.jpg": encode(rgb.convert("L"), "JPEG"),
        "rgb.png": encode(rgb, "PNG"),
        "gray.png": encode(rgb.convert("L"), "PNG"),
        "gray_alpha.png": encode(rgb.convert("LA"), "PNG"),
        "rgba.png": encode(rgb.convert("RGBA"), "PNG"),
        "palette_transparent.png": encode(palette_t, "PNG"),
        "sixteen_bit.png": encode(i16, "PNG"),
        "rgb.webp": encode(rgb, "WEBP"),
        "animated.gif": gif.getvalue(),
        "rgb.bmp": encode(rgb, "BMP"),
        "rgb.tiff": encode(rgb, "TIFF"),
        "rgb.avif": encode(rgb, "AVIF"),
        "phone.heic": encode(rgb, "HEIF"),
    }


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


@functools.cache
def _bad_files() -> dict[str, tuple[bytes, str]]:
    """Unusable files and the quarantine reason each must get."""
    rgb = _pattern()
    jpeg = encode(rgb, "JPEG")
    png = encode(rgb, "PNG")
    bomb = encode(Image.new("1", (12_000, 12_000)), "PNG")  # 144 Mpx in ~17 kB
    return {
        "empty.jpg": (b"", "empty_file"),
        "notes.jpg": (b"this is a text file, not a picture\n", "not_an_image"),
        "script.png": (b"#!/bin/sh\necho hi\n" * 20, "not_an_image"),
        "half.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "no_eoi.jpg": (jpeg[:-2], "truncated"),
        "half.png": (png[: len(png) // 2], "truncated"),
        "no_iend.png": (png[:-12], "truncated"),
        "garbage.jpg": (jpeg[:200] + bytes(range(256)) * 20, "corrupt"),
        "bomb.png": (bomb, "decompression_bomb"),
        "tiny.png": (encode(_pattern(40, 30), "PNG"), "too_small"),
        "thin.jpg": (encode(_pattern(500, 60), "JPEG"), "too_small"),
        "image.ppm": (encode(rgb, "PPM"), "unsupported_format"),
        "icon.ico": (encode(rgb, "ICO"), "unsupported_format"),
    }


def good_images(seed: int = 0) -> dict[str, bytes]:
    """Valid images, one per format/mode the product supports (all at least 96 px a side)."""
    return dict(_good_images(seed))


def bad_files() -> dict[str, tuple[bytes, str]]:
    """Unusable files and the quarantine reason each must get."""
    return dict(_bad_files())
