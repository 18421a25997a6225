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
        # Every page is walked to count them; the count stops one past the cap instead.
        "pages.tiff": (many_page_tiff(pages=2_000), "too_many_frames"),
    }


def good_images(seed: int = 0) -> dict[str, bytes]:
    """Valid images, one per format/mode the product supports (all at least 96 px a side)."""
    return dict(_good_images(seed))


def bad_files() -> dict[str, tuple[bytes, str]]:
    """Unusable files and the quarantine reason each must get."""
    return dict(_bad_files())


# -- hostile inputs: cheap to send, expensive to decode -----------------------------------------


def sixteen_bit_constant_png(side: int = 7071) -> bytes:
    """A constant 16-bit grayscale PNG (~100 kB at 7071 px) that decodes to 50 Mpx of samples."""
    return encode(Image.new("I;16", (side, side), 4242), "PNG")


def one_row_png(width: int = 20_000_000) -> bytes:
    """A ``width`` x 1 PNG (~20 kB at 20 M px): an extreme aspect ratio."""
    return encode(Image.new("L", (width, 1), 128), "PNG")


def many_page_tiff(pages: int = 10_000, side: int = 8) -> bytes:
    """A TIFF with ``pages`` tiny grayscale pages, built by hand.

    Pillow's ``save_all`` takes minutes for 10k pages; every page here points at one shared
    strip, so the file is ~150 bytes per page and builds in milliseconds.
    """
    import struct

    strip = bytes(range(side * side))[: side * side]
    header = b"II*\x00" + struct.pack("<I", 8 + len(strip))
    # Tags: width, height, bits, compression, photometric, strip offsets, rows per strip,
    # strip byte counts; then the offset of the next IFD (0 on the last page).
    entry_count = 8
    ifd_size = 2 + entry_count * 12 + 4
    first_ifd = 8 + len(strip)
    out = bytearray(header + strip)
    for page in range(pages):
        next_ifd = 0 if page == pages - 1 else first_ifd + (page + 1) * ifd_size
        entries = [
            (256, 3, 1, side),
            (257, 3, 1, side),
            (258, 3, 1, 8),
            (259, 3, 1, 1),
            (262, 3, 1, 1),
            (273, 4, 1, 8),
            (278, 3, 1, side),
            (279, 4, 1, len(strip)),
        ]
        out += struct.pack("<H", entry_count)
        for tag, kind, count, value in entries:
            packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, count) + packed
        out += struct.pack("<I", next_ifd)
    return bytes(out)


def animation_with_late_frame(
    fmt: str = "GIF", frames: int = 12, late_index: int = 9, size: int = 96
) -> tuple[bytes, bytes]:
    """An animation whose frames are plain grey except one vivid frame at ``late_index``.

    Returns:
        The animation's bytes and the vivid frame alone as a PNG (what a scorer of that frame
        alone sees), so a test can check that the late frame is the one reported.
    """
    rng = np.random.default_rng(11)
    vivid = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), "RGB")
    # Slightly different greys: identical frames are merged by the GIF encoder.
    plain = [Image.new("RGB", (size, size), (120 + i, 120 + i, 120 + i)) for i in range(frames)]
    sequence = [vivid if i == late_index else plain[i] for i in range(frames)]
    buffer = io.BytesIO()
    sequence[0].save(buffer, fmt, save_all=True, append_images=sequence[1:], duration=80, loop=0)
    return buffer.getvalue(), encode(vivid, "PNG")


def tiny_gif() -> bytes:
    """A 1x1 GIF (~35 bytes): thousands of rows of it make a small request body."""
    return encode(Image.new("P", (1, 1), 0), "GIF")


# -- hostile frames: limits that must hold for every frame, not just the first -----------------

#: LZW data of one pixel of colour 0 (minimum code size 2: clear, 0, end of information).
_GIF_ONE_PIXEL = b"\x02\x02\x44\x01\x00"


def _gif_frame(left: int, top: int, width: int = 1, height: int = 1) -> bytes:
    """A graphic control extension and a 1-pixel image at (left, top), written by hand.

    The descriptor may claim ``width`` x ``height`` over one pixel of LZW data: the rectangle is
    what grows a canvas, and nothing here is meant to decode past the limits anyway.
    """
    import struct

    control = b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # no disposal, 10 ms, no transparency
    descriptor = b"\x2c" + struct.pack("<4HB", left, top, width, height, 0)
    return control + descriptor + _GIF_ONE_PIXEL


