"""The served moderation model: an MLflow pyfunc that turns base64 images into decisions.

Logged through models-from-code (``model_code.py``), so no live object is pickled: the model is
rebuilt at load time from its artefacts (the :class:`ClassifierBundle`, the ONNX file when the
quantization stage chose int8, and ``serving_config.json``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from eyecatcher.images import ImageRejectedError, decode_image
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.preprocessing import eval_transform
from eyecatcher.serving_model.backends import TorchClassifier, onnx_classifier
from eyecatcher.serving_model.contract import (
    ID_COLUMN,
    IMAGE_COLUMN,
    OUTPUT_COLUMNS,
    ServingConfig,
    decode_base64_image,
    request_frame,
)

logger = logging.getLogger(__name__)

#: Artefact keys the model is logged with (see :mod:`eyecatcher.serving_model.packaging`).
BUNDLE_ARTIFACT = "bundle"
CONFIG_ARTIFACT = "serving_config"
ONNX_ARTIFACT = "onnx_model"


class ModerationModel(mlflow.pyfunc.PythonModel):
    """Decode, preprocess (as in training), classify and decide, one row per image.

    Attributes:
        config_: The :class:`ServingConfig` read from the artefacts.
        bundle_: The trained bundle (classes and preprocessing config).
        classifier_: The backend: :class:`TorchClassifier` (fp32) or the ONNX Runtime
            classifier (int8).
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
        if self.config_.precision == "int8":
            if ONNX_ARTIFACT not in artifacts:
                raise ValueError("precision is int8 but the model has no ONNX artefact")
            self.classifier_ = onnx_classifier(artifacts[ONNX_ARTIFACT])
        elif self.config_.precision == "fp32":
            self.classifier_ = TorchClassifier(self.bundle_)
        else:
            raise ValueError(f"unknown precision {self.config_.precision!r}: fp32 or int8")
        self._safe_index = self.config_.classes.index(self.config_.safe_class)

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
            MlflowException: ``INVALID_PARAMETER_VALUE`` (HTTP 400) for an empty request or
                one without an ``image`` column.
        """
        frame = request_frame(model_input)
        n_rows = len(frame)
        rows: list[dict[str, Any]] = [self._empty_row() for _ in range(n_rows)]
        # Each image becomes its model-sized tensor as soon as it is decoded: holding every
        # full-resolution photo of a large request at once (~150 MB per 50 MP image) would
        # exhaust the server's memory. Same transform as images_to_batch, so same numbers.
        transform = eval_transform(self.bundle_.data_config)
        decoded: list[tuple[int, torch.Tensor]] = []
        for position, value in enumerate(frame[IMAGE_COLUMN].tolist()):
            try:
                data = decode_base64_image(value, max_image_bytes=self.config_.max_image_bytes)
                image = decode_image(data, max_pixels=self.config_.max_pixels)
                decoded.append((position, transform(image)))
                del image, data
            except ImageRejectedError as exc:
                rows[position]["error"] = f"{exc.reason}: {exc.detail}"
            except (OSError, ValueError, SyntaxError, EOFError) as exc:
                # Pillow can fail outside its validation paths on hostile files; one such row
                # must not fail the request.
                rows[position]["error"] = f"corrupt: {type(exc).__name__}: {exc}"

        batch_size = max(1, int(self.config_.batch_size))
        starts = range(0, len(decoded), batch_size)
        for start in tqdm(starts, desc="moderating", unit="batch", disable=len(starts) <= 1):
            chunk = decoded[start : start + batch_size]
            batch = torch.stack([tensor for _, tensor in chunk])
            probabilities = np.asarray(self.classifier_.predict_proba(batch), dtype=np.float64)
            if probabilities.shape != (len(chunk), len(self.config_.classes)):
                raise ValueError(
                    f"the {self.config_.precision} backend returned probabilities of shape "
                    f"{probabilities.shape} for {len(chunk)} images and "
                    f"{len(self.config_.classes)} classes"
                )
            for (position, _), probs in zip(chunk, probabilities, strict=True):
                rows[position].update(self._scored_row(probs))

        result = pd.DataFrame(
            {
                column: pd.Series([row[column] for row in rows], dtype=object)
                for column in OUTPUT_COLUMNS
                if column != ID_COLUMN
            }
        )
        if ID_COLUMN in frame.columns:
            result.insert(0, ID_COLUMN, pd.Series(frame[ID_COLUMN].tolist(), dtype=object))
        return result

    def _empty_row(self) -> dict[str, Any]:
        return {
            "class": None,
            "probabilities": None,
            "unsafe_score": None,
            "decision": None,
            "model_name": self.config_.model_name,
            "model_version": self.config_.model_version,
            "error": None,
        }

    def _scored_row(self, probs: np.ndarray) -> dict[str, Any]:
        unsafe_score = float(1.0 - probs[self._safe_index])
        return {
            "class": self.config_.classes[int(np.argmax(probs))],
            "probabilities": {
                name: float(p) for name, p in zip(self.config_.classes, probs, strict=True)
            },
            "unsafe_score": unsafe_score,
            "decision": self.config_.policy.decide(probs),
        }
