"""The served model's request and response format (documented in ``docs/registry.md``).

Request: a DataFrame (from any standard MLflow payload: ``dataframe_split``,
``dataframe_records``, ``inputs``) with a string column ``image`` holding base64-encoded image
bytes and, optionally, a string column ``id`` that is passed through unchanged and a boolean
column ``explain`` that asks for a Grad-CAM heatmap of the row's class.

Response: one row per request row, in request order, with the columns of
:data:`OUTPUT_COLUMNS` (and :data:`EXPLAIN_COLUMNS` when the request has an ``explain``
column). A row whose image is unusable carries ``error`` and nulls elsewhere;
it never fails the other rows. A request that is unusable as a whole (no rows, no ``image``
column) raises :class:`mlflow.exceptions.MlflowException` with ``INVALID_PARAMETER_VALUE``,
which the MLflow scoring server answers with HTTP 400.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from eyecatcher.images import (
    DEFAULT_FRAMES_TO_SCORE,
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_MAX_DECODE_PIXELS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_PIXELS,
    DecodeLimits,
    ImageRejectedError,
)
from eyecatcher.serving_model.decision import DecisionPolicy, DecisionThresholds

#: Name of the request column with base64-encoded image bytes.
IMAGE_COLUMN = "image"
#: Name of the optional request column passed through to the response.
ID_COLUMN = "id"
#: Response columns, in order (``id`` only when the request has one).
OUTPUT_COLUMNS = (
    ID_COLUMN,
    "class",
    "probabilities",
    "unsafe_score",
    "decision",
    "model_name",
    "model_version",
    "error",
)
#: Name of the optional boolean request column that asks for a heatmap per row.
EXPLAIN_COLUMN = "explain"
#: Response columns added after :data:`OUTPUT_COLUMNS` when the request has an ``explain``
#: column: a base64 PNG heatmap and one sentence saying what it shows (or why there is none).
EXPLAIN_COLUMNS = ("heatmap_png", "heatmap_info")
#: Moderation decisions, from least to most severe.
DECISIONS = ("allow", "review", "block")

#: Default limit on the decoded size of one image (Rekognition's own limit is 5 MB of bytes).
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: Default limit on rows per request: a larger request is refused whole (HTTP 400).
DEFAULT_MAX_ROWS = 64
#: Default limit on rows that ask for a heatmap in one request: more is refused whole (HTTP 400).
DEFAULT_MAX_EXPLAIN_ROWS = 4
#: Default side of the served heatmap PNG, in pixels.
DEFAULT_HEATMAP_SIZE = 64
#: Default per-request deadline, in seconds of wall-clock time, counted from when the request
#: starts its work in the worker: rows (and frames) not reached by then get ``deadline_exceeded``.
#: Above a full ``max_rows`` request of the slowest served model on the 2-vCPU reference host
#: (64 x ViT-B/16 fp32 at ~0.44 s ≈ 28 s) and below the scoring server's 60 s request timeout,
#: so the model answers before the server gives up on the request (504).
DEFAULT_REQUEST_DEADLINE_S = 30.0
#: Runtimes that can serve the model (``onnxruntime`` always for int8).
RUNTIMES = ("torch", "onnxruntime")

# Browsers and many clients send data URLs; the prefix is metadata, not image bytes.
_DATA_URL_PREFIX = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)


def invalid_request(message: str) -> MlflowException:
    """An error about the request as a whole; the scoring server answers it with HTTP 400."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def request_frame(model_input: Any) -> pd.DataFrame:
    """Normalise what pyfunc ``predict`` receives into a DataFrame with an ``image`` column.

    Args:
        model_input: A DataFrame (what the scoring server passes after schema enforcement), a
            mapping of columns, or a list of row mappings.

    Returns:
        The request as a DataFrame with a fresh positional index.

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE`` when the request has no rows or no
            ``image`` column.
    """
    if isinstance(model_input, pd.DataFrame):
        frame = model_input
    elif isinstance(model_input, Mapping | list):
        frame = pd.DataFrame(model_input)
    else:
        raise invalid_request(
            f"expected a DataFrame with a string column '{IMAGE_COLUMN}', got "
            f"{type(model_input).__name__}"
        )
    if IMAGE_COLUMN not in frame.columns:
        raise invalid_request(
            f"the request has no '{IMAGE_COLUMN}' column (columns: {list(frame.columns)}); send "
            f"base64-encoded images in a string column named '{IMAGE_COLUMN}'"
        )
    if frame.empty:
        raise invalid_request("the request has no rows: send at least one image")
    return frame.reset_index(drop=True)


