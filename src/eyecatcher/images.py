"""Decoding, validation and normalisation of images, shared by every pipeline.

Ingestion, labelling, training and serving all read images through this module so that an
image means the same thing everywhere: the same orientation (EXIF), the same colour handling
(palette, alpha, CMYK, 16-bit) and the same notion of "bad input".
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pillow_heif import open_heif, register_heif_opener

# Phone cameras save HEIC by default; real upload folders are full of them.
register_heif_opener()

# A truncated file must be reported, never half-decoded into a grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Formats a moderation pipeline accepts. Anything else Pillow can open (PSD, ICO, EPS, ...) is
#: quarantined as ``unsupported_format`` rather than guessed at.
SUPPORTED_FORMATS: frozenset[str] = frozenset(
    {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF"}
)

#: Default pixel budget (width x height): larger images are treated as decompression bombs.
DEFAULT_MAX_PIXELS = 50_000_000

# Pillow's own guard (warning above MAX_IMAGE_PIXELS, error above twice it) runs inside code
# paths this module does not wrap: a frame's canvas growing during a GIF seek, a TIFF page's
# buffer allocated at load, any other caller of Image.open. Its default (~89 Mpx, error above
# ~179 Mpx) is far above the project's limit, so it is set from that limit here, once, for
# every importer. Where this module checks a caller's own `max_pixels` explicitly, Pillow's
# warning is silenced and that check decides; above twice this value Pillow refuses on its own
# (reported as `decompression_bomb`).
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS

#: Default minimum side in pixels (Rekognition rejects images under 80 px a side).
DEFAULT_MIN_SIDE = 80

#: Default largest ratio of the longer side to the shorter (long phone screenshots are ~10).
DEFAULT_MAX_ASPECT_RATIO = 25
#: Default largest number of frames (pages) a file may have; more are never walked.
DEFAULT_MAX_FRAMES = 1000
#: Default number of frames of an animation that are scored, spread over its length.
DEFAULT_FRAMES_TO_SCORE = 8
#: Default decode budget of one file: pixels per frame x frames that must be decoded.
DEFAULT_MAX_DECODE_PIXELS = 250_000_000


class ImageRejectedError(ValueError):
    """An input that cannot be used as an image, with a machine-readable reason.

    Attributes:
        reason: One of ``empty_file``, ``not_an_image``, ``unsupported_format``, ``truncated``,
            ``corrupt``, ``decompression_bomb``, ``too_small``, ``invalid_base64``, and, from
            :func:`decode_for_model`, ``extreme_aspect_ratio``, ``too_many_frames``,
            ``decode_budget`` and ``deadline_exceeded``.
        detail: A human-readable explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Deadline:
    """The moment after which work for one request stops, checked between rows and frames.

    Wall-clock time (``time.monotonic``), not the thread's CPU time: what the deadline promises
    is an answer to the client within so many seconds, and a client waits in wall time. The
    calling thread's CPU time would not count the time it waits for a CPU on a busy host or for
    the GIL, nor the forward pass's work in torch's or ONNX Runtime's own worker threads, so the
    answer could come far later than the deadline says. ``monotonic`` never jumps when the
    system clock is set.

    Args:
        seconds: Time from now until the deadline.
        clock: The clock (seconds, monotonic); tests pass a fake one.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not seconds > 0:
            raise ValueError(f"a deadline must be positive seconds, got {seconds!r}")
        self.seconds = float(seconds)
        self._clock = clock
        self._expires_at = clock() + self.seconds

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self._clock() >= self._expires_at

    def check(self, before: str) -> None:
        """Refuse to start ``before`` (what would run next) once the deadline has passed.

        Raises:
            ImageRejectedError: ``deadline_exceeded``.
        """
        if self.expired():
            raise ImageRejectedError("deadline_exceeded", self.message(before))

    def message(self, before: str) -> str:
        """The per-row explanation for work not started because the deadline passed."""
        return f"the request's deadline of {self.seconds:g} s passed before {before}"


@dataclass(frozen=True)
class ImageInfo:
    """What validation learned about an image file.

    Attributes:
        width: Width in pixels after EXIF orientation.
        height: Height in pixels after EXIF orientation.
        format: Pillow format name (``JPEG``, ``PNG``, ...).
        mode: Pillow mode of the stored pixels (``RGB``, ``L``, ``RGBA``, ``CMYK``, ...).
        n_frames: Number of frames (animated GIF/WebP have more than one).
    """

    width: int
    height: int
    format: str
    mode: str
    n_frames: int


def sha256_bytes(data: bytes) -> str:
    """Return the hex sha256 of ``data`` (the identity of an image everywhere in the project)."""
    return hashlib.sha256(data).hexdigest()


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageRejectedError("empty_file", "zero bytes")
    try:
        with warnings.catch_warnings():
            # Pillow warns between its MAX_IMAGE_PIXELS (~89 Mpx) and twice that: the explicit
            # `max_pixels` check below decides instead, so a limit raised in config is honoured
            # (above twice Pillow's limit, Pillow refuses on its own: decompression_bomb).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejectedError("decompression_bomb", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageRejectedError("not_an_image", "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejectedError("corrupt", f"header could not be parsed: {exc}") from exc
    except Exception as exc:  # any decoder failure on these bytes: see _decoder_failure
        raise ImageRejectedError("corrupt", _decoder_failure("header", exc)) from exc
    if image.format not in SUPPORTED_FORMATS:
        raise ImageRejectedError(
            "unsupported_format",
            f"{image.format} is not one of {', '.join(sorted(SUPPORTED_FORMATS))}",
        )
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejectedError(
            "decompression_bomb",
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}",
        )
    return image


def _load(image: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            # The size was checked against `max_pixels` when the file was opened.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Image.DecompressionBombError as exc:
        raise ImageRejectedError("decompression_bomb", str(exc)) from exc
    except OSError as exc:
        message = str(exc)
        if "truncated" in message or "broken data stream" in message:
            raise ImageRejectedError("truncated", message) from exc
        raise ImageRejectedError("corrupt", message) from exc
    except (SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejectedError("corrupt", str(exc) or type(exc).__name__) from exc
    except Exception as exc:  # any decoder failure on these bytes: see _decoder_failure
        raise ImageRejectedError("corrupt", _decoder_failure("pixel data", exc)) from exc


def _decoder_failure(stage: str, exc: Exception) -> str:
    """Describe an unexpected decoder exception on damaged bytes.

    Pillow's plugins do not keep to OSError/ValueError on malformed input: a damaged animated
    GIF raises IndexError while its frames are counted, a damaged AVIF raises RuntimeError from
    libavif. Such bytes are a corrupt file, not a reason to crash a whole ingestion run (or a
    serving request), so they get the ``corrupt`` reason with the decoder's own words.
    """
    return f"{stage} could not be decoded ({type(exc).__name__}: {exc})"


def _jpeg_reaches_end_marker(data: bytes) -> bool:
    """Whether the JPEG stream's own structure reaches its end-of-image (EOI) marker.

    The segments are walked by their lengths (so the EOI of an embedded EXIF thumbnail does not
    count) and entropy-coded data is skipped up to its next real marker. Bytes after the EOI do
    not matter: phones append whole videos there (Google and Samsung "motion photos"), and the
    image itself is complete.
    """
    size = len(data)
    position = 2  # after SOI
    while position < size:
        if data[position] != 0xFF:
            # Stray bytes between segments (libjpeg tolerates them): resynchronise.
            position = data.find(b"\xff", position)
            if position == -1:
                return False
        while position < size and data[position] == 0xFF:  # fill bytes
            position += 1
        if position >= size:
            return False
        marker = data[position]
        position += 1
        if marker == 0xD9:
            return True
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            continue
        if position + 2 > size:
            return False
        position += int.from_bytes(data[position : position + 2], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next marker
            while True:
                position = data.find(b"\xff", position)
                if position == -1 or position + 1 >= size:
                    return False
                following = data[position + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffing, restart
                    position += 2
                elif following == 0xFF:
                    position += 1
                else:
                    break
    return False


def _check_complete(data: bytes, image_format: str) -> None:
    """Reject files whose container says they were cut short, even if the pixels decoded.

    libjpeg fills a JPEG that stops just short of its end-of-image marker with grey and only
    warns, and a PNG cut inside its last chunks still decodes; both files were truncated
    whatever the decoder says.
    """
    if image_format in {"JPEG", "MPO"} and not _jpeg_reaches_end_marker(data):
        raise ImageRejectedError("truncated", "JPEG data ends without an end-of-image marker")
    if image_format == "PNG" and data.rfind(b"IEND") == -1:
        raise ImageRejectedError("truncated", "PNG data ends without an IEND chunk")
    if image_format == "WEBP" and len(data) >= 8:
        declared = int.from_bytes(data[4:8], "little") + 8
        if len(data) < declared:
            raise ImageRejectedError(
                "truncated", f"WebP container declares {declared} bytes, file has {len(data)}"
            )
    if image_format == "GIF" and not data.rstrip(b"\x00").endswith(b";"):
        # Pillow decodes only the frames it is asked for, so an animation cut after its first
        # frame otherwise passes as a complete image.
        raise ImageRejectedError("truncated", "GIF data ends without its trailer byte")


#: ISO-BMFF major brands of still images (AVIF, HEIF); videos (isom, mp42, qt) are left alone.
_IMAGE_BRANDS = frozenset(
    {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"mif2",
     b"msf1", b"miaf"}
)  # fmt: skip


def _bmff_declared_size(data: bytes) -> int:
    """Bytes the top-level boxes of an ISO-BMFF file (AVIF, HEIF) declare, walking their sizes."""
    position = 0
    while position + 8 <= len(data):
        size = int.from_bytes(data[position : position + 4], "big")
        if size == 1:  # a 64-bit size follows the type
            if position + 16 > len(data):
                return position + 16
            size = int.from_bytes(data[position + 8 : position + 16], "big")
        elif size == 0:  # the last box runs to the end of the file
            return len(data)
        if size < 8:
            return len(data)  # not a box structure we can judge; the decoder decides
        position += size
    return position


def _check_container(data: bytes) -> None:
    """Reject containers that declare more bytes than the file has, before any decoding.

    Decoders report such files in their own words (libavif: "not a recognised image format",
    libheif: "Unexpected end of file"); the container says plainly that it was cut short.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        _check_complete(data, "WEBP")
    if data[4:8] == b"ftyp" and data[8:12] in _IMAGE_BRANDS:
        declared = _bmff_declared_size(data)
        if declared > len(data):
            raise ImageRejectedError(
                "truncated", f"AVIF/HEIF boxes declare {declared} bytes, file has {len(data)}"
            )


