"""The frozen timm model of a candidate: device, seeding, construction and its cache key."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from eyecatcher.features.cache import BackboneKey, backbone_fingerprint
from eyecatcher.features.views import ViewSpec, training_views
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.factory import create_classifier, freeze_backbone, model_kwargs_for_size
from eyecatcher.pipelines.training.settings import CandidateSettings, SharedTrainingSettings
from eyecatcher.preprocessing import data_config_for

logger = logging.getLogger(__name__)


@dataclass
class FrozenModel:
    """A timm classifier with a frozen backbone and what it was built from."""

    model: torch.nn.Module
    weights_source: str
    data_config: dict[str, Any]
    model_kwargs: dict[str, Any]


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU (logged); anything else goes to torch.

    Raises:
        ValueError: ``cuda`` asked for on a machine where torch sees no CUDA device.
    """
    if device == "auto":
        if torch.cuda.is_available():
            logger.info("Device auto: CUDA (%s)", torch.cuda.get_device_name(0))
            return torch.device("cuda")
        logger.info("Device auto: no CUDA device visible to torch; running on the CPU")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"training.device is {device!r} but torch sees no CUDA device (CPU-only build or "
            "no GPU): set training.device to auto or cpu."
        )
    return resolved


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (batch order, view choice, augmentation)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_frozen_model(
    settings: CandidateSettings, n_classes: int, weights_seed: int
) -> FrozenModel:
    """Create the candidate's timm model (weights policy of the factory), backbone frozen.

    Args:
        settings: The candidate's settings (``architecture``, ``image_size``, ``weights``).
        n_classes: Number of output classes.
        weights_seed: Seed set right before construction.

    Returns:
        The model in eval mode, its weights source, data config and creation kwargs.
    """
    architecture, image_size = settings.architecture, settings.image_size
    model_kwargs = model_kwargs_for_size(architecture, image_size)
    # Seed right before construction: a random backbone is then the same network every run,
    # which is what makes its cached features reusable.
    torch.manual_seed(weights_seed)
    model, weights_source = create_classifier(
        architecture, n_classes, settings.weights, **model_kwargs
    )
    freeze_backbone(model)
    model.eval()
    return FrozenModel(model, weights_source, data_config_for(model, image_size), model_kwargs)


def backbone_key(
    model: torch.nn.Module,
    *,
    architecture: str,
    weights_source: str,
    weights_seed: int,
    data_config: Mapping[str, Any],
    model_kwargs: Mapping[str, Any],
    runtime: str = "torch",
) -> BackboneKey:
    """The model half of the feature cache key (see ``docs/training.md``)."""
    return BackboneKey(
        architecture=architecture,
        weights_source=weights_source,
        weights_seed=weights_seed,
        fingerprint=backbone_fingerprint(model),
        data_config=data_config,
        model_kwargs=model_kwargs,
        runtime=runtime,
    )


def frozen_model_key(
    built: FrozenModel, architecture: str, weights_seed: int, runtime: str = "torch"
) -> BackboneKey:
    """The cache key of a freshly built frozen model, features computed by ``runtime``."""
    return backbone_key(
        built.model,
        architecture=architecture,
        weights_source=built.weights_source,
        weights_seed=weights_seed,
        data_config=built.data_config,
        model_kwargs=built.model_kwargs,
        runtime=runtime,
    )


def warn_if_random(candidate: str, built: FrozenModel, architecture: str) -> None:
    """Say loudly that a random backbone's metrics describe the demo, not a real model."""
    if built.weights_source == "random":
        logger.warning(
            "Candidate %s trains on a RANDOMLY INITIALISED %s backbone (weights: random); "
            "its metrics describe the demo, not a pretrained model.",
            candidate,
            architecture,
        )


def bundle_backbone_key(
    bundle: ClassifierBundle, model: torch.nn.Module, runtime: str = "torch"
) -> BackboneKey:
    """The cache key of a trained bundle's backbone (the same entries training wrote)."""
    return backbone_key(
        model,
        architecture=bundle.architecture,
        weights_source=bundle.weights_source,
        weights_seed=int(bundle.metadata.get("weights_seed", 0)),
        data_config=bundle.data_config,
        model_kwargs=bundle.model_kwargs,
        runtime=runtime,
    )


def configured_views(settings: SharedTrainingSettings) -> list[ViewSpec]:
    """The training views (clean + seeded augmentations) of ``features`` settings."""
    return training_views(
        settings.features.views,
        settings.augmentation.model_dump(),
        settings.view_seed,
        include_clean=settings.features.clean_view,
    )