def check_row_count(frame: pd.DataFrame, max_rows: int) -> None:
    """Refuse a request with more than ``max_rows`` rows before any image is decoded.

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE`` (HTTP 400) naming the limit.
    """
    if len(frame) > max_rows:
        raise invalid_request(
            f"the request has {len(frame)} rows, more than this model's limit of {max_rows} "
            f"images per request (max_rows): split it into requests of at most {max_rows} rows"
        )


def explain_flags(frame: pd.DataFrame, max_explain_rows: int) -> list[bool]:
    """Which rows ask for a heatmap; refuse a malformed ``explain`` column or too many asks.

    ``explain`` is optional: without the column, or where a row leaves it empty (``null``, a
    missing key in ``dataframe_records``), no heatmap is made. Only JSON booleans are accepted,
    so that ``"false"`` can never turn into a costly ``true``.

    Args:
        frame: The request (see :func:`request_frame`).
        max_explain_rows: Most rows that may ask for a heatmap in one request.

    Returns:
        One flag per row.

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE`` (HTTP 400) for a value that is not a
            boolean, or more than ``max_explain_rows`` rows asking, before any image is decoded.
    """
    if EXPLAIN_COLUMN not in frame.columns:
        return [False] * len(frame)
    flags: list[bool] = []
    for position, value in enumerate(frame[EXPLAIN_COLUMN].tolist()):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            flags.append(False)
        elif isinstance(value, bool | np.bool_):
            flags.append(bool(value))
        else:
            raise invalid_request(
                f"'{EXPLAIN_COLUMN}' must be true, false or null; row {position} has "
                f"{type(value).__name__} {str(value)[:40]!r}"
            )
    asked = sum(flags)
    if asked > max_explain_rows:
        raise invalid_request(
            f"{asked} rows ask for a heatmap ('{EXPLAIN_COLUMN}': true), more than this model's "
            f"limit of {max_explain_rows} per request (max_explain_rows): ask for at most "
            f"{max_explain_rows} heatmaps per request"
        )
    return flags