def _gif(width: int, height: int, frames: list[bytes]) -> bytes:
    import struct

    # Logical screen descriptor: a global colour table of 2 entries (black, white).
    screen = struct.pack("<2HBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    return b"GIF89a" + screen + b"".join(frames) + b"\x3b"


def gif_big_canvas_many_frames(side: int = 7000, frames: int = 1000) -> bytes:
    """Issue #24's GIF: a ``side`` x ``side`` logical screen and ``frames`` 1x1 frames (~23 kB).

    49 Mpx passes ``max_pixels`` (50 M), and Pillow's seek composites the whole canvas for each
    frame it passes (~0.1 s a frame): counting the frames with ``seek`` cost ~100 s.
    """
    return _gif(side, side, [_gif_frame(i % side, 0) for i in range(frames)])


def gif_growing_canvas(header_side: int = 100, grown_side: int = 9000) -> bytes:
    """A GIF whose header says ``header_side`` px a side and whose frame 1 grows the canvas.

    Frame 1's 1x1 rectangle sits at (grown_side - 1, grown_side - 1): Pillow grows the canvas
    to ``grown_side`` x ``grown_side`` (81 Mpx by default) when it seeks there (~108 bytes).
    """
    far = grown_side - 1
    return _gif(header_side, header_side, [_gif_frame(0, 0), _gif_frame(far, far)])


def tiff_with_later_page(
    later: tuple[int, int] = (20_000, 40), first: tuple[int, int] = (120, 96)
) -> bytes:
    """A two-page TIFF: an ordinary first page, then a page of size ``later`` (Pillow-encoded).

    The default later page is 500:1, refused on its own as ``extreme_aspect_ratio``.
    """
    pages = [Image.new("L", size, 100 + i) for i, size in enumerate((first, later))]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:], compression="packbits")


def mpo_with_later_image(later: tuple[int, int] = (4000, 100)) -> bytes:
    """A two-image MPO (stereo JPEG) whose second image is ``later`` (40:1 by default)."""
    images = [_pattern(), Image.new("RGB", later, (90, 120, 30))]
    return encode(images[0], "MPO", save_all=True, append_images=images[1:])


def heif_with_later_image(later: tuple[int, int] = (4000, 96)) -> bytes:
    """A HEIF with two top-level images whose second is ``later`` (~42:1 by default)."""
    images = [_pattern(), Image.new("RGB", later, (90, 120, 30))]
    return encode(images[0], "HEIF", save_all=True, append_images=images[1:], quality=30)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    import struct
    import zlib

    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def apng_big_canvas_many_frames(side: int = 7000, frames: int = 1000) -> bytes:
    """An APNG with a ``side`` x ``side`` 1-bit canvas and ``frames`` frames, built by hand.

    Frame 0 is the whole (blank) canvas, ~6 kB deflated; every later frame is a 1x1
    rectangle. Each frame reached costs a pass over the canvas, as in a GIF.
    """
    import struct
    import zlib

    def control(sequence: int, width: int, height: int) -> bytes:
        # fcTL: sequence, size, offset (0, 0), delay 1/100 s, no disposal, source blending.
        return _png_chunk(
            b"fcTL", struct.pack(">5I2H2B", sequence, width, height, 0, 0, 1, 100, 0, 0)
        )

    row = b"\x00" + bytes((side + 7) // 8)
    out = [
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", struct.pack(">2I5B", side, side, 1, 0, 0, 0, 0)),
        _png_chunk(b"acTL", struct.pack(">2I", frames, 0)),
        control(0, side, side),
        _png_chunk(b"IDAT", zlib.compress(row * side, 9)),
    ]
    for frame in range(1, frames):
        out.append(control(2 * frame - 1, 1, 1))
        pixel = zlib.compress(b"\x00" + (b"\x80" if frame % 2 else b"\x00"))
        out.append(_png_chunk(b"fdAT", struct.pack(">I", 2 * frame) + pixel))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def animation_many_frames(fmt: str, frames: int = 1001, size: int = 2) -> bytes:
    """An animation (``WEBP`` or ``PNG``) of ``frames`` distinct ``size`` x ``size`` frames."""
    sequence = []
    for index in range(frames):
        frame = Image.new("L", (size, size), 0)
        frame.putpixel((index % size, (index // size) % size), 1 + index % 255)
        sequence.append(frame)
    extra = {"lossless": True, "method": 0} if fmt == "WEBP" else {}
    return encode(sequence[0], fmt, save_all=True, append_images=sequence[1:], duration=10, **extra)


def webp_big_canvas(side: int = 1000, frames: int = 17) -> bytes:
    """An animated WebP of ``frames`` frames on a ``side`` x ``side`` canvas, each one pixel
    different from the last (encoded as small rectangles by libwebp)."""
    sequence = []
    for index in range(frames):
        frame = Image.new("L", (side, side), 0)
        frame.putpixel((index, 0), 255)
        sequence.append(frame)
    return encode(
        sequence[0], "WEBP", save_all=True, append_images=sequence[1:], lossless=True, method=0
    )
