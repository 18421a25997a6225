"""Malformed requests that a moderation endpoint meets in the wild, and what a good answer is.

The staging smoke test sends each of these to the running server, then a good request: a bad
request must get a clear 4xx or a per-row error naming the problem, and must never take the
server down. The tests send the same list, so the product and its tests agree on what "bad
input" means.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests
from PIL import Image

from eyecatcher.serving.client import (
    dataframe_split_body,
    is_missing,
    normalise_prediction,
    post_invocations,
    request_body,
    served_rows,
)
from eyecatcher.serving_model.contract import encode_image


@dataclass(frozen=True)
class BadRequestProbe:
    """One malformed request and the answers that count as handling it well.

    Attributes:
        name: Short identifier used in reports (``invalid_base64``, ``empty_payload``, ...).
        body: The raw HTTP body sent to ``/invocations``.
        content_type: The ``Content-Type`` header.
        reasons: Substrings of which at least one must appear in the per-row ``error`` (when the
            server answers 200) or in the response body (when it answers 4xx).
        row_level: True when the problem is in one image (a per-row error is the expected
            answer, a 4xx is accepted too); False when the whole request is unusable (4xx only).
    """

    name: str
    body: bytes
    content_type: str = "application/json"
    reasons: tuple[str, ...] = field(default_factory=tuple)
    row_level: bool = True


def _png(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def sample_jpeg(size: int = 128, seed: int = 0) -> bytes:
    """A small, valid, harmless JPEG (smooth gradient plus noise) for probes and tests."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float64)
    base = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=-1)
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy, "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb).

    Only the header matters: a decoder that trusts it would allocate width x height x 3 bytes
    (30 GB at the default size). The IDAT chunk holds one compressed row, so the file is a few
    hundred bytes.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * min(width, 1024)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def oversized_png(min_bytes: int) -> bytes:
    """A valid PNG of random noise at least ``min_bytes`` long (noise does not compress)."""
    side = int(np.ceil(np.sqrt(min_bytes / 3.0))) + 16
    return _png(side, side, seed=1)


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode("utf-8")


