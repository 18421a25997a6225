"""A temporary MLflow registry whose ``champion`` is the real served pyfunc on a tiny model.

Shared by the serving and batch-scoring tests: one ``test_resnet`` bundle at 64 px, packaged by
:func:`eyecatcher.serving_model.packaging.log_served_model` (the artefact registration logs),
registered as version 1 of :data:`MODEL_NAME` and given the ``champion`` alias.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.tracking import MlflowClient

from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.factory import create_classifier
from eyecatcher.preprocessing import data_config_for
from eyecatcher.serving_model import DecisionThresholds, ServingConfig
from eyecatcher.serving_model.packaging import log_served_model

MODEL_NAME = "eyecatcher-test-serving"
CLASSES = ["explicit_nudity", "safe", "swimwear_or_underwear"]
#: Small enough that the too-large probe stays a few hundred kB.
MAX_IMAGE_BYTES = 300_000


@dataclass(frozen=True)
class TinyRegistry:
    """Where the temporary registry lives and what it holds."""

    root: Path
    tracking_uri: str
    model_name: str
    bundle: ClassifierBundle


def make_bundle(seed: int = 0) -> ClassifierBundle:
    """A random-weight ``test_resnet`` bundle with a 64 px input."""
    torch.manual_seed(seed)
    model, source = create_classifier("test_resnet", len(CLASSES), "random")
    return ClassifierBundle.from_model(
        model,
        architecture="test_resnet",
        classes=CLASSES,
        data_config=data_config_for(model, 64),
        weights_source=source,
    )


@contextmanager
def tiny_registry(root: Path, **config_overrides: Any) -> Iterator[TinyRegistry]:
    """Create the registry under ``root`` (artefacts too: never the repository's mlruns).

    While the context is open, ``MLFLOW_TRACKING_URI`` and the working directory point at it.
    ``config_overrides`` replace fields of the served :class:`ServingConfig` (limits).
    """
    import pytest

    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    bundle = make_bundle()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        # The registry too: a registry URI left set by an earlier test would otherwise
        # receive this model (MLflow keeps it process-wide and in the environment).
        patch.setenv("MLFLOW_REGISTRY_URI", tracking_uri)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        experiment = mlflow.create_experiment(
            "serving-tests", artifact_location=(root / "artifacts").as_uri()
        )
        config = ServingConfig(
            model_name=MODEL_NAME,
            model_version="1",
            candidate="tiny_resnet",
            precision="fp32",
            classes=CLASSES,
            safe_class="safe",
            thresholds=DecisionThresholds(review=0.5, block=0.8),
            operating_threshold=0.5,
            max_pixels=4_000_000,
            max_image_bytes=MAX_IMAGE_BYTES,
            batch_size=8,
        )
        config = dataclasses.replace(config, **config_overrides)
        with mlflow.start_run(experiment_id=experiment):
            info = log_served_model(bundle=bundle, config=config)
        version = mlflow.register_model(info.model_uri, MODEL_NAME)
        if str(version.version) != "1":
            raise RuntimeError(f"expected version 1 (the served config says so), got {version}")
        MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", version.version)
        try:
            yield TinyRegistry(root, tracking_uri, MODEL_NAME, bundle)
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
