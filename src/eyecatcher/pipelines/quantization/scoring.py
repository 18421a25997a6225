"""Scoring every precision of a candidate on validation and test, bound to its inputs.

The same preprocessed images go through fp32 and each int8 model; the probabilities are kept
per split so that the precision is chosen on validation, the served model's thresholds are
calibrated on its own validation scores, and test numbers are only measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from eyecatcher.fingerprints import StaleArtefactError, bundle_fingerprint, config_hash
from eyecatcher.fingerprints import manifest_hash as split_manifest_hash
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.onnx_runtime import OnnxClassifier, read_metadata
from eyecatcher.models.softmax import softmax

logger = logging.getLogger(__name__)

#: The command that rebuilds a candidate's ONNX models and quantization report.
REBUILD_QUANTIZATION = "kedro run --pipelines quantization"


def input_fingerprints(
    bundle: ClassifierBundle, split_manifest: pd.DataFrame, params: Mapping[str, Any]
) -> dict[str, str]:
    """The fingerprints of what a candidate's quantization outputs were made from.

    Args:
        bundle: The trained candidate.
        split_manifest: The split manifest.
        params: The raw ``quantization`` parameter block (hashed as given).

    Returns:
        ``bundle``, ``split_manifest`` and ``quantization_config`` hex digests.
    """
    return {
        "bundle": bundle_fingerprint(bundle),
        "split_manifest": split_manifest_hash(split_manifest),
        "quantization_config": config_hash(params),
    }


def onnx_metadata(fingerprints: Mapping[str, str], variant: str) -> dict[str, str]:
    """What every ONNX file of a candidate records about its inputs."""
    return {
        "bundle_fingerprint": fingerprints["bundle"],
        "split_manifest_hash": fingerprints["split_manifest"],
        "quantization_config_hash": fingerprints["quantization_config"],
        "variant": variant,
    }


def check_onnx_models(
    onnx_models: Mapping[str, str | bytes], fingerprints: Mapping[str, str]
) -> None:
    """Refuse ONNX models that were built from another bundle, manifest or configuration.

    Raises:
        StaleArtefactError: Naming the stale file and the command that rebuilds it.
    """
    for variant, model in onnx_models.items():
        recorded = read_metadata(model)
        expected = onnx_metadata(fingerprints, variant)
        stale = sorted(k for k, v in expected.items() if recorded.get(k) != v)
        if stale:
            name = model if isinstance(model, str) else f"the {variant} ONNX model"
            raise StaleArtefactError(
                str(name),
                f"its metadata {stale} do not match the current inputs",
                REBUILD_QUANTIZATION,
            )


def torch_predictor(bundle: ClassifierBundle, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """fp32 logits from PyTorch with a fixed thread count (restored afterwards)."""
    model = bundle.build_model()

    def predict(batch: np.ndarray) -> np.ndarray:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                return model(torch.from_numpy(batch)).numpy()
        finally:
            torch.set_num_threads(previous)

    return predict


def onnx_predictor(model: str | bytes, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """Logits from ONNX Runtime (no spinning: the models are timed in turns)."""
    return OnnxClassifier(model, threads=threads, spinning=False).predict_logits


def split_probabilities(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Softmax probabilities (float64) of every split's raw model outputs."""
    return {split: softmax(np.asarray(logits)) for split, logits in outputs.items()}
