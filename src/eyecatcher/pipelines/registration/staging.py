"""The staging inference test: the registered version, loaded by its pinned URI, answers right.

Both functions score through :class:`eyecatcher.serving.in_process.InProcessScorer` (what code
that runs is said there and in docs/registry.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.preprocessing import bytes_to_batch
from eyecatcher.serving.in_process import InProcessScorer
from eyecatcher.storage import read_bytes


def smoke_test(
    model_uri: str,
    *,
    version: str,
    bundle: ClassifierBundle,
    onnx_path: str | None,
    rows: pd.DataFrame,
    storage_options: Mapping[str, Any],
) -> dict[str, Any]:
    """Load ``model_uri`` (a pinned ``models:/<name>/<version>``) and check its answers.

    Every row must come back without an error, with ``model_version`` equal to ``version``,
    and with the classes of the in-process model: the torch bundle for fp32, the ONNX file
    that quantization measured for int8.

    Returns:
        ``passed``, ``images``, ``agreement`` and ``problems`` (sentences).
    """
    try:
        scorer = InProcessScorer(model_uri)
        images = [read_bytes(uri, storage_options) for uri in rows["uri"]]
        out = scorer.score_bytes(images, chunk=len(images))
    except Exception as exc:  # a version that cannot even load fails its test
        return {
            "passed": False,
            "images": 0,
            "agreement": None,
            "problems": [f"{type(exc).__name__}: {exc}"],
        }
    problems: list[str] = []
    if out["error"].notna().any():
        problems.append(f"per-row errors on test images: {out['error'].dropna().tolist()[:3]}")
    if set(out["model_version"]) != {str(version)}:
        problems.append(f"model_version {set(out['model_version'])} != {version}")
    agreement = None
    if not problems:
        batch = bytes_to_batch(images, bundle.data_config)
        if onnx_path is not None:
            from eyecatcher.models.onnx_runtime import OnnxClassifier

            expected = OnnxClassifier(str(onnx_path)).predict_proba(batch).argmax(1)
        else:
            with torch.inference_mode():
                expected = bundle.build_model()(batch).argmax(1).numpy()
        agreement = float((out["class"].to_numpy() == np.array(bundle.classes)[expected]).mean())
        if agreement < 1.0:
            problems.append(
                f"served classes agree with the in-process model on {agreement:.0%} of images"
            )
    return {
        "passed": not problems,
        "images": len(rows),
        "agreement": agreement,
        "problems": problems,
    }
