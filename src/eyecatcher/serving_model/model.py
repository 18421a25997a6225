"""The served moderation model: an MLflow pyfunc that turns base64 images into decisions.

Logged through models-from-code (``model_code.py``), so no live object is pickled: the model is
rebuilt at load time from its artefacts (the :class:`ClassifierBundle`, the ONNX file when the
quantization stage chose int8 or the fp32 graph packaging checked against PyTorch, and
``serving_config.json``).

Memory and CPU are bounded per request and per image, whatever a client sends: a request has
at most ``max_rows`` rows (more is a 400), rows are decoded and scored one batch at a time and
only their outputs are kept, and each image is decoded within the limits of
:class:`~eyecatcher.images.DecodeLimits` (frames, aspect ratio, pixels x frames), shrunk before
any colour conversion. Heatmaps (the optional ``explain`` column) are capped per request
(``max_explain_rows``) and keep one model-sized frame per asking row until the rows are scored.

Time is bounded per request too: a :class:`~eyecatcher.images.Deadline` of
``request_deadline_s`` starts when the request gets the worker, and is checked before each row,
each frame and each forward pass; what is not done by then is answered with the per-row error
``deadline_exceeded``. Everything runs synchronously inside :meth:`ModerationModel.predict` (no
thread or process is started), so once ``predict`` returns no work for the request is left.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from eyecatcher.images import Deadline, ImageRejectedError, decode_for_model
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.preprocessing import decode_min_side, eval_transform
from eyecatcher.serving_model.backends import TorchClassifier, onnx_classifier
from eyecatcher.serving_model.contract import (
    EXPLAIN_COLUMN,
    EXPLAIN_COLUMNS,
    ID_COLUMN,
    IMAGE_COLUMN,
    OUTPUT_COLUMNS,
    ServingConfig,
    check_row_count,
    decode_base64_image,
    explain_flags,
    request_frame,
)
from eyecatcher.serving_model.explanations import ServedExplainer
from eyecatcher.serving_model.memory import FreedMemory

logger = logging.getLogger(__name__)

#: Artefact keys the model is logged with (see :mod:`eyecatcher.serving_model.packaging`).
BUNDLE_ARTIFACT = "bundle"
CONFIG_ARTIFACT = "serving_config"
ONNX_ARTIFACT = "onnx_model"

#: Decisions from least to most severe: the most severe frame of an animation is reported.
_SEVERITY = {"allow": 0, "review": 1, "block": 2}


@dataclass
class _Row:
    """The verdict of one request row as its frames are scored (only outputs are kept)."""

    error: str | None = None
    probabilities: np.ndarray | None = None
    decision: str | None = None
    unsafe_score: float = -1.0
    non_finite: bool = False
    frames: int = 0
    explain: bool = False
    # The frame that decides the row, kept only while a heatmap of it is still to be made.
    deciding_frame: torch.Tensor | None = None
    heatmap_png: str | None = None
    heatmap_info: str | None = None


@dataclass
class _PendingFrames:
    """Model-sized frames waiting for the next forward pass, with the row each belongs to."""

    positions: list[int] = field(default_factory=list)
    tensors: list[torch.Tensor] = field(default_factory=list)


class ModerationModel(mlflow.pyfunc.PythonModel):
    """Decode, preprocess (as in training), classify and decide, one row per image.

    Attributes:
        config_: The :class:`ServingConfig` read from the artefacts.
        bundle_: The trained bundle (classes and preprocessing config).
        classifier_: The backend the config's runtime names: :class:`TorchClassifier`
            (``torch``) or the ONNX Runtime classifier (``onnxruntime``: int8, or fp32 checked
            against PyTorch at packaging).
        explainer_: The heatmap maker for rows that ask (fp32 PyTorch, built on first use).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the bundle, the config and the backend the config's precision names.

        Args:
            context: MLflow's context with the local paths of the logged artefacts.

        Raises:
            ValueError: If the artefacts disagree (classes) or name an unknown precision.
        """
        artifacts = context.artifacts
        self.config_ = ServingConfig.from_dict(
            json.loads(Path(artifacts[CONFIG_ARTIFACT]).read_text())
        )
        self.bundle_ = ClassifierBundle.load(artifacts[BUNDLE_ARTIFACT])
        if list(self.bundle_.classes) != list(self.config_.classes):
            raise ValueError(
                f"serving config classes {self.config_.classes} differ from the bundle's "
                f"{self.bundle_.classes}"
            )
        if self.config_.precision not in ("fp32", "int8"):
            raise ValueError(f"unknown precision {self.config_.precision!r}: fp32 or int8")
        torch_model = None
        if self.config_.runtime == "onnxruntime":
            if ONNX_ARTIFACT not in artifacts:
                raise ValueError(
                    f"the {self.config_.precision} model is served by onnxruntime but has no "
                    "ONNX artefact"
                )
            self.classifier_ = onnx_classifier(artifacts[ONNX_ARTIFACT])
        else:
            self.classifier_ = TorchClassifier(self.bundle_)
            torch_model = self.classifier_.model_
        self.explainer_ = ServedExplainer(
            self.bundle_,
            runtime=self.config_.runtime,
            precision=self.config_.precision,
            size=self.config_.heatmap_size,
            model=torch_model,
        )
        self._safe_index = self.config_.classes.index(self.config_.safe_class)
        self._transform = eval_transform(self.bundle_.data_config)
        self._min_side = decode_min_side(self.bundle_.data_config)
        # One request decodes and scores at a time in this process: the memory bound of one
        # request is then the bound of the worker, however many clients send at once (the
        # forward pass already uses every core; add workers for throughput).
        self._busy = threading.Lock()
        self._freed_memory = FreedMemory()

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Moderate every image of the request.

        Args:
            context: Unused (artefacts were read in :meth:`load_context`).
            model_input: The request (see :mod:`eyecatcher.serving_model.contract`).
            params: Unused; accepted so MLflow passes request params without warning.

        Returns:
            One row per request row with the columns of
            :data:`~eyecatcher.serving_model.contract.OUTPUT_COLUMNS`.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` (HTTP 400) for an empty request, one
                without an ``image`` column, one with more than ``max_rows`` rows, a malformed
                ``explain`` column or more than ``max_explain_rows`` rows asking for a heatmap.
        """
        frame = request_frame(model_input)
        check_row_count(frame, int(self.config_.max_rows))
        flags = explain_flags(frame, int(self.config_.max_explain_rows))
        rows = [_Row(explain=flag) for flag in flags]
        pending = _PendingFrames()
        batch_size = max(1, int(self.config_.batch_size))
        with self._busy:
            # Counted from here, not from the call: a request waiting for the worker behind a
            # slow one keeps its whole deadline for its own work (the wait is bounded by the
            # other request's deadline).
            deadline = Deadline(float(self.config_.request_deadline_s))
            for position, value in enumerate(frame[IMAGE_COLUMN].tolist()):
                if deadline.expired():
                    rows[position].error = _deadline_error(deadline, f"row {position} was read")
                    continue
                for tensor in self._model_inputs(position, value, rows[position], deadline):
                    pending.positions.append(position)
                    pending.tensors.append(tensor)
                    # Only one batch of decoded frames is ever held: a request's memory is
                    # its outputs plus one batch, whatever its number of rows or frames.
                    if len(pending.tensors) >= batch_size:
                        self._score(pending, rows, deadline)
            self._score(pending, rows, deadline)
            self._explain(rows, batch_size, deadline)
            self._freed_memory.release()
        return self._response(frame, rows)

    # -- decoding --------------------------------------------------------------------------

    def _model_inputs(
        self, position: int, value: Any, row: _Row, deadline: Deadline
    ) -> Iterator[torch.Tensor]:
        """The model-sized tensors of one row's frames; errors go into ``row.error``."""
        try:
            data = decode_base64_image(value, max_image_bytes=self.config_.max_image_bytes)
            frames = decode_for_model(
                data, min_side=self._min_side, limits=self.config_.decode_limits, deadline=deadline
            )
            del data
            tensors = []
            for index, image in enumerate(frames):
                deadline.check(f"frame {index} of row {position} was resized")
                tensors.append(self._transform(image))
        except ImageRejectedError as exc:
            row.error = f"{exc.reason}: {exc.detail}"
            return
        except Exception:  # one hostile row must never fail the request
            row.error = _internal_error(f"decoding row {position}")
            return
        row.frames = len(tensors)
        yield from tensors

    # -- scoring ---------------------------------------------------------------------------

    def _score(self, pending: _PendingFrames, rows: list[_Row], deadline: Deadline) -> None:
        """Run one forward pass on the pending frames and fold the outputs into their rows.

        Past the deadline no forward pass starts: the rows with frames in the batch get
        ``deadline_exceeded`` (a row whose other frames were scored earlier too: a verdict on
        part of an animation could miss its worst frame).
        """
        if not pending.tensors:
            return
        positions, tensors = pending.positions, pending.tensors
        pending.positions, pending.tensors = [], []
        if deadline.expired():
            message = _deadline_error(deadline, "this row's frames were scored")
            for position in positions:
                rows[position].error = message
            return
        try:
            probabilities = np.asarray(
                self.classifier_.predict_proba(torch.stack(tensors)), dtype=np.float64
            )
            expected = (len(tensors), len(self.config_.classes))
            if probabilities.shape != expected:
                raise ValueError(
                    f"the {self.config_.precision} backend returned probabilities of shape "
                    f"{probabilities.shape}, expected {expected}"
                )
        except Exception:  # the rows of this batch fail, not the request
            message = _internal_error(f"scoring a batch of {len(tensors)} frames")
            for position in positions:
                rows[position].error = message
            return
        for position, probs, tensor in zip(positions, probabilities, tensors, strict=True):
            self._fold(rows[position], probs, tensor)

    def _fold(self, row: _Row, probs: np.ndarray, frame: torch.Tensor) -> None:
        """Keep the most unsafe frame of a row (by decision severity, then unsafe score)."""
        if row.error is not None:
            return
        if not np.isfinite(probs).all():
            # Fails closed, before any decision: one non-finite frame makes the row `review`.
            row.non_finite = True
            return
        decision = self._decide(probs)
        unsafe_score = float(1.0 - probs[self._safe_index])
        if row.decision is None or (_SEVERITY[decision], unsafe_score) > (
            _SEVERITY[row.decision],
            row.unsafe_score,
        ):
            row.probabilities, row.decision, row.unsafe_score = probs, decision, unsafe_score
            if row.explain:
                row.deciding_frame = frame

    def _decide(self, probabilities: np.ndarray) -> str:
        """The moderation decision for one frame's class probabilities."""
        return self.config_.policy.decide(probabilities)

    # -- heatmaps --------------------------------------------------------------------------

    def _explain(self, rows: list[_Row], batch_size: int, deadline: Deadline) -> None:
        """Heatmaps of the class each asking row was given, a batch of frames at a time.

        Past the deadline the remaining rows keep their verdicts and say why they have no
        heatmap.
        """
        asking = []
        for row in rows:
            if not row.explain or row.error is not None:
                continue  # the row's error already says why there is nothing to explain
            if row.non_finite or row.deciding_frame is None:
                row.heatmap_info = "no heatmap: the model gave no class for this image"
            else:
                asking.append(row)
        for start in range(0, len(asking), batch_size):
            chunk = asking[start : start + batch_size]
            if deadline.expired():
                info = f"no heatmap: {_deadline_error(deadline, 'the heatmap was made')}"
                for row in chunk:
                    row.heatmap_info, row.deciding_frame = info, None
                continue
            targets = [int(np.argmax(row.probabilities)) for row in chunk]
            try:
                pngs = self.explainer_.heatmaps(
                    torch.stack([row.deciding_frame for row in chunk]), targets
                )
                infos = [self.explainer_.info(self.config_.classes[t]) for t in targets]
            except Exception:  # a failed heatmap must not cost the rows their verdicts
                message = _internal_error(f"explaining a batch of {len(chunk)} rows")
                pngs, infos = [None] * len(chunk), [f"no heatmap: {message}"] * len(chunk)
            for row, png, info in zip(chunk, pngs, infos, strict=True):
                row.heatmap_png, row.heatmap_info, row.deciding_frame = png, info, None

    # -- the response ----------------------------------------------------------------------

    def _response(self, frame: pd.DataFrame, rows: list[_Row]) -> pd.DataFrame:
        columns = [column for column in OUTPUT_COLUMNS if column != ID_COLUMN]
        if EXPLAIN_COLUMN in frame.columns:
            columns.extend(EXPLAIN_COLUMNS)
        records = [self._record(row) for row in rows]
        # One object-dtype frame in one call: None stays None (JSON null, never NaN), and
        # building a Series per column cost more than the rest of a one-row response.
        result = pd.DataFrame(
            {column: [record[column] for record in records] for column in columns}, dtype=object
        )
        if ID_COLUMN in frame.columns:
            result.insert(0, ID_COLUMN, pd.Series(frame[ID_COLUMN].tolist(), dtype=object))
        return result

    def _record(self, row: _Row) -> dict[str, Any]:
        record: dict[str, Any] = {
            "class": None,
            "probabilities": None,
            "unsafe_score": None,
            "decision": None,
            "model_name": self.config_.model_name,
            "model_version": self.config_.model_version,
            "error": row.error,
            "heatmap_png": row.heatmap_png,
            "heatmap_info": row.heatmap_info,
        }
        if row.error is not None:
            return record
        if row.non_finite or row.probabilities is None:
            record["decision"] = "review"
            record["error"] = (
                "non_finite_score: the model returned a non-finite probability for this image; "
                "decided review"
            )
            return record
        probs = row.probabilities
        record.update(
            {
                "class": self.config_.classes[int(np.argmax(probs))],
                "probabilities": {
                    name: float(p) for name, p in zip(self.config_.classes, probs, strict=True)
                },
                "unsafe_score": row.unsafe_score,
                "decision": row.decision,
            }
        )
        return record


def _deadline_error(deadline: Deadline, before: str) -> str:
    """The per-row error of work the deadline stopped (same words as a frame loop's)."""
    return f"deadline_exceeded: {deadline.message(before)}"


def _internal_error(stage: str) -> str:
    """Log the current exception with its traceback; the row's error gives only a reference.

    The traceback names files, modules and versions of the server: it belongs in the server's
    log, never in a response a client (or an attacker probing the endpoint) reads.
    """
    reference = uuid.uuid4().hex[:12]
    logger.exception("internal_error %s while %s", reference, stage)
    return f"internal_error: unexpected failure (reference {reference} in the server log)"
