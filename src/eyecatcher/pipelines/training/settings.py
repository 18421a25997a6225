"""The training pipeline's settings: the ``training`` block, typed and validated once per node.

Unknown keys (a typo in YAML or ``--params``) are refused with the closest known key: an
ignored ``features.engin=ray`` would silently run everything on one machine. Each default is
the value ``conf/base/parameters_training.yml`` sets (``tests/test_parameters.py`` compares
them), so a block given in part means what ``make run`` means.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, StrictBool, field_validator

from eyecatcher.candidates import candidate_config
from eyecatcher.features.runtimes import FEATURE_RUNTIMES
from eyecatcher.models.head_training import HeadTrainingConfig
from eyecatcher.parameters import Settings

#: Where cold-cache features are computed (``eyecatcher.features.compute.compute_features``).
FEATURE_ENGINES = ("local", "ray")


class FeatureRaySettings(Settings):
    """``training.features.ray``: the actor pool of ``engine: ray``.

    Named like ``batch_scoring.ray``; the feature engine reserves one CPU per actor.

    Attributes:
        workers: Actors in the pool (each holds one copy of the frozen backbone).
        num_cpus: CPUs of the local Ray started when ``RAY_ADDRESS`` is unset (``None``: all
            cores); ignored on a cluster.
    """

    kind = "training.features.ray"

    workers: int = 2
    num_cpus: int | None = None

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1")
        return value

    @field_validator("num_cpus")
    @classmethod
    def _num_cpus(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be null or >= 1")
        return value


class FeatureSettings(Settings):
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

    kind = "training.features"

    cache: StrictBool = True
    views: int = 2
    clean_view: StrictBool = True
    augmentation_seed: int | None = 42
    batch_size: int = 8
    engine: str = "local"
    runtime: str = "onnxruntime"
    ray: FeatureRaySettings = Field(default_factory=FeatureRaySettings)

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        if value not in FEATURE_ENGINES:
            raise ValueError(f"must be one of {list(FEATURE_ENGINES)}, got {value!r}")
        return value

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, value: str) -> str:
        if value not in FEATURE_RUNTIMES:
            raise ValueError(f"must be one of {list(FEATURE_RUNTIMES)}, got {value!r}")
        return value

    @field_validator("views", "batch_size")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1")
        return value


class AugmentationSettings(Settings):
    """``training.augmentation``: the training split's augmentation (never validation/test)."""

    kind = "training.augmentation"

    horizontal_flip: float = 0.5
    vertical_flip: float = 0.5
    rotation_degrees: float = 15.0


class EvaluationSettings(Settings):
    """``training.evaluation``: the operating threshold's target on validation."""

    kind = "training.evaluation"

    target_fpr: float = 0.01


class SelectionSettings(Settings):
    """``training.selection``: the validation metric that picks the best candidate."""

    kind = "training.selection"

    metric: str = "macro_f1"
    greater_is_better: StrictBool = True


class ExplanationSettings(Settings):
    """``training.explanations``: which test images get a Grad-CAM heatmap, and its overlay."""

    kind = "training.explanations"

    errors: int = 3
    near_threshold: int = 3
    correct_per_class: int = 1
    alpha: float = 0.45


class TrainingMlflowSettings(Settings):
    """``training.mlflow``: what each candidate's child run holds."""

    kind = "training.mlflow"

    log_full_bundle: StrictBool = False


class SharedTrainingSettings(Settings):
    """Every setting a candidate has, shared by all candidates unless overridden.

    See ``conf/base/parameters_training.yml`` for what each means.
    """

    weights: str = "random"
    seed: int = 42
    image_size: int | None = 224
    device: str = "auto"
    num_threads: int | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.001
    weight_decay: float = 0.0001
    label_smoothing: float = 0.0
    augmentation: AugmentationSettings = Field(default_factory=AugmentationSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    safe_class: str = "safe"
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    selection: SelectionSettings = Field(default_factory=SelectionSettings)
    explanations: ExplanationSettings = Field(default_factory=ExplanationSettings)
    mlflow: TrainingMlflowSettings = Field(default_factory=TrainingMlflowSettings)

    @property
    def view_seed(self) -> int:
        """The augmented views' seed: ``features.augmentation_seed``, else ``seed``."""
        seed = self.features.augmentation_seed
        return self.seed if seed is None else seed


class TrainingSettings(SharedTrainingSettings):
    """The whole ``training`` block: the candidates, their overrides and the shared settings.

    ``candidate_overrides`` stays a mapping here: its names and keys are checked (and a typo
    warned about) by :func:`eyecatcher.candidates.candidate_config`, and the merged settings of
    each candidate are validated by :class:`CandidateSettings`.
    """

    kind = "training"

    candidates: list[str] = Field(default_factory=lambda: ["resnet50", "vit_base_patch16_224"])
    candidate_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)


class CandidateSettings(SharedTrainingSettings):
    """One candidate's effective settings: the shared block with its overrides applied.

    Attributes:
        name: The candidate (its Kedro namespace).
        architecture: Its timm architecture (defaults to the name).
        weights_seed: Seed of a random initialisation (``None``: ``seed``).
    """

    kind = "training"

    name: str
    architecture: str
    weights_seed: int | None = None

    @property
    def random_init_seed(self) -> int:
        """The seed of a random initialisation: ``weights_seed``, else ``seed``."""
        return self.seed if self.weights_seed is None else self.weights_seed


def head_config(settings: SharedTrainingSettings) -> HeadTrainingConfig:
    """The optimisation settings of the head's training loop (both loops)."""
    return HeadTrainingConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        label_smoothing=settings.label_smoothing,
        seed=settings.seed,
    )


def feature_runtime(settings: SharedTrainingSettings) -> str:
    """What computes the cached features: ``features.runtime``, or ``torch`` for the reference
    loop (which trains on PyTorch's own forward passes, and whose key says so)."""
    return settings.features.runtime if settings.features.cache else "torch"


def candidate_settings(training: Mapping[str, Any], candidate: str) -> CandidateSettings:
    """The validated settings of ``candidate`` (the ``training`` block, overrides applied).

    Raises:
        ValueError: For an unknown key (with the closest known one) or a bad value.
    """
    return CandidateSettings.parse(candidate_config(training, candidate))
