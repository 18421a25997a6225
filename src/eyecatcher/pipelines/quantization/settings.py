"""The quantization pipeline's settings: one frozen object, every default in one place.

Unknown keys are refused with the closest known key, so a typo in ``--params`` or an
environment's YAML is an error instead of a silently ignored setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from eyecatcher.models.onnx_runtime import DEFAULT_OPSET, METHODS
from eyecatcher.parameters import unknown_keys_error
from eyecatcher.pipelines.quantization.calibration import CalibrationSettings, settings_from
from eyecatcher.pipelines.quantization.graph_optimization import TRANSFORMER_MODEL_TYPES


@dataclass(frozen=True)
class QuantizationSettings:
    """The ``quantization`` parameter block, validated (see ``parameters_quantization.yml``)."""

    methods: tuple[str, ...] = ("static", "dynamic")
    max_accuracy_drop_points: float = 5.0
    calibration_size: int = 16
    calibration_seed: int = 0
    per_channel: bool = True
    reduce_range: bool = False
    plain_attention: bool = False
    transformer_optimizer: str | None = None
    threads: int = 2
    opset: int = DEFAULT_OPSET
    export_tolerance: float = 1e-3
    eval_batch_size: int = 16
    latency: dict[str, int] = field(default_factory=lambda: {"warmup": 3, "iterations": 20})
    by_architecture: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    # fsspec options for reading s3:// images (``${globals:storage_options}``; never secrets).
    storage_options: dict[str, Any] = field(default_factory=dict)

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
        known = set(cls.__dataclass_fields__)
        if "throughput" in params:
            raise ValueError(
                "quantization.throughput is no longer a setting (since 2026-12-03): throughput "
                "is measured while scoring validation and test, in batches of eval_batch_size "
                "(docs/quantization.md). Remove the block."
            )
        unknown = set(params) - known
        for arch, override in dict(params.get("by_architecture") or {}).items():
            unknown |= {f"by_architecture.{arch}.{k}" for k in set(override) - known}
            if "by_architecture" in override:
                unknown.add(f"by_architecture.{arch}.by_architecture")
        if unknown:
            raise unknown_keys_error("quantization", unknown, known)
        calibration = dict(params.get("calibration") or {})
        calibration_known = set(CalibrationSettings.__dataclass_fields__)
        if set(calibration) - calibration_known:
            raise unknown_keys_error(
                "quantization.calibration",
                {f"calibration.{k}" for k in set(calibration) - calibration_known},
                calibration_known,
            )
        values = dict(params)
        values["calibration"] = settings_from(calibration)
        values["by_architecture"] = dict(values.get("by_architecture") or {})
        values.update(values["by_architecture"].get(architecture, {}) if architecture else {})
        if "methods" in values:
            values["methods"] = tuple(values["methods"])
        defaults = cls()
        if "latency" in values:
            values["latency"] = {**defaults.latency, **dict(values["latency"])}
        settings = cls(**values)
        bad = [m for m in settings.methods if m not in METHODS]
        if bad or not settings.methods:
            raise ValueError(
                f"quantization.methods must be a non-empty subset of {METHODS}, got "
                f"{list(settings.methods)}."
            )
        for name in ("per_channel", "reduce_range", "plain_attention"):
            if not isinstance(getattr(settings, name), bool):
                raise ValueError(
                    f"quantization.{name} must be true or false, got {getattr(settings, name)!r}."
                )
        if settings.transformer_optimizer not in (None, *TRANSFORMER_MODEL_TYPES):
            raise ValueError(
                "quantization.transformer_optimizer must be null or one of "
                f"{list(TRANSFORMER_MODEL_TYPES)}, got {settings.transformer_optimizer!r}."
            )
        if settings.max_accuracy_drop_points < 0:
            raise ValueError("quantization.max_accuracy_drop_points must be >= 0.")
        positive = {
            "calibration_size": settings.calibration_size,
            "threads": settings.threads,
            "eval_batch_size": settings.eval_batch_size,
            "latency.iterations": settings.latency["iterations"],
        }
        for name, value in positive.items():
            if int(value) < 1:
                raise ValueError(f"quantization.{name} must be >= 1, got {value}.")
        return settings

    def as_record(self) -> dict[str, Any]:
        """JSON-serialisable form, for reports."""
        return asdict(self)
