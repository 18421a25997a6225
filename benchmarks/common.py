"""What several benchmarks set up the same way: a registered champion, and peak-RSS sampling.

Benchmarks run as scripts (``.venv/bin/python benchmarks/bench_x.py``), so this folder is on
``sys.path`` and they ``from common import ...``.

* :func:`use_sqlite_registry` points MLflow (this process and any server it starts, through
  the environment) at a temporary sqlite store;
* :func:`random_bundle` is a random-weight candidate, as the tests' tiny models are;
* :func:`register_champion` packages it exactly as registration does
  (:func:`~eyecatcher.serving_model.packaging.log_served_model`), registers it and points the
  ``champion`` alias at it, through the project's registry client (explicit URIs);
* :class:`PeakRss` samples a resident-size function every 20 ms in a thread: this process and
  its children (:func:`process_tree_rss`), or a model server's process group
  (``ModelServer.rss_bytes``); :func:`peak_growth` runs one call under it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlflow
import psutil
import torch
from mlflow.entities.model_registry import ModelVersion

from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.factory import create_classifier
from eyecatcher.preprocessing import data_config_for
from eyecatcher.registry.client import registry_client
from eyecatcher.serving_model import ServingConfig
from eyecatcher.serving_model.packaging import log_served_model

#: How often RSS is sampled (seconds).
SAMPLE_INTERVAL_S = 0.02


def use_sqlite_registry(root: Path) -> str:
    """Use ``root/mlflow.db`` as tracking store and registry, here and in child processes."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_REGISTRY_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def random_bundle(
    architecture: str, classes: Sequence[str], image_size: int, seed: int = 0
) -> ClassifierBundle:
    """A random-weight bundle of ``architecture`` (reproducible: ``seed``)."""
    torch.manual_seed(seed)
    model, source = create_classifier(architecture, len(classes), "random")
    return ClassifierBundle.from_model(
        model,
        architecture=architecture,
        classes=list(classes),
        data_config=data_config_for(model, image_size),
        weights_source=source,
    )


def register_champion(
    bundle: ClassifierBundle,
    config: ServingConfig,
    *,
    experiment: str,
    artifact_root: Path | None = None,
    **log_kwargs: Any,
) -> ModelVersion:
    """Package ``bundle`` as registration does, register it, make it ``champion``.

    Args:
        bundle: The candidate.
        config: Its serving config (``model_name`` names the registered model).
        experiment: The MLflow experiment the packaging run goes into (created if missing).
        artifact_root: Where that experiment keeps artifacts (MLflow's default if None).
        **log_kwargs: Passed to ``log_served_model`` (``onnx_path``, ``fp32_onnx_path``, ...).

    Returns:
        The registered version.
    """
    found = mlflow.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id
        if found is not None
        else mlflow.create_experiment(
            experiment, artifact_location=None if artifact_root is None else artifact_root.as_uri()
        )
    )
    with mlflow.start_run(experiment_id=experiment_id):
        info = log_served_model(bundle=bundle, config=config, **log_kwargs)
    version = mlflow.register_model(info.model_uri, config.model_name)
    registry_client().set_registered_model_alias(config.model_name, "champion", version.version)
    return version


def process_tree_rss(process: psutil.Process | None = None) -> int:
    """Resident bytes of ``process`` (this one by default) and all its children."""
    process = process or psutil.Process()
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a child may exit while we look
            total += child.memory_info().rss
    return total


class PeakRss:
    """The peak of ``measure()`` (bytes), sampled in a thread every ``interval`` seconds.

    Args:
        measure: Returns a resident size now (:func:`process_tree_rss`,
            ``ModelServer.rss_bytes``).
        interval: Seconds between samples.
    """

    def __init__(
        self, measure: Callable[[], int] = process_tree_rss, interval: float = SAMPLE_INTERVAL_S
    ) -> None:
        self.measure = measure
        self.interval = interval
        self.peak_ = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_ = max(self.peak_, self.measure())
            time.sleep(self.interval)

    def reset(self) -> int:
        """Start a new peak from the size now; return that size."""
        self.peak_ = self.measure()
        return self.peak_

    def start(self) -> PeakRss:
        """Start sampling (from the size now)."""
        self.reset()
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling; return the peak, one last sample included."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak_ = max(self.peak_, self.measure())
        return self.peak_


def peak_growth(measure: Callable[[], int], call: Callable[[], Any]) -> tuple[Any, int, float]:
    """Run ``call`` while sampling ``measure``: (its result, peak growth in bytes, seconds)."""
    sampler = PeakRss(measure)
    baseline = sampler.start().peak_
    started = time.monotonic()
    try:
        result = call()
    finally:
        elapsed = time.monotonic() - started
        peak = sampler.stop()
    return result, peak - baseline, elapsed
