"""What we send for one image: an ``S3Object`` reference or bytes the API accepts.

Rekognition takes JPEG or PNG only, at most 5 MB as bytes and 15 MB as an S3 object, at least
80 px a side. Only baseline RGB/gray JPEG and 8-bit PNG go as they are: everything else (CMYK or
progressive JPEG, 16-bit or animated PNG, WebP, HEIC, BMP, ...) is converted here to an RGB JPEG
(decoded by :func:`eyecatcher.images.decode_image`, so orientation and transparency are handled
as everywhere else in the project), its quality stepped down and then its size, until it fits.

An image passed by S3 reference must still be the object ingestion hashed: its ``VersionId`` is
pinned when the bucket is versioned, and its ETag (when ingestion recorded one) or else its
content is checked against ingestion before the request is built.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
from dataclasses import dataclass
from typing import Any

from PIL import Image

from eyecatcher import storage
from eyecatcher.images import decode_image

#: Largest image the API accepts as raw bytes.
MAX_BYTES = 5 * 1024 * 1024
#: Largest image the API accepts as an S3 object.
MAX_S3_OBJECT_BYTES = 15 * 1024 * 1024
#: Smallest side the API accepts.
MIN_SIDE = 80
#: Formats the API accepts as they are (MPO is a JPEG container, but re-encoding is safer).
API_FORMATS = frozenset({"JPEG", "PNG"})
#: Largest side a JPEG can have (the format stores it in 16 bits; Pillow refuses above 65,500).
MAX_JPEG_SIDE = 65_500
#: JPEG qualities tried, in order, before an image is downscaled.
QUALITY_STEPS = (90, 80, 70, 60)


class PayloadError(ValueError):
    """An image cannot be turned into an acceptable request; nothing was sent.

    Attributes:
        reason: Machine-readable reason (``unreadable``, ``too_small``, ``too_large``,
            ``changed_since_ingestion``, ``error`` (anything unexpected), or an
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
        verify_s3_object: Check that an object passed by reference is still the one ingestion
            hashed (ETag or content) and pin its ``VersionId``.
    """

    max_bytes: int = MAX_BYTES
    max_s3_object_bytes: int = MAX_S3_OBJECT_BYTES
    min_side: int = MIN_SIDE
    jpeg_quality: int = 90
    use_s3_object: bool = True
    verify_s3_object: bool = True

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> PayloadLimits:
        """Build limits from the ``labelling.images`` parameter block.

        Raises:
            ValueError: On a key that is not a limit (a typo would otherwise be ignored).
        """
        raw = dict(params or {})
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"labelling.images: unknown keys {sorted(unknown)}; "
                f"known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**raw)


@dataclass(frozen=True)
class Payload:
    """The ``Image`` argument of ``DetectModerationLabels`` and how it was obtained.

    Attributes:
        image: ``{"Bytes": ...}`` or ``{"S3Object": {"Bucket", "Name"[, "Version"]}}``.
        kind: ``bytes`` or ``s3object``.
        prepared: ``as_is``, ``converted`` (re-encoded to JPEG) or ``downscaled``.
        converted_from: Why the original could not go as it was (``JPEG CMYK``, ``16-bit PNG``,
            ``WEBP``, ...), or ``None``.
        s3_object: The S3 object's ``etag`` and ``version_id`` when passed by reference.
    """

    image: dict[str, Any]
    kind: str
    prepared: str
    converted_from: str | None = None
    s3_object: dict[str, str | None] | None = None


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


def _png_bit_depth(data: bytes) -> int | None:
    # IHDR is the first chunk: 8-byte signature, length, "IHDR", width, height, bit depth.
    if len(data) >= 25 and data[12:16] == b"IHDR":
        return int(struct.unpack(">B", data[24:25])[0])
    return None


def conversion_needed(data: bytes) -> str | None:
    """Say why an image cannot go to Rekognition as it is, or ``None`` when it can.

    Only baseline RGB or grayscale JPEG and single-frame 8-bit PNG pass unchanged.

    Args:
        data: The file's contents.

    Returns:
        A short reason (``JPEG CMYK``, ``progressive JPEG``, ``16-bit PNG``, ``animated PNG``,
        ``WEBP``, ``unidentified``...) or ``None``.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, mode = image.format, image.mode
            progressive = bool(image.info.get("progressive") or image.info.get("progression"))
            frames = int(getattr(image, "n_frames", 1))
    except Exception:
        # Any decoder failure means "not as it is"; decoding it for conversion names the reason.
        return "unidentified"
    if fmt == "JPEG":
        if mode not in {"RGB", "L"}:
            return f"JPEG {mode}"
        return "progressive JPEG" if progressive else None
    if fmt == "PNG":
        depth = _png_bit_depth(data)
        if depth != 8:
            return f"{depth}-bit PNG"
        return "animated PNG" if frames > 1 else None
    return str(fmt)


def fit_bytes(data: bytes, limits: PayloadLimits) -> tuple[bytes, str]:
    """Re-encode an image as an RGB JPEG that fits ``limits.max_bytes``.

    The quality is stepped down first (from ``limits.jpeg_quality`` through
    :data:`QUALITY_STEPS`); only then is the image downscaled, never under ``min_side``.

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
    prepared = "converted"
    if max(image.size) > MAX_JPEG_SIDE:
        scale = MAX_JPEG_SIDE / max(image.size)
        image = _resize(image, scale, limits)
        prepared = "downscaled"
    qualities = [limits.jpeg_quality] + [q for q in QUALITY_STEPS if q < limits.jpeg_quality]
    for quality in qualities:
        encoded = _encode_jpeg(image, quality)
        if len(encoded) <= limits.max_bytes:
            return encoded, prepared
    while len(encoded) > limits.max_bytes:
        # JPEG size is roughly proportional to the pixel count; aim a little under the limit.
        image = _resize(image, math.sqrt(limits.max_bytes / len(encoded)) * 0.9, limits)
        encoded = _encode_jpeg(image, qualities[-1])
        prepared = "downscaled"
    return encoded, prepared


def _resize(image: Image.Image, scale: float, limits: PayloadLimits) -> Image.Image:
    width, height = image.size
    new_size = (int(width * scale), int(height * scale))
    if min(new_size) < limits.min_side:
        raise PayloadError(
            "too_large",
            f"cannot fit {limits.max_bytes} bytes without going under {limits.min_side} px",
        )
    return image.resize(new_size, Image.Resampling.LANCZOS)


def read_uri(uri: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """Read an image through the storage layer (a local path or ``s3://`` included)."""
    try:
        return storage.read_bytes(uri, storage_options)
    except (OSError, ValueError) as exc:
        raise PayloadError("unreadable", f"{uri}: {exc}") from exc


def _unquote(etag: Any) -> str | None:
    return None if etag in (None, "") else str(etag).strip('"')


def verified_s3_object(
    uri: str,
    sha256: str | None,
    etag: str | None,
    storage_options: dict[str, Any] | None = None,
) -> tuple[dict[str, str | None], bytes | None]:
    """Check that an S3 object is still what ingestion hashed; return its ETag and VersionId.

    The ETag is compared with ``etag`` when ingestion recorded one; otherwise the object is
    read and its sha256 compared with ``sha256``.

    Args:
        uri: ``s3://bucket/key``.
        sha256: Ingestion's hash of the object.
        etag: Ingestion's ETag of the object, or ``None``.
        storage_options: fsspec options (endpoint, region; credentials come from Kedro
            credentials or the AWS default chain).

    Returns:
        ``{"etag": ..., "version_id": ...}`` (``version_id`` is ``None`` when unversioned), and
        the object's contents when they had to be read.

    Raises:
        PayloadError: ``changed_since_ingestion`` when the object was overwritten, or
            ``unreadable``.
    """
    # Version-aware, so that the content checked is the version pinned in the request.
    fs, path = storage.filesystem(uri, {"version_aware": True, **(storage_options or {})})
    try:
        info = fs.info(path)
    except Exception as exc:
        # s3fs raises botocore's NoCredentialsError and friends, not only OSError.
        raise PayloadError("unreadable", f"{uri}: {type(exc).__name__}: {exc}") from exc
    version = info.get("VersionId") or info.get("version_id")
    version = None if version in (None, "null") else str(version)
    found = _unquote(info.get("ETag") or info.get("etag"))
    data = None
    if etag is not None:
        if found != _unquote(etag):
            raise PayloadError(
                "changed_since_ingestion",
                f"{uri}: ETag {found} differs from ingestion's {_unquote(etag)}; re-run ingestion",
            )
    elif sha256 is not None:
        with fs.open(path, "rb", **({"version_id": version} if version else {})) as handle:
            data = handle.read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise PayloadError(
                "changed_since_ingestion",
                f"{uri}: its content no longer has ingestion's sha256 {sha256[:16]}…; "
                "re-run ingestion",
            )
    return {"etag": found, "version_id": version}, data


def build_payload(
    uri: str,
    image_format: str | None,
    size_bytes: int | None,
    limits: PayloadLimits,
    storage_options: dict[str, Any] | None = None,
    *,
    sha256: str | None = None,
    etag: str | None = None,
) -> Payload:
    """Decide how to send one image, reading and converting it only when needed.

    Args:
        uri: Local path or ``s3://`` URI.
        image_format: Pillow format recorded by ingestion (``JPEG``, ``PNG``, ``WEBP``, ...).
        size_bytes: File size recorded by ingestion.
        limits: The API limits.
        storage_options: fsspec options for remote reads (endpoint, region). S3 credentials
            never go here: they come from Kedro credentials (``conf/local/credentials.yml``)
            or the AWS default chain.
        sha256: Ingestion's hash, to verify an S3 object passed by reference.
        etag: Ingestion's ETag of an S3 object, when it recorded one.

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
        obj: dict[str, str | None] | None = None
        data: bytes | None = None
        reference: dict[str, Any] = {"Bucket": bucket, "Name": key}
        if limits.verify_s3_object:
            obj, data = verified_s3_object(uri, sha256, etag, storage_options)
            if obj["version_id"]:
                reference["Version"] = obj["version_id"]
        if data is None or conversion_needed(data) is None:
            return Payload({"S3Object": reference}, "s3object", "as_is", s3_object=obj)
    else:
        data = None
    if data is None:
        data = read_uri(uri, storage_options)
    reason = conversion_needed(data)
    if reason is None and len(data) <= limits.max_bytes:
        return Payload({"Bytes": data}, "bytes", "as_is")
    encoded, prepared = fit_bytes(data, limits)
    return Payload({"Bytes": encoded}, "bytes", prepared, converted_from=reason or "over max_bytes")
