"""The quantization pipeline's settings: the ``quantization`` block, typed, validated once.

Unknown keys are refused with the closest known key, so a typo in ``--params`` or an
environment's YAML is an error instead of a silently ignored setting. Each default is the value
``conf/base/parameters_quantization.yml`` sets (``tests/test_parameters.py`` compares them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, StrictBool, field_validator

from eyecatcher.models.onnx_runtime import DEFAULT_OPSET, METHODS
from eyecatcher.parameters import Settings, unknown_keys_error
from eyecatcher.pipelines.quantization.calibration import CalibrationSettings
from eyecatcher.pipelines.quantization.graph_optimization import TRANSFORMER_MODEL_TYPES


def _at_least_one(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}.")
    return value


class LatencySettings(Settings):
    """``quantization.latency``: the batch-1 latency benchmark (warm-up excluded)."""

    kind = "quantization.latency"

    warmup: int = 3
    iterations: int = 20

    _iterations = field_validator("iterations")(_at_least_one)


class QuantizationSettings(Settings):
    """The ``quantization`` parameter block, validated (see ``parameters_quantization.yml``)."""

    kind = "quantization"

    methods: tuple[str, ...] = ("static", "dynamic")
    max_accuracy_drop_points: float = 5.0
    calibration_size: int = 16
    calibration_seed: int = 0
    per_channel: StrictBool = True
    reduce_range: StrictBool = False
    plain_attention: StrictBool = False
    transformer_optimizer: str | None = None
    threads: int = 2
    opset: int = DEFAULT_OPSET
    export_tolerance: float = 1e-3
    eval_batch_size: int = 16
    latency: LatencySettings = Field(default_factory=LatencySettings)
    # Measured per network (docs/quantization.md): dynamic int8 is as fast as static for
    # ViT-B/16, agrees better with fp32 and builds in a fifth of the time.
    by_architecture: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"vit_base_patch16_224": {"methods": ["dynamic"]}}
    )
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings)
    # fsspec options for reading s3:// images (``${globals:storage_options}``; never secrets).
    storage_options: dict[str, Any] = Field(default_factory=dict)

    _positive = field_validator("calibration_size", "threads", "eval_batch_size")(_at_least_one)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(method not in METHODS for method in value):
            raise ValueError(f"must be a non-empty subset of {METHODS}, got {list(value)}.")
        return value

    @field_validator("transformer_optimizer")
    @classmethod
    def _optimizer(cls, value: str | None) -> str | None:
        if value not in (None, *TRANSFORMER_MODEL_TYPES):
            raise ValueError(
                f"must be null or one of {list(TRANSFORMER_MODEL_TYPES)}, got {value!r}."
            )
        return value

    @field_validator("max_accuracy_drop_points")
    @classmethod
    def _drop(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be >= 0.")
        return value

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], architecture: str | None = None
    ) -> QuantizationSettings:
        """Build and validate the settings; unknown keys and bad values are clear errors.

        Args:
            params: The ``quantization`` parameter block.
            architecture: A timm architecture whose ``by_architecture`` overrides apply (which
                int8 method wins depends on the network, see docs/quantization.md).

        Raises:
            ValueError: For an unknown key, an unknown method, or an out-of-range value.
        """
        if "throughput" in params:
            raise ValueError(
                "quantization.throughput is no longer a setting (since 2026-12-03): throughput "
                "is measured while scoring validation and test, in batches of eval_batch_size "
                "(docs/quantization.md). Remove the block."
            )
        _refuse_unknown_overrides(params)
        settings = cls.parse(params)
        override = settings.by_architecture.get(architecture, {}) if architecture else {}
        # An override replaces whole keys (a `latency` block in it is complete with defaults).
        return cls.parse({**params, **override}) if override else settings

    def as_record(self) -> dict[str, Any]:
        """JSON-serialisable form, for reports."""
        return self.model_dump(mode="json")


def _refuse_unknown_overrides(params: Mapping[str, Any]) -> None:
    """An override may set any key of the block except ``by_architecture`` itself."""
    known = set(QuantizationSettings.model_fields)
    unknown = set()
    for arch, override in dict(params.get("by_architecture") or {}).items():
        unknown |= {f"by_architecture.{arch}.{key}" for key in set(override) - known}
        if "by_architecture" in override:
            unknown.add(f"by_architecture.{arch}.by_architecture")
    if unknown:
        raise unknown_keys_error("quantization", unknown, known)