def validate_image(
    data: bytes,
    *,
    min_side: int = DEFAULT_MIN_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> ImageInfo:
    """Fully decode ``data`` and describe it, or say precisely why it is unusable.

    Args:
        data: The encoded file contents.
        min_side: Smallest acceptable width or height, in pixels.
        max_pixels: Largest acceptable width x height (decompression-bomb guard).
        max_frames: Largest number of frames (pages). Frames are counted without decoding
            them (a GIF's blocks, a header's count, a TIFF's page headers) and the count stops
            one past this cap: such a file is rejected as ``too_many_frames``. Every counted
            frame's canvas is checked against ``max_pixels`` too.

    Returns:
        The image's size (after EXIF orientation), format, mode and frame count.

    Raises:
        ImageRejectedError: When the bytes are empty, not an image, an unsupported format,
            truncated, corrupt, too large in pixels, too small, or has too many frames.
    """
    _check_container(data)
    image = _open(data, max_pixels)
    image_format = image.format
    mode = image.mode
    n_frames, too_many = _checked_frame_count(image, data, max_frames, max_pixels)
    if too_many:
        raise ImageRejectedError("too_many_frames", f"more than {max_frames} frames (pages)")
    _load(image)
    _check_complete(data, image_format)
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception as exc:  # a malformed EXIF block is corruption of the file, not a crash
        raise ImageRejectedError("corrupt", f"unreadable EXIF orientation: {exc}") from exc
    try:
        to_rgb(oriented)
    except (ValueError, OSError) as exc:  # an exotic mode Pillow cannot turn into RGB
        raise ImageRejectedError(
            "unsupported_format", f"pixel mode {mode} cannot be converted to RGB: {exc}"
        ) from exc
    width, height = oriented.size
    if min(width, height) < min_side:
        raise ImageRejectedError(
            "too_small", f"{width}x{height} is under the minimum side of {min_side} px"
        )
    return ImageInfo(width, height, image_format, mode, n_frames)


#: Grayscale modes with more than 8 bits per sample.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_WIDE_GRAY_MODES = _SIXTEEN_BIT_MODES | {"I", "F"}

#: Samples converted per step: a 50 Mpx 16-bit image never has a full-size float copy.
_BAND_PIXELS = 1 << 20


def _bands(image: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """Horizontal bands of ``image`` as arrays, each about :data:`_BAND_PIXELS` samples."""
    rows = max(1, _BAND_PIXELS // max(1, image.width))
    for top in range(0, image.height, rows):
        bottom = min(image.height, top + rows)
        yield top, np.asarray(image.crop((0, top, image.width, bottom)))


def to_8bit_gray(image: Image.Image) -> Image.Image:
    """Convert 16-bit, 32-bit integer or float grayscale to 8-bit ``L``, band by band.

    16-bit samples keep their brightness (0..65535 maps to 0..255, rounded, as image viewers
    show it): their range is fixed, and stretching each image to its own min/max would turn a
    dark photo bright and a flat one black. 32-bit integer and float samples, whose range the
    file does not state, are rescaled from their own minimum and maximum. Only one band is
    converted at a time, so memory stays at the 8-bit result plus a small band.

    Args:
        image: An image in mode ``I;16*``, ``I`` or ``F``.

    Returns:
        An ``L`` image of the same size.
    """
    out = np.empty((image.height, image.width), dtype=np.uint8)
    if image.mode in _SIXTEEN_BIT_MODES:
        for top, band in _bands(image):
            # Integer form of rint(v / 257): v / 257 is never exactly half-way.
            out[top : top + band.shape[0]] = (band.astype(np.uint32) + 128) // 257
        return Image.fromarray(out, "L")
    low, high = (float(v) for v in image.getextrema())
    for top, band in _bands(image):
        rows = slice(top, top + band.shape[0])
        if high > low:
            out[rows] = ((band.astype(np.float64) - low) / (high - low) * 255.0).astype(np.uint8)
        else:
            out[rows] = 0
    return Image.fromarray(out, "L")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB the same way everywhere.

    Transparent pixels are composited on ``background`` (not dropped to black), wide grayscale
    goes through :func:`to_8bit_gray`, CMYK through Pillow's conversion, palettes are expanded
    with their transparency.

    Args:
        image: A decoded image in any mode.
        background: The colour transparent areas are painted with.

    Returns:
        An ``RGB`` image of the same size.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_GRAY_MODES:
        image = to_8bit_gray(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in {"RGBA", "LA", "La", "RGBa", "PA"}:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_min_side: int | None = None
) -> Image.Image:
    """Decode bytes into an upright 8-bit RGB image (first frame of an animation).

    Args:
        data: The encoded file contents.
        max_pixels: Largest acceptable width x height (decompression-bomb guard).
        draft_min_side: For callers that only need a small version (perceptual hashes): JPEGs
            are decoded at 1/2, 1/4 or 1/8 scale as long as both sides stay at least this many
            pixels. Other formats, and ``None`` (the default), decode at full size.

    Returns:
        The decoded image, EXIF orientation applied, converted with :func:`to_rgb`.

    Raises:
        ImageRejectedError: When the bytes cannot be decoded into an image.
    """
    _check_container(data)
    image = _open(data, max_pixels)
    image_format = image.format
    # Only the first frame is decoded, but surveying the frames (without decoding them) surfaces
    # a file cut or damaged in a later one and a canvas that grows past `max_pixels`; the survey
    # stops past the frame cap, so a 30,000-page TIFF costs milliseconds.
    _checked_frame_count(image, data, DEFAULT_MAX_FRAMES, max_pixels)
    if draft_min_side is not None and image_format in {"JPEG", "MPO"}:
        # libjpeg scales while decoding (DCT scaling): a 12 MP photo hashes ~4x faster.
        image.draft(None, (draft_min_side, draft_min_side))
    _load(image)
    _check_complete(data, image_format)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as exc:
        raise ImageRejectedError("corrupt", f"unreadable EXIF orientation: {exc}") from exc
    return to_rgb(image)


# -- bounded decoding for a model ---------------------------------------------------------------


@dataclass(frozen=True)
class DecodeLimits:
    """What decoding one file for a model may cost: every bound is a per-row error beyond it.

    Attributes:
        max_pixels: Largest width x height of one frame (decompression-bomb guard).
        max_aspect_ratio: Largest ratio of the longer side to the shorter one.
        max_frames: Largest number of frames (pages); frames beyond it are never walked.
        frames_to_score: Frames of an animation (or pages of a document) that are decoded,
            spread evenly from the first to the last.
        max_decode_pixels: Pixels per frame x frames that must be decoded to reach them (an
            animation is decoded from its start; pages of a TIFF are read directly).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    max_frames: int = DEFAULT_MAX_FRAMES
    frames_to_score: int = DEFAULT_FRAMES_TO_SCORE
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS

    def __post_init__(self) -> None:
        """Reject limits that would refuse everything or mean nothing."""
        if min(self.max_pixels, self.max_frames, self.frames_to_score) < 1:
            raise ValueError(f"decode limits must be at least 1: {self}")
        if self.max_aspect_ratio < 1 or self.max_decode_pixels < self.max_pixels:
            raise ValueError(
                f"max_aspect_ratio must be >= 1 and max_decode_pixels >= max_pixels: {self}"
            )


# Formats whose frames are all drawn on the one canvas their header states, with the frame count
# in a header or index: APNG's acTL chunk (frames outside the canvas are refused by Pillow),
# WebP's demuxer and AVIF's parser (neither decodes a frame to count them).
_SHARED_CANVAS = frozenset({"WEBP", "PNG", "AVIF"})
# Formats whose frame k can only be reached by decoding frames 0..k (composited animations).
_DECODED_FROM_START = frozenset({"GIF", "WEBP", "PNG", "AVIF"})
# Modes Image.reduce accepts; others (palette, bilevel) are converted before shrinking.
_REDUCIBLE_MODES = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: GIF block introducers: extension, image descriptor, trailer.
_GIF_BLOCK = re.compile(rb"[\x21\x2c\x3b]")
#: Data sub-blocks skipped between two deadline checks while a GIF's blocks are walked.
_GIF_CHECK_EVERY = 1 << 16


def _skip_gif_sub_blocks(data: bytes, position: int) -> tuple[int, int]:
    """Position after the sub-blocks starting at ``position``, and how many were skipped."""
    size = len(data)
    skipped = 0
    while position < size:
        length = data[position]
        position += 1 + length
        skipped += 1
        if length == 0:
            return position, skipped
    raise ImageRejectedError("truncated", "GIF data ends inside a block")


def gif_frame_canvases(
    data: bytes, cap: int, deadline: Deadline | None = None
) -> list[tuple[int, int]]:
    """The canvas each frame of a GIF is composited on, from its block structure alone.

    Pillow's GIF ``seek`` composites the whole canvas for every frame it passes (about 0.1 s a
    frame on a 49 Mpx canvas), so counting frames with it cost a 23 kB file of 1,000 1x1
    frames ~100 s. This walks the blocks instead (logical screen descriptor, colour tables,
    extensions, image descriptors; data sub-blocks skipped by their lengths), reading them as
    Pillow's reader does: bytes that start no block are skipped, and a frame whose rectangle
    reaches past the canvas grows the canvas from that frame on (a 100 x 100 header can grow
    to 81 Mpx at frame 1), which is why the canvas is given per frame.

    Args:
        data: The GIF file.
        cap: The walk stops after ``cap + 1`` frames ("more than cap").
        deadline: Checked every :data:`_GIF_CHECK_EVERY` sub-blocks (a 20 MB file of
            one-byte sub-blocks is millions of them).

    Returns:
        One ``(width, height)`` per frame, in order, at most ``cap + 1`` of them.

    Raises:
        ImageRejectedError: ``truncated`` when the data ends inside a block, ``corrupt`` when
            it has no frame at all, ``deadline_exceeded``.
    """
    size = len(data)
    if size < 13 or data[:3] != b"GIF":
        raise ImageRejectedError("corrupt", "no GIF logical screen descriptor")
    width, height = struct.unpack_from("<2H", data, 6)
    flags = data[10]
    position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    canvases: list[tuple[int, int]] = []
    since_check = 0
    while len(canvases) <= cap:
        found = _GIF_BLOCK.search(data, position)
        if found is None:
            break  # ends without a trailer: reported as truncated once the pixels decoded
        position = found.start() + 1
        introducer = data[found.start()]
        if introducer == 0x3B:
            break
        if introducer == 0x21:  # extension: a label byte, then sub-blocks
            position, skipped = _skip_gif_sub_blocks(data, position + 1)
        else:  # image descriptor: rectangle, flags, local colour table, LZW code size, data
            if position + 10 > size:
                raise ImageRejectedError("truncated", "GIF data ends inside an image descriptor")
            left, top, frame_width, frame_height = struct.unpack_from("<4H", data, position)
            local = data[position + 8]
            position += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            position, skipped = _skip_gif_sub_blocks(data, position)
            width, height = max(width, left + frame_width), max(height, top + frame_height)
            canvases.append((width, height))
        since_check += skipped
        if deadline is not None and since_check >= _GIF_CHECK_EVERY:
            since_check = 0
            deadline.check("the GIF's frames were counted")
    if not canvases:
        raise ImageRejectedError("corrupt", "GIF has no image")
    return canvases


def _heif_image_sizes(data: bytes, cap: int) -> list[tuple[int, int]]:
    """The size of each top-level image of a HEIF file, from its boxes (nothing decoded).

    Read with pillow-heif's own parser rather than by seeking Pillow's image: its ``seek``
    allocates a canvas of the next image's size before anything could check that size.
    """
    heif = open_heif(io.BytesIO(data))
    return [tuple(heif[index].size) for index in range(min(len(heif), cap + 1))]


def _frame_canvases(
    image: Image.Image, data: bytes, cap: int, deadline: Deadline | None = None
) -> list[tuple[int, int]]:
    """The canvas of every frame (page), learned without decoding one: at most ``cap + 1``.

    GIF: its blocks are walked (:func:`gif_frame_canvases`). APNG, WebP, AVIF: the frame count
    of the header or index, every frame on the stated canvas. HEIF: each image's size from its
    boxes. TIFF pages and MPO images each state their own size in a header that ``seek`` reads
    without decoding pixels; they are walked one past the cap, never further.
    """
    try:
        if image.format == "GIF":
            return gif_frame_canvases(data, cap, deadline)
        if not getattr(image, "is_animated", False):
            return [image.size]
        if image.format in _SHARED_CANVAS:
            return [image.size] * min(int(image.n_frames), cap + 1)
        if image.format == "HEIF":
            return _heif_image_sizes(data, cap)
        canvases = [image.size]
        while len(canvases) <= cap:
            if deadline is not None:
                deadline.check(f"page {len(canvases)} was read")
            try:
                _seek(image, len(canvases))
            except EOFError:
                break
            canvases.append(image.size)
        _seek(image, 0)
        return canvases
    except ImageRejectedError:
        raise
    except Exception as exc:  # any decoder failure on these bytes: see _decoder_failure
        cut = image.format == "GIF" and not data.rstrip(b"\x00").endswith(b";")
        raise ImageRejectedError(
            "truncated" if cut else "corrupt", _decoder_failure("frames", exc)
        ) from exc


def _seek(image: Image.Image, frame: int) -> None:
    """``image.seek(frame)``; Pillow's own pixel guard at a seek becomes ``decompression_bomb``.

    EOFError (no such frame) is left to the caller.
    """
    try:
        with warnings.catch_warnings():
            # The frame's canvas is checked against the caller's `max_pixels` right after.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.seek(frame)
    except Image.DecompressionBombError as exc:
        raise ImageRejectedError("decompression_bomb", f"frame {frame}: {exc}") from exc


def _check_canvas(
    size: tuple[int, int], frame: int, max_pixels: int, max_aspect_ratio: float | None = None
) -> None:
    """Refuse a frame's canvas above ``max_pixels`` or ``max_aspect_ratio`` (same reasons as
    an oversized or extreme first frame: ``decompression_bomb``, ``extreme_aspect_ratio``)."""
    width, height = size
    where = "" if frame == 0 else f"frame {frame}: canvas "
    if width * height > max_pixels:
        raise ImageRejectedError(
            "decompression_bomb",
            f"{where}{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}",
        )
    if max_aspect_ratio is not None and max(width, height) > max_aspect_ratio * max(
        1, min(width, height)
    ):
        raise ImageRejectedError(
            "extreme_aspect_ratio", f"{where}{width}x{height} is more than {max_aspect_ratio}:1"
        )


def _checked_frame_count(
    image: Image.Image, data: bytes, max_frames: int, max_pixels: int
) -> tuple[int, bool]:
    """Frames of the file (``max_frames + 1`` meaning more), every canvas checked for pixels.

    Returns:
        The count, and whether it is above ``max_frames``.
    """
    canvases = _frame_canvases(image, data, max_frames)
    for frame, canvas in enumerate(canvases[:max_frames]):
        _check_canvas(canvas, frame, max_pixels)
    return len(canvases), len(canvases) > max_frames


def frames_to_decode(n_frames: int, frames_to_score: int) -> list[int]:
    """Indices of up to ``frames_to_score`` frames spread evenly over ``n_frames``.

    The first and the last frame are always among them, so content shown only at the end of
    an animation (after an innocent first frame) is seen.
    """
    if n_frames <= frames_to_score:
        return list(range(n_frames))
    if frames_to_score == 1:
        return [0]
    step = (n_frames - 1) / (frames_to_score - 1)
    return sorted({round(i * step) for i in range(frames_to_score)})


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception as exc:  # a malformed EXIF block is corruption of the file, not a crash
        raise ImageRejectedError("corrupt", f"unreadable EXIF orientation: {exc}") from exc


def _shrunk_rgb(frame: Image.Image, orientation: int, min_side: int) -> Image.Image:
    """One decoded frame as upright RGB, shrunk (before colour conversion) to >= ``min_side``."""
    if frame.mode in _WIDE_GRAY_MODES:
        frame = to_8bit_gray(frame)
    elif frame.mode not in _REDUCIBLE_MODES:
        frame = to_rgb(frame)
    # An integer box reduction keeps both sides at least `min_side`: the model's own resize
    # (antialiased) then works from at least twice its input size.
    factor = min(frame.size) // max(1, min_side)
    if factor >= 2:
        frame = frame.reduce(factor)
    if orientation in _TRANSPOSE:
        frame = frame.transpose(_TRANSPOSE[orientation])
    return to_rgb(frame)


def decode_for_model(
    data: bytes,
    *,
    min_side: int,
    limits: DecodeLimits | None = None,
    deadline: Deadline | None = None,
) -> list[Image.Image]:
    """Decode the frames a model should see, with bounded memory and CPU per file.

    Unlike :func:`decode_image`, which returns the first frame at full size, this decodes up to
    ``limits.frames_to_score`` frames spread over an animation (or a multi-page TIFF), shrinks
    each one before any colour conversion (JPEG DCT scaling while decoding, then an integer
    box reduction) to no less than ``min_side`` pixels a side, and refuses files whose cost is
    out of proportion to their size: extreme aspect ratios, too many frames, or more pixels x
    frames to decode than ``limits.max_decode_pixels``.

    Every limit holds for every frame, before the work that scales with it: frames are counted
    and their canvases learned without decoding any (:func:`_frame_canvases`), and the file is
    refused at once if any frame to be decoded breaks a limit. Then, after every ``seek``, the
    frame's real canvas is checked again (size, aspect ratio, the remaining decode budget) and
    the deadline is checked before each frame is decoded: a header that lies costs at most
    one frame.

    Args:
        data: The encoded file contents.
        min_side: Smallest side each returned frame keeps (twice the model's input side).
        limits: The bounds (defaults: :class:`DecodeLimits`).
        deadline: The request's deadline, checked between frames (none: no time limit).

    Returns:
        Upright RGB frames, in animation order (one for a still image).

    Raises:
        ImageRejectedError: For every reason of :func:`decode_image`, and
            ``extreme_aspect_ratio``, ``too_many_frames``, ``decode_budget`` or
            ``deadline_exceeded``. An oversized canvas of any frame is ``decompression_bomb``,
            as an oversized first frame is.
    """
    limits = limits or DecodeLimits()
    _check_container(data)
    image = _open(data, limits.max_pixels)
    image_format = image.format
    indices, decoded = _plan_frames(image, image_format, data, limits, deadline)
    if image_format == "JPEG":
        # libjpeg scales while decoding (1/2 .. 1/8): a 50 Mpx photo never exists at full size.
        image.draft(None, (min_side, min_side))
    frames = _decode_frames(
        image, decoded, set(indices), limits=limits, min_side=min_side, deadline=deadline
    )
    _check_complete(data, image_format)
    return frames


def _plan_frames(
    image: Image.Image,
    image_format: str | None,
    data: bytes,
    limits: DecodeLimits,
    deadline: Deadline | None,
) -> tuple[list[int], list[int]]:
    """The frames to score and the frames to decode for them, every limit checked first.

    Raises:
        ImageRejectedError: ``too_many_frames``, ``decode_budget``, or a canvas of a frame
            to decode out of bounds.
    """
    _check_canvas(image.size, 0, limits.max_pixels, limits.max_aspect_ratio)
    canvases = _frame_canvases(image, data, limits.max_frames, deadline)
    if len(canvases) > limits.max_frames:
        raise ImageRejectedError("too_many_frames", f"more than {limits.max_frames} frames (pages)")
    indices = frames_to_decode(len(canvases), limits.frames_to_score)
    from_start = image_format in _DECODED_FROM_START
    decoded = list(range(indices[-1] + 1)) if from_start else indices
    for frame in decoded:
        _check_canvas(canvases[frame], frame, limits.max_pixels, limits.max_aspect_ratio)
    planned = sum(canvases[frame][0] * canvases[frame][1] for frame in decoded)
    if planned > limits.max_decode_pixels:
        width, height = max(canvases[frame] for frame in decoded)
        raise ImageRejectedError(
            "decode_budget",
            f"{planned} pixels to decode ({len(decoded)} frames, up to {width}x{height}) "
            f"exceeds the budget of {limits.max_decode_pixels} pixels",
        )
    return indices, decoded


def _decode_frames(
    image: Image.Image,
    decoded: list[int],
    to_score: set[int],
    *,
    limits: DecodeLimits,
    min_side: int,
    deadline: Deadline | None,
) -> list[Image.Image]:
    """Decode ``decoded`` in order, keeping the shrunk upright RGB copies of ``to_score``."""
    frames = []
    spent = 0
    for frame in decoded:
        if deadline is not None:
            deadline.check(f"frame {frame} was decoded")
        if frame != image.tell():
            _step_to(image, frame)
        spent = _load_frame(image, frame, spent, limits)
        if frame == decoded[0]:
            # Read once the pixels loaded: a damaged file is reported as such first.
            orientation = _orientation(image)
        if frame not in to_score:
            continue
        try:
            shrunk = _shrunk_rgb(image, orientation, min_side)
            # An RGB frame that needed no change is `image` itself, which the next seek reuses.
            frames.append(shrunk.copy() if shrunk is image else shrunk)
        except (ValueError, OSError) as exc:  # an exotic mode Pillow cannot turn into RGB
            raise ImageRejectedError(
                "unsupported_format", f"pixel mode {image.mode} cannot be converted: {exc}"
            ) from exc
    return frames


def _step_to(image: Image.Image, frame: int) -> None:
    # An animation steps one frame at a time (what Pillow's seek does inside anyway),
    # so the checks below and the deadline hold between any two frames.
    try:
        _seek(image, frame)
    except ImageRejectedError:
        raise
    except Exception as exc:  # damaged later frames: see _decoder_failure
        raise ImageRejectedError("corrupt", _decoder_failure("frames", exc)) from exc


def _load_frame(image: Image.Image, frame: int, spent: int, limits: DecodeLimits) -> int:
    """Load the current frame within the limits; the pixels decoded so far, this one included.

    Raises:
        ImageRejectedError: ``decode_budget``, or the frame's real canvas out of bounds.
    """
    # The header may have lied: the canvas this frame really decodes onto decides.
    _check_canvas(image.size, frame, limits.max_pixels, limits.max_aspect_ratio)
    spent += image.size[0] * image.size[1]
    if spent > limits.max_decode_pixels:
        raise ImageRejectedError(
            "decode_budget",
            f"frame {frame} ({image.size[0]}x{image.size[1]}) takes the pixels decoded to "
            f"{spent}, over the budget of {limits.max_decode_pixels}",
        )
    _load(image)
    # A HEIF image may change size while decoding: what was decoded is checked too.
    _check_canvas(image.size, frame, limits.max_pixels, limits.max_aspect_ratio)
    return spent
