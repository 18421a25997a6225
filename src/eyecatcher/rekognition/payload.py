"""What we send for one image: an ``S3Object`` reference or bytes the API accepts.

Rekognition takes JPEG or PNG only, at most 5 MB as bytes and 15 MB as an S3 object, at least
80 px a side. Anything else is converted here (decoded by :func:`eyecatcher.images.decode_image`
so that orientation and transparency are handled as everywhere else in the project).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import fsspec
from PIL import Image

from eyecatcher.images import decode_image

#: Largest image the API accepts as raw bytes.
MAX_BYTES = 5 * 1024 * 1024
#: Largest image the API accepts as an S3 object.
MAX_S3_OBJECT_BYTES = 15 * 1024 * 1024
#: Smallest side the API accepts.
MIN_SIDE = 80
#: Formats the API accepts as they are (MPO is a JPEG container, but re-encoding is safer).
API_FORMATS = frozenset({"JPEG", "PNG"})


class PayloadError(ValueError):
    """An image cannot be turned into an acceptable request; nothing was sent.

    Attributes:
        reason: Machine-readable reason (``unreadable``, ``too_small``, ``too_large``, or an
            :class:`eyecatcher.images.ImageRejectedError` reason).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class PayloadLimits:
    """The API limits and re-encoding settings.

    Attributes:
        max_bytes: Bytes limit for inline images.
        max_s3_object_bytes: Size limit for images passed by S3 reference.
        min_side: Smallest side (pixels) a downscaled image may have.
        jpeg_quality: Quality used when re-encoding to JPEG.
        use_s3_object: Pass ``s3://`` images by reference when they qualify.
    """

    max_bytes: int = MAX_BYTES
    max_s3_object_bytes: int = MAX_S3_OBJECT_BYTES
    min_side: int = MIN_SIDE
    jpeg_quality: int = 90
    use_s3_object: bool = True

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> PayloadLimits:
        """Build limits from the ``labelling.images`` parameter block."""
        return cls(**(params or {}))


@dataclass(frozen=True)
class Payload:
    """The ``Image`` argument of ``DetectModerationLabels`` and how it was obtained.

    Attributes:
        image: ``{"Bytes": ...}`` or ``{"S3Object": {"Bucket": ..., "Name": ...}}``.
        kind: ``bytes`` or ``s3object``.
        prepared: ``as_is``, ``converted`` (re-encoded to JPEG) or ``downscaled``.
    """

    image: dict[str, Any]
    kind: str
    prepared: str


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into bucket and key."""
    without = uri[len("s3://") :]
    bucket, _, key = without.partition("/")
    if not bucket or not key:
        raise PayloadError("unreadable", f"{uri} is not an s3://bucket/key URI")
    return bucket, key


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def fit_bytes(data: bytes, limits: PayloadLimits) -> tuple[bytes, str]:
    """Re-encode an image to JPEG and downscale it until it fits ``limits.max_bytes``.

    Args:
        data: The original file contents (any format :mod:`eyecatcher.images` decodes).
        limits: Size limits and JPEG quality.

    Returns:
        The JPEG bytes and ``converted`` or ``downscaled``.

    Raises:
        PayloadError: When the image cannot be decoded, is under ``min_side``, or cannot fit
            without going under ``min_side``.
    """
    try:
        image = decode_image(data)
    except ValueError as exc:  # ImageRejectedError is a ValueError with a reason
        raise PayloadError(getattr(exc, "reason", "unreadable"), str(exc)) from exc
    if min(image.size) < limits.min_side:
        raise PayloadError("too_small", f"{image.size} is under {limits.min_side} px a side")
    encoded = _encode_jpeg(image, limits.jpeg_quality)
    prepared = "converted"
    while len(encoded) > limits.max_bytes:
        # JPEG size is roughly proportional to the pixel count; aim a little under the limit.
        scale = math.sqrt(limits.max_bytes / len(encoded)) * 0.9
        width, height = image.size
        new_size = (int(width * scale), int(height * scale))
        if min(new_size) < limits.min_side:
            raise PayloadError(
                "too_large",
                f"cannot fit {limits.max_bytes} bytes without going under {limits.min_side} px",
            )
        image = image.resize(new_size, Image.Resampling.LANCZOS)
        encoded = _encode_jpeg(image, limits.jpeg_quality)
        prepared = "downscaled"
    return encoded, prepared


def read_uri(uri: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """Read an image from a local path or any fsspec URL (``s3://`` included)."""
    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as handle:
            return handle.read()
    except (OSError, ValueError) as exc:
        raise PayloadError("unreadable", f"{uri}: {exc}") from exc


def build_payload(
    uri: str,
    image_format: str | None,
    size_bytes: int | None,
    limits: PayloadLimits,
    storage_options: dict[str, Any] | None = None,
) -> Payload:
    """Decide how to send one image, reading and converting it only when needed.

    Args:
        uri: Local path or ``s3://`` URI.
        image_format: Pillow format recorded by ingestion (``JPEG``, ``PNG``, ``WEBP``, ...).
        size_bytes: File size recorded by ingestion.
        limits: The API limits.
        storage_options: fsspec options for remote reads (credentials, endpoint).

    Returns:
        The ``Image`` argument and how it was prepared.

    Raises:
        PayloadError: When the image cannot be read or made acceptable.
    """
    if (
        limits.use_s3_object
        and uri.startswith("s3://")
        and image_format in API_FORMATS
        and size_bytes is not None
        and size_bytes <= limits.max_s3_object_bytes
    ):
        bucket, key = split_s3_uri(uri)
        return Payload({"S3Object": {"Bucket": bucket, "Name": key}}, "s3object", "as_is")
    data = read_uri(uri, storage_options)
    if image_format in API_FORMATS and len(data) <= limits.max_bytes:
        return Payload({"Bytes": data}, "bytes", "as_is")
    encoded, prepared = fit_bytes(data, limits)
    return Payload({"Bytes": encoded}, "bytes", prepared)