def decode_base64_image(value: Any, *, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
    """Turn one request cell into encoded image bytes, or say why it cannot be one.

    Args:
        value: The cell of the ``image`` column: standard base64, optionally wrapped in a
            ``data:image/...;base64,`` URL and with line breaks.
        max_image_bytes: Largest accepted decoded size; checked before decoding so that a huge
            payload costs no memory.

    Returns:
        The encoded image file contents (JPEG, PNG, ...), not yet decoded into pixels.

    Raises:
        ImageRejectedError: ``invalid_base64`` for a missing, non-string or malformed value,
            ``empty_file`` for an empty one, ``too_large_file`` above ``max_image_bytes``.
    """
    if not isinstance(value, str):
        raise ImageRejectedError(
            "invalid_base64", f"expected a base64 string, got {type(value).__name__}"
        )
    text = _DATA_URL_PREFIX.sub("", value.strip(), count=1)
    # Line breaks (MIME base64) are dropped by str.split in C: a regex over a photo's
    # ~100 kB of base64 cost more than decoding it.
    text = "".join(text.split())
    if not text:
        raise ImageRejectedError("empty_file", "the image string is empty")
    # 4 base64 characters carry 3 bytes.
    approx_bytes = len(text) // 4 * 3
    if approx_bytes > max_image_bytes:
        raise ImageRejectedError(
            "too_large_file",
            f"about {approx_bytes} bytes exceeds the limit of {max_image_bytes} bytes",
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageRejectedError("invalid_base64", str(exc)) from exc


def encode_image(data: bytes) -> str:
    """Base64-encode image bytes for the ``image`` column (what clients do)."""
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class ServingConfig:
    """What the served model needs besides its weights; stored as ``serving_config.json``.

    Attributes:
        model_name: Registered model name.
        model_version: Registered model version this artefact was logged for.
        candidate: Training candidate the model came from.
        precision: ``fp32`` or ``int8`` (what the weights are).
        runtime: What computes the served probabilities: ``torch`` (the bundle's fp32 network)
            or ``onnxruntime`` (the int8 model, or the fp32 ONNX graph once packaging checked
            that it agrees with PyTorch; see :mod:`eyecatcher.serving_model.runtime_check`).
        runtime_check: What packaging measured when it chose the runtime of an fp32 model
            (max abs probability difference ONNX vs PyTorch, tolerance, outcome); ``None``
            when no fp32 ONNX graph was offered.
        classes: Class names in output order.
        safe_class: The class meaning "nothing to moderate".
        thresholds: The decision thresholds (review on the unsafe score, block per class),
            calibrated at the served precision; see :mod:`eyecatcher.serving_model.decision`.
        operating_threshold: The calibrated operating threshold (the review threshold as
            calibrated, recorded so a response can be traced to it; ``None`` when the
            thresholds were set by hand).
        max_pixels: Decompression-bomb guard passed to image decoding.
        max_image_bytes: Largest accepted encoded image.
        batch_size: Images (frames) per forward pass; decoded images are held for one batch
            at a time, whatever the request's size.
        max_rows: Largest number of rows in one request (more: HTTP 400).
        max_aspect_ratio: Longer side / shorter side beyond which an image is refused.
        max_frames: Frames (pages) beyond which a file is refused without walking them.
        frames_to_score: Frames of an animation scored, spread over it; the row reports the
            most unsafe one.
        max_decode_pixels: Per-image decode budget, pixels x frames decoded.
        max_explain_rows: Most rows of one request that may ask for a heatmap (more: 400).
        heatmap_size: Side in pixels of the served heatmap PNG.
        request_deadline_s: Wall-clock seconds one request may work (decoding, scoring,
            heatmaps), checked between rows, frames and batches; rows not scored by then get
            the per-row error ``deadline_exceeded``.
    """

    model_name: str
    model_version: str
    candidate: str
    precision: str
    classes: list[str]
    safe_class: str
    thresholds: DecisionThresholds
    operating_threshold: float | None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    batch_size: int = 16
    max_rows: int = DEFAULT_MAX_ROWS
    max_aspect_ratio: int = DEFAULT_MAX_ASPECT_RATIO
    max_frames: int = DEFAULT_MAX_FRAMES
    frames_to_score: int = DEFAULT_FRAMES_TO_SCORE
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS
    max_explain_rows: int = DEFAULT_MAX_EXPLAIN_ROWS
    heatmap_size: int = DEFAULT_HEATMAP_SIZE
    request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S
    runtime: str = ""
    runtime_check: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Empty means the precision's own runtime (a config that does not name one).
        if not self.runtime:
            default = "onnxruntime" if self.precision == "int8" else "torch"
            object.__setattr__(self, "runtime", default)
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {self.runtime!r}: one of {RUNTIMES}")
        if self.precision == "int8" and self.runtime != "onnxruntime":
            raise ValueError("an int8 model is served by onnxruntime only")
        if not float(self.request_deadline_s) > 0:
            raise ValueError(
                f"request_deadline_s must be > 0 seconds, got {self.request_deadline_s}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (the inverse of :meth:`from_dict`)."""
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "candidate": self.candidate,
            "precision": self.precision,
            "classes": list(self.classes),
            "safe_class": self.safe_class,
            "thresholds": self.thresholds.to_dict(),
            "operating_threshold": self.operating_threshold,
            "max_pixels": self.max_pixels,
            "max_image_bytes": self.max_image_bytes,
            "batch_size": self.batch_size,
            "max_rows": self.max_rows,
            "max_aspect_ratio": self.max_aspect_ratio,
            "max_frames": self.max_frames,
            "frames_to_score": self.frames_to_score,
            "max_decode_pixels": self.max_decode_pixels,
            "max_explain_rows": self.max_explain_rows,
            "heatmap_size": self.heatmap_size,
            "request_deadline_s": self.request_deadline_s,
            "runtime": self.runtime,
            "runtime_check": self.runtime_check,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ServingConfig:
        """Rebuild a config written by :meth:`to_dict`."""
        values = dict(payload)
        thresholds = values.pop("thresholds")
        return cls(thresholds=DecisionThresholds.from_dict(thresholds), **values)

    @cached_property
    def decode_limits(self) -> DecodeLimits:
        """The per-image bounds of :func:`eyecatcher.images.decode_for_model`."""
        return DecodeLimits(
            max_pixels=self.max_pixels,
            max_aspect_ratio=self.max_aspect_ratio,
            max_frames=self.max_frames,
            frames_to_score=self.frames_to_score,
            max_decode_pixels=max(self.max_decode_pixels, self.max_pixels),
        )

    @cached_property
    def policy(self) -> DecisionPolicy:
        """The decision policy these thresholds, classes and safe class define."""
        return DecisionPolicy(self.classes, self.safe_class, self.thresholds)
