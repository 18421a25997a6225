"""The training report and bundle metadata of a candidate, as standard JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from eyecatcher.features.cache import BackboneKey
from eyecatcher.mlflow_log import safe_record
from eyecatcher.pipelines.training.backbone import FrozenModel
from eyecatcher.pipelines.training.fitting import HeadFit
from eyecatcher.pipelines.training.settings import CandidateSettings


def json_safe(value: Any) -> Any:
    """NaN and infinities become ``None`` so that the JSON files stay standard JSON."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def finite(value: Any) -> bool:
    """A real, finite number (not a bool, not None)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _size_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def training_report(
    settings: CandidateSettings,
    config: Mapping[str, Any],
    *,
    built: FrozenModel,
    key: BackboneKey,
    fit: HeadFit,
    classes: list[str],
    counts: Mapping[str, int],
    weights_seed: int,
    device: torch.device,
    build_seconds: float,
) -> dict[str, Any]:
    """Settings, per-epoch history, timings, cache statistics and model size of one candidate.

    Args:
        settings: The candidate's validated settings.
        config: Its merged settings as given (recorded in the report).
        built: The frozen model it was built from.
        key: The backbone cache key.
        fit: What :func:`~eyecatcher.pipelines.training.fitting.fit_head` returned.
        classes: Class names in logit order.
        counts: ``n_train``, ``n_validation``.
        weights_seed: Seed of a random backbone.
        device: Where it trained.
        build_seconds: Model construction time.

    Returns:
        The report (see ``docs/training.md``), standard JSON.
    """
    model = built.model
    random_weights = built.weights_source == "random"
    report = {
        "candidate": settings.name,
        "architecture": settings.architecture,
        "weights_source": built.weights_source,
        "weights_seed": weights_seed if random_weights else None,
        "random_weights": random_weights,
        "classes": classes,
        "safe_class": settings.safe_class,
        "data_config": built.data_config,
        "model_kwargs": built.model_kwargs,
        "mode": fit.mode,
        "views": fit.views,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        **counts,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "n_trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "model_size_bytes": _size_bytes(model),
        "head_size_bytes": _size_bytes(model.get_classifier()),
        "timings_s": {
            "model_build": build_seconds,
            "features": fit.feature_seconds,
            "head_training": fit.training_seconds,
        },
        "cache": {
            "enabled": fit.mode == "cached_features",
            "hits": fit.stats.hits,
            "misses": fit.stats.misses,
            "key_digests": fit.stats.digests,
            "backbone_fingerprint": key.fingerprint,
            "runtime": key.runtime,
            "graph_check": fit.stats.graph_check,
        },
        "history": fit.history,
        # Recorded as a file and in MLflow: redacted, storage_options by key name only.
        "config": safe_record(dict(config)),
    }
    return json_safe(report)


def bundle_metadata(
    report: Mapping[str, Any], seed: int, weights_seed: int, epochs: int
) -> dict[str, Any]:
    """What the bundle records about how it was trained."""
    history = report["history"]
    return {
        "candidate": report["candidate"],
        "seed": seed,
        "weights_seed": weights_seed,
        "epochs": epochs,
        "mode": report["mode"],
        "views": report["views"],
        "final_val_accuracy": history[-1]["val_accuracy"] if history else None,
    }