def one_row_png(width: int = 1_000_000) -> bytes:
    """A ``width`` x 1 PNG (~1 kB): an aspect ratio no photo has, refused from its header."""
    buffer = io.BytesIO()
    Image.new("L", (width, 1), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def tiny_gif() -> bytes:
    """A 1x1 GIF (~35 bytes): many rows of it make a small body with a large row count."""
    buffer = io.BytesIO()
    Image.new("P", (1, 1), 0).save(buffer, format="GIF")
    return buffer.getvalue()


def bad_request_probes(
    max_image_bytes: int | None = None,
    max_rows: int | None = None,
    max_explain_rows: int | None = None,
) -> list[BadRequestProbe]:
    """Every malformed request the serving contract promises to survive.

    Args:
        max_image_bytes: The served model's per-image size limit. When given, an image just
            over it is sent as the ``too_large`` probe; when None that probe is left out.
        max_rows: The served model's row limit per request. When given, a request one row
            over it is sent as the ``too_many_rows`` probe; when None that probe is left out.
        max_explain_rows: The served model's limit on rows asking for a heatmap. When given
            (a model that takes the ``explain`` column), a malformed ``explain`` value and a
            request one over the limit are sent as the ``malformed_explain`` and
            ``too_many_explain_rows`` probes.

    Returns:
        The probes, in a stable order.
    """
    jpeg = sample_jpeg()
    return [
        *_bad_image_probes(jpeg, max_image_bytes),
        *_bad_body_probes(jpeg),
        *_over_limit_probes(jpeg, max_rows, max_explain_rows),
    ]


def _row(image: bytes, row_id: str) -> bytes:
    return _json(dataframe_split_body([encode_image(image)], [row_id]))


def _bad_image_probes(jpeg: bytes, max_image_bytes: int | None) -> list[BadRequestProbe]:
    """Rows whose image is bad: each gets a row error, the request still answers 200."""
    probes = [
        BadRequestProbe(
            "invalid_base64",
            _json(dataframe_split_body(["this is %% not base64 !!"], ids=["bad-b64"])),
            reasons=("invalid_base64", "base64"),
        ),
        BadRequestProbe(
            "not_an_image", _row(b"plain text, not an image" * 8, "txt"), reasons=("not_an_image",)
        ),
        BadRequestProbe(
            "truncated_image", _row(jpeg[: len(jpeg) // 2], "cut"), reasons=("truncated", "corrupt")
        ),
        BadRequestProbe(
            "decompression_bomb", _row(bomb_png(), "bomb"), reasons=("decompression_bomb",)
        ),
    ]
    if max_image_bytes is not None:
        probes.append(
            BadRequestProbe(
                "too_large_image",
                _row(oversized_png(max_image_bytes + 1), "big"),
                reasons=("too_large", "too large", "exceeds"),
            )
        )
    probes.append(
        BadRequestProbe(
            "extreme_aspect_ratio", _row(one_row_png(), "thin"), reasons=("extreme_aspect_ratio",)
        )
    )
    return probes


def _bad_body_probes(jpeg: bytes) -> list[BadRequestProbe]:
    """Requests that are malformed as a whole: refused with a clear message."""
    return [
        BadRequestProbe(
            "empty_payload",
            _json({"dataframe_split": {"columns": ["image"], "data": []}}),
            reasons=("empty", "no rows", "no images"),
            row_level=False,
        ),
        BadRequestProbe(
            "missing_image_column",
            _json({"dataframe_split": {"columns": ["picture"], "data": [[encode_image(jpeg)]]}}),
            reasons=("image",),
            row_level=False,
        ),
        BadRequestProbe(
            "not_json",
            b"this body is not JSON {",
            reasons=("json", "JSON", "decode", "parse"),
            row_level=False,
        ),
    ]


def _over_limit_probes(
    jpeg: bytes, max_rows: int | None, max_explain_rows: int | None
) -> list[BadRequestProbe]:
    """Requests one over a declared limit (only for the limits the model declares)."""
    probes = []
    if max_rows is not None:
        probes.append(
            BadRequestProbe(
                "too_many_rows",
                _json(dataframe_split_body([encode_image(tiny_gif())] * (max_rows + 1))),
                reasons=("max_rows",),
                row_level=False,
            )
        )
    if max_explain_rows is not None:
        asking = max_explain_rows + 1
        probes.append(
            BadRequestProbe(
                "malformed_explain",
                _json(dataframe_split_body([encode_image(jpeg)], ["why"], explain=["yes"])),
                reasons=("explain",),
                row_level=False,
            )
        )
        probes.append(
            BadRequestProbe(
                "too_many_explain_rows",
                _json(
                    dataframe_split_body(
                        [encode_image(tiny_gif())] * asking, explain=[True] * asking
                    )
                ),
                reasons=("max_explain_rows",),
                row_level=False,
            )
        )
    return probes


def run_probe(url: str, probe: BadRequestProbe, timeout_s: float) -> dict[str, Any]:
    """Send one malformed request and judge the answer (see :class:`BadRequestProbe`).

    Returns:
        ``name``, ``status``, ``handled`` (a clear 4xx or per-row error naming the problem),
        and ``answer`` (the per-row error or the start of the 4xx body).
    """
    try:
        status, text, _ = post_invocations(url, probe.body, probe.content_type, timeout_s)
    except requests.RequestException as exc:
        return {"name": probe.name, "status": None, "handled": False, "answer": repr(exc)}
    answer = text[:500]
    if 400 <= status < 500:
        handled = any(reason in text for reason in probe.reasons) if probe.reasons else True
    elif status == 200 and probe.row_level:
        try:
            rows = json.loads(text)["predictions"]
            errors = [str(row.get("error")) for row in rows]
        except (ValueError, KeyError, TypeError, AttributeError):
            errors = []
        answer = "; ".join(errors)[:500]
        handled = bool(errors) and all(
            not is_missing(error) and error != "None" and any(r in error for r in probe.reasons)
            for error in errors
        )
    else:
        handled = False
    return {"name": probe.name, "status": status, "handled": handled, "answer": answer}


def good_request_works(url: str, timeout_s: float) -> bool:
    """Whether the server still answers a valid one-image request with a verdict."""
    body = request_body([sample_jpeg(seed=7)], ["alive"])
    try:
        status, text, _ = post_invocations(url, body, timeout_s=timeout_s)
        return status == 200 and normalise_prediction(served_rows(text)[0])["error"] is None
    except (requests.RequestException, ValueError, KeyError, IndexError):
        return False
