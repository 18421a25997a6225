"""The training pipeline's feature-extraction settings: ``training.features``, validated once.

Unknown keys (a typo in YAML or ``--params``) are refused with the closest known key: an
ignored ``features.engin=ray`` would silently run everything on one machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from eyecatcher.features.runtimes import FEATURE_RUNTIMES
from eyecatcher.parameters import refuse_unknown

#: Where cold-cache features are computed (``eyecatcher.features.compute.compute_features``).
FEATURE_ENGINES = ("local", "ray")


@dataclass(frozen=True)
class FeatureRaySettings:
    """``training.features.ray``: the actor pool of ``engine: ray``.

    Named like ``batch_scoring.ray``; the feature engine reserves one CPU per actor.

    Attributes:
        workers: Actors in the pool (each holds one copy of the frozen backbone).
        num_cpus: CPUs of the local Ray started when ``RAY_ADDRESS`` is unset (``None``: all
            cores); ignored on a cluster.
    """

    workers: int = 2
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        """``workers`` >= 1; ``num_cpus`` null or >= 1."""
        if int(self.workers) < 1:
            raise ValueError("training.features.ray.workers must be >= 1")
        if self.num_cpus is not None and int(self.num_cpus) < 1:
            raise ValueError("training.features.ray.num_cpus must be null or >= 1")


@dataclass(frozen=True)
class FeatureSettings:
    """``training.features``: how backbone features are computed and cached.

    Attributes:
        cache: Train the head on cached features (``False``: the reference loop).
        views: Views per training image.
        clean_view: View 0 is the clean image.
        augmentation_seed: Seed of the augmented views (``None``: ``training.seed``).
        batch_size: Images per backbone forward pass (and per Ray task).
        engine: ``local`` (this process) or ``ray`` (cold-cache misses on Ray actors).
        runtime: What runs the frozen backbone for cached features: ``onnxruntime`` (its
            exported graph, checked against PyTorch; faster on CPUs), ``torch``, or
            ``torch_bf16`` (bfloat16 autocast: ~2x on CPUs with native bfloat16, ~1% off the
            float32 vectors; refused elsewhere). Part of the cache key. The reference loop
            (``cache: false``) always runs PyTorch.
        ray: The actor pool of ``engine: ray``.
    """

    cache: bool = True
    views: int = 2
    clean_view: bool = True
    augmentation_seed: int | None = None
    batch_size: int = 16
    engine: str = "local"
    runtime: str = "onnxruntime"
    ray: FeatureRaySettings = field(default_factory=FeatureRaySettings)

    def __post_init__(self) -> None:
        """A known engine and runtime, a boolean ``cache``, positive ``views``, ``batch_size``."""
        if self.engine not in FEATURE_ENGINES:
            raise ValueError(
                f"training.features.engine must be one of {list(FEATURE_ENGINES)}, "
                f"got {self.engine!r}"
            )
        if self.runtime not in FEATURE_RUNTIMES:
            raise ValueError(
                f"training.features.runtime must be one of {list(FEATURE_RUNTIMES)}, "
                f"got {self.runtime!r}"
            )
        if not isinstance(self.cache, bool) or not isinstance(self.clean_view, bool):
            raise ValueError("training.features.cache and clean_view must be true or false")
        if int(self.views) < 1 or int(self.batch_size) < 1:
            raise ValueError("training.features.views and batch_size must be >= 1")

    @classmethod
    def from_params(cls, features: Mapping[str, Any] | None) -> FeatureSettings:
        """Build from the ``training.features`` block (absent keys take their defaults).

        Args:
            features: The block, or ``None``.

        Returns:
            The validated settings.

        Raises:
            ValueError: On an unknown key (with the closest known one) or a bad value.
        """
        given = dict(features or {})
        refuse_unknown("training.features", given, (item.name for item in fields(cls)))
        ray = dict(given.pop("ray", None) or {})
        refuse_unknown(
            "training.features.ray", ray, (item.name for item in fields(FeatureRaySettings))
        )
        return cls(**given, ray=FeatureRaySettings(**ray))
