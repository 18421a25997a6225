"""Packaging the served model: artefacts, code, signature, input example, pinned requirements.

The model is logged with models-from-code (``model_code.py``) and the modules of the
``eyecatcher`` package it imports (computed, see :mod:`eyecatcher.serving_model.served_code`)
travel inside it as ``code_paths``: a registered version
preprocesses with the code it was registered with, whatever the repository looks like later,
and serving needs no ``pip install`` of this project.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import AnyType, ColSpec, DataType, Map, Schema
from PIL import Image

from eyecatcher import mlflow_log, storage
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.serving_model.contract import ServingConfig, encode_image
from eyecatcher.serving_model.loading_lock import building_code_model
from eyecatcher.serving_model.model import BUNDLE_ARTIFACT, CONFIG_ARTIFACT, ONNX_ARTIFACT
from eyecatcher.serving_model.runtime_check import (
    DEFAULT_TOLERANCE,
    choose_fp32_runtime,
    compare_onnx_with_torch,
)
from eyecatcher.serving_model.served_code import served_files

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
MODEL_CODE_PATH = Path(__file__).resolve().parent / "model_code.py"
#: The module MLflow executes to build the served model; what it imports is what is shipped.
SERVED_ENTRY = "eyecatcher.serving_model.model_code"


#: Distributions the served model imports, pinned to the versions installed here.
SERVED_DISTRIBUTIONS = (
    "mlflow",
    "torch",
    "torchvision",
    "timm",
    "pillow",
    # images.py registers the HEIC/AVIF opener at import: the served model cannot load without.
    "pillow-heif",
    "numpy",
    "pandas",
    "fsspec",
    # Grad-CAM for the optional heatmaps.
    "captum",
)


def pinned_requirements(precision: str, runtime: str | None = None) -> list[str]:
    """``name==version`` for every distribution the served model needs, as installed now.

    A local version label (``+cu126``) is dropped: it names a build of the same release that a
    plain package index does not serve.

    Args:
        precision: ``int8`` adds ONNX Runtime and ``onnx``.
        runtime: ``onnxruntime`` adds them for an fp32 model served through its ONNX graph.

    Returns:
        The pip requirement lines.
    """
    # onnx: onnx_runtime.py reads the fingerprints in the ONNX file's metadata with it.
    onnx = precision == "int8" or runtime == "onnxruntime"
    return pinned_versions([*SERVED_DISTRIBUTIONS, *(["onnxruntime", "onnx"] if onnx else [])])


def pinned_versions(names: list[str] | tuple[str, ...]) -> list[str]:
    """``name==version`` of installed distributions, without local version labels (``+cu126``).

    Giving MLflow the requirements also spares ``log_model`` its inference, which loads the
    model in a subprocess (~5 s each on a 2-vCPU machine).
    """
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in names]


def stage_code(destination: Path) -> Path:
    """Copy the served code into ``destination/eyecatcher``: exactly what the model imports.

    The set is computed (:func:`eyecatcher.serving_model.served_code.served_files`) from
    :data:`SERVED_ENTRY`, so a training-only module is never shipped and a module the served
    code starts to import is never forgotten.
    """
    target = destination / "eyecatcher"
    for relative in served_files(SERVED_ENTRY, _PACKAGE_ROOT):
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_PACKAGE_ROOT / relative, target / relative)
    return target


def example_image(size: int = 96) -> bytes:
    """A small synthetic PNG (a colour gradient) for the logged input example."""
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[::-1, None]), -1)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def serving_signature() -> ModelSignature:
    """The request and response schema of :mod:`eyecatcher.serving_model.contract`."""
    inputs = Schema(
        [
            ColSpec(DataType.string, "image"),
            ColSpec(DataType.string, "id", False),
            # A boolean, checked by the model itself (contract.explain_flags): declared
            # boolean, the scoring server would cast it with astype(bool) before the model
            # sees it, so "false" or "no" would silently ask for a heatmap.
            ColSpec(AnyType(), "explain", False),
        ]
    )
    outputs = Schema(
        [
            ColSpec(DataType.string, "id", False),
            ColSpec(DataType.string, "class", False),
            ColSpec(Map(DataType.double), "probabilities", False),
            ColSpec(DataType.double, "unsafe_score", False),
            ColSpec(DataType.string, "decision", False),
            ColSpec(DataType.string, "model_name"),
            ColSpec(DataType.string, "model_version"),
            ColSpec(DataType.string, "error", False),
            ColSpec(DataType.string, "heatmap_png", False),
            ColSpec(DataType.string, "heatmap_info", False),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def fp32_runtime_config(
    bundle: ClassifierBundle,
    config: ServingConfig,
    fp32_onnx_path: str | Path,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ServingConfig:
    """The config of an fp32 model with its runtime chosen by the ONNX-vs-PyTorch check.

    The outcome is recorded on the active MLflow run (tags ``served_runtime`` and
    ``served_runtime_check``, and ``runtime_check.json`` next to the logged model's
    artefacts) as well as in the returned config, whichever way it went.
    """
    check = compare_onnx_with_torch(bundle, fp32_onnx_path, tolerance=tolerance)
    runtime = choose_fp32_runtime(check)
    if mlflow.active_run() is not None:
        mlflow_log.set_tags(
            {
                "served_runtime": runtime,
                "served_runtime_check": "passed" if check["passed"] else "failed",
            }
        )
        mlflow_log.log_dict(check, "served_model_runtime_check.json")
    return dataclasses.replace(config, runtime=runtime, runtime_check=check)


def log_served_model(
    *,
    bundle: ClassifierBundle,
    config: ServingConfig,
    onnx_path: str | Path | None = None,
    fp32_onnx_path: str | Path | None = None,
    onnx_tolerance: float = DEFAULT_TOLERANCE,
    name: str = "served_model",
    model_id: str | None = None,
) -> ModelInfo:
    """Log the served model to the active MLflow run.

    Args:
        bundle: The selected candidate's trained bundle (always logged: it carries the
            preprocessing config, and the fp32 weights serve when precision is ``fp32``).
        config: Thresholds, names, version and limits (logged as ``serving_config.json``).
        onnx_path: The ONNX model, required when ``config.precision`` is ``int8``.
        fp32_onnx_path: For an fp32 model, the fp32 ONNX graph quantization exported: it
            serves instead of PyTorch if its probabilities agree with PyTorch's within
            ``onnx_tolerance`` (see :func:`fp32_runtime_config`); ``None`` serves PyTorch.
        onnx_tolerance: Largest accepted max absolute probability difference for that check.
        name: Name of the logged model within the run.
        model_id: An MLflow logged-model id created beforehand (by
            :func:`mlflow.initialize_logged_model`) so that the registry version number is
            known before logging and can be written into ``serving_config.json``.

    Returns:
        MLflow's information on the logged model.

    Raises:
        ValueError: If ``int8`` is asked for without an existing ONNX file, or the config's
            classes are not the bundle's.
    """
    if list(config.classes) != list(bundle.classes):
        raise ValueError(f"config classes {config.classes} are not the bundle's {bundle.classes}")
    if config.precision == "fp32" and fp32_onnx_path is not None:
        config = fp32_runtime_config(bundle, config, fp32_onnx_path, tolerance=onnx_tolerance)
        onnx_path = fp32_onnx_path if config.runtime == "onnxruntime" else None
    with tempfile.TemporaryDirectory(prefix="eyecatcher-served-") as tmp:
        staging = Path(tmp)
        bundle_file = staging / "model_bundle.pt"
        bundle.save(bundle_file)
        config_file = staging / "serving_config.json"
        config_file.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
        artifacts = {BUNDLE_ARTIFACT: str(bundle_file), CONFIG_ARTIFACT: str(config_file)}
        if config.runtime == "onnxruntime":
            if onnx_path is None or not storage.exists(str(onnx_path)):
                raise ValueError(
                    f"the {config.precision} model is served by onnxruntime but the ONNX file "
                    f"{onnx_path} does not exist"
                )
            onnx_file = staging / "model.onnx"
            onnx_file.write_bytes(storage.read_bytes(str(onnx_path)))
            artifacts[ONNX_ARTIFACT] = str(onnx_file)
        code_dir = stage_code(staging / "code")
        input_example = pd.DataFrame(
            {"image": [encode_image(example_image())], "id": ["example-1"]}
        )
        # log_model builds the model from its code to check the input example (see
        # eyecatcher.serving_model.loading_lock for why that build is guarded).
        with building_code_model():
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(MODEL_CODE_PATH),
                artifacts=artifacts,
                code_paths=[str(code_dir)],
                signature=serving_signature(),
                input_example=input_example,
                pip_requirements=pinned_requirements(config.precision, config.runtime),
                model_id=model_id,
            )
