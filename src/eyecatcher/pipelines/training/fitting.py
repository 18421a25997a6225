"""Fitting a candidate's head: on cached backbone features, or with the reference loop."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from eyecatcher.features.cache import BackboneKey, FeatureCache
from eyecatcher.features.compute import FeatureStats, compute_features
from eyecatcher.features.views import CLEAN_VIEW, ViewSpec, read_image
from eyecatcher.models.head_training import train_head_on_features, train_head_reference
from eyecatcher.pipelines.training.settings import (
    FeatureSettings,
    SharedTrainingSettings,
    TrainingSettings,
    head_config,
)

logger = logging.getLogger(__name__)


@dataclass
class HeadFit:
    """What fitting produced besides the trained head (trained in place)."""

    history: list[dict[str, float]]
    mode: str
    views: list[str]
    stats: FeatureStats = field(default_factory=FeatureStats)
    feature_seconds: float = 0.0
    training_seconds: float = 0.0


def fit_head(
    model: torch.nn.Module,
    key: BackboneKey,
    train: tuple[list[tuple[str, str]], np.ndarray],
    validation: tuple[list[tuple[str, str]], np.ndarray],
    config: SharedTrainingSettings | Mapping[str, Any],
    *,
    views: list[ViewSpec],
    feature_cache: FeatureCache,
    device: torch.device,
    candidate: str,
) -> HeadFit:
    """Train ``model``'s head in place on the train split, validating every epoch.

    With ``features.cache: true`` the backbone runs once per image and view and the head trains
    on cached features; with ``false`` the reference loop runs the backbone on freshly
    augmented images every epoch. ``features.engine: ray`` computes the cache misses of both
    splits on Ray actors (one Ray session for the two splits); the cache entries are the
    local engine's.

    Args:
        model: The frozen model, on ``device``.
        key: Its backbone cache key.
        train: ``(images, labels)`` of the train split.
        validation: ``(images, labels)`` of the validation split.
        config: The candidate's settings, or a whole ``training`` block (validated here).
        views: Training views (cached mode).
        feature_cache: Handle on the feature cache.
        device: Where to run.
        candidate: Name, for progress bars.

    Returns:
        The per-epoch history, mode, views, cache statistics and timings.

    Raises:
        ValueError: If ``features`` has an unknown key or a bad value.
    """
    settings = (
        config if isinstance(config, SharedTrainingSettings) else TrainingSettings.parse(config)
    )
    features = settings.features
    if not features.cache:
        if features.engine == "ray":
            logger.warning(
                "%s: training.features.engine is ray, but features.cache is false: the "
                "reference loop runs in this process (Ray computes cached features only)",
                candidate,
            )
        return _fit_reference(
            model, key, train, validation, settings=settings, device=device, candidate=candidate
        )

    return _fit_cached(
        model,
        key,
        train,
        validation,
        settings=settings,
        views=views,
        feature_cache=feature_cache,
        device=device,
        candidate=candidate,
    )


def _fit_cached(
    model: torch.nn.Module,
    key: BackboneKey,
    train: tuple[list[tuple[str, str]], np.ndarray],
    validation: tuple[list[tuple[str, str]], np.ndarray],
    *,
    settings: SharedTrainingSettings,
    views: list[ViewSpec],
    feature_cache: FeatureCache,
    device: torch.device,
    candidate: str,
) -> HeadFit:
    """Features once per image and view (from the cache when there), then the head on them."""
    features = settings.features
    start = time.perf_counter()
    fit = HeadFit([], "cached_features", [view.name for view in views])
    computed = {}
    with feature_engine_session(features):
        for split, (images, _), split_views in (
            ("train", train, views),
            ("validation", validation, [ViewSpec(CLEAN_VIEW)]),
        ):
            computed[split], stats = compute_features(
                model,
                key,
                images,
                split_views,
                cache=feature_cache,
                batch_size=features.batch_size,
                device=device,
                description=f"{candidate}: {split} features",
                engine=features.engine,
                workers=features.ray.workers,
                storage_options=settings.storage_options,
            )
            fit.stats.add(stats)
    fit.feature_seconds = _since(start)
    start = time.perf_counter()
    fit.history = train_head_on_features(
        model.get_classifier(),
        [computed["train"][view.name] for view in views],
        train[1],
        computed["validation"][CLEAN_VIEW],
        validation[1],
        config=head_config(settings),
        device=device,
        description=f"{candidate}: head epochs",
    )
    fit.training_seconds = _since(start)
    return fit


def _fit_reference(
    model: torch.nn.Module,
    key: BackboneKey,
    train: tuple[list[tuple[str, str]], np.ndarray],
    validation: tuple[list[tuple[str, str]], np.ndarray],
    *,
    settings: SharedTrainingSettings,
    device: torch.device,
    candidate: str,
) -> HeadFit:
    """The reference loop: the backbone on freshly augmented images every epoch."""
    start = time.perf_counter()
    history = train_head_reference(
        model,
        functools.partial(read_image, storage_options=settings.storage_options),
        [(int(y), sha, uri) for (sha, uri), y in zip(*train, strict=True)],
        [(int(y), sha, uri) for (sha, uri), y in zip(*validation, strict=True)],
        data_config=key.data_config,
        augmentation=settings.augmentation.model_dump(),
        config=head_config(settings),
        feature_batch_size=settings.features.batch_size,
        device=device,
        description=f"{candidate}: reference epochs",
    )
    return HeadFit(history, "reference", ["on_the_fly"], FeatureStats(), 0.0, _since(start))


@contextlib.contextmanager
def feature_engine_session(features: FeatureSettings) -> Iterator[str]:
    """Hold one Ray session around a candidate's feature extraction when ``engine`` is ``ray``.

    Each ``compute_features`` call would otherwise start (and stop) its own local Ray; inside
    this block they reuse the one opened here. The local engine needs no Ray at all.

    Args:
        features: The validated ``training.features`` settings.

    Yields:
        ``"none"`` for the local engine, else where Ray runs (see
        :func:`eyecatcher.distributed.session.ray_session`).
    """
    if features.engine != "ray":
        yield "none"
        return
    from eyecatcher.distributed.session import ray_session

    with ray_session(num_cpus=features.ray.num_cpus) as where:
        yield where


def _since(start: float) -> float:
    return time.perf_counter() - start
