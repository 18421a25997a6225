"""Decoding, validation and normalisation of images, shared by every pipeline.

Ingestion, labelling, training and serving all read images through this module so that an
image means the same thing everywhere: the same orientation (EXIF), the same colour handling
(palette, alpha, CMYK, 16-bit) and the same notion of "bad input".
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

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

#: Default minimum side in pixels (Rekognition rejects images under 80 px a side).
DEFAULT_MIN_SIDE = 80


class ImageRejectedError(ValueError):
    """An input that cannot be used as an image, with a machine-readable reason.

    Attributes:
        reason: One of ``empty_file``, ``not_an_image``, ``unsupported_format``, ``truncated``,
            ``corrupt``, ``decompression_bomb``, ``too_small``, ``invalid_base64``.
        detail: A human-readable explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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


def _frame_count(image: Image.Image, data: bytes) -> int:
    """Number of frames; counting them walks the whole file, so damage can surface here."""
    try:
        return int(getattr(image, "n_frames", 1))
    except Exception as exc:  # any decoder failure on these bytes: see _decoder_failure
        # A GIF ends with its trailer byte ";": without it, the file was cut short (an
        # interrupted download of an animation fails here, in a later frame).
        cut = image.format == "GIF" and not data.endswith(b";")
        reason = "truncated" if cut else "corrupt"
        raise ImageRejectedError(reason, _decoder_failure("frames", exc)) from exc


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
    data: bytes, *, min_side: int = DEFAULT_MIN_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageInfo:
    """Fully decode ``data`` and describe it, or say precisely why it is unusable.

    Args:
        data: The encoded file contents.
        min_side: Smallest acceptable width or height, in pixels.
        max_pixels: Largest acceptable width x height (decompression-bomb guard).

    Returns:
        The image's size (after EXIF orientation), format, mode and frame count.

    Raises:
        ImageRejectedError: When the bytes are empty, not an image, an unsupported format,
            truncated, corrupt, too large in pixels, or too small.
    """
    _check_container(data)
    image = _open(data, max_pixels)
    image_format = image.format
    mode = image.mode
    n_frames = _frame_count(image, data)
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


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB the same way everywhere.

    Transparent pixels are composited on ``background`` (not dropped to black), 16-bit
    grayscale keeps its brightness (0..65535 maps to 0..255, as image viewers show it), 32-bit
    integer and float grayscale, whose range the file does not state, are rescaled from their
    own minimum and maximum, CMYK goes through Pillow's conversion, palettes are expanded with
    their transparency.

    Args:
        image: A decoded image in any mode.
        background: The colour transparent areas are painted with.

    Returns:
        An ``RGB`` image of the same size.
    """
    if image.mode == "RGB":
        return image
    if image.mode in {"I;16", "I;16B", "I;16L", "I;16N"}:
        # The range of 16-bit samples is fixed: stretching each image to its own min/max would
        # turn a dark photo bright and a flat one black, i.e. change what the picture shows.
        array = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.rint(array / 257.0).astype(np.uint8)).convert("RGB")
    if image.mode in {"I", "F"}:
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
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
    if _frame_count(image, data) > 1:
        image.seek(0)
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
