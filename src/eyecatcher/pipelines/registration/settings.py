"""The registration pipeline's settings: one frozen object, every default in one place.

Unknown keys (a typo in YAML or ``--params``) are refused with the closest known key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from eyecatcher.images import (
    DEFAULT_FRAMES_TO_SCORE,
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_MAX_DECODE_PIXELS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_PIXELS,
)
from eyecatcher.monitoring.shadow import ShadowPeriod
from eyecatcher.parameters import refuse_unknown
from eyecatcher.pipelines.registration.gate import GateSettings
from eyecatcher.serving_model.contract import (
    DEFAULT_HEATMAP_SIZE,
    DEFAULT_MAX_EXPLAIN_ROWS,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_ROWS,
    DEFAULT_REQUEST_DEADLINE_S,
)


@dataclass(frozen=True)
class ServingLimits:
    """The served model's limits, frozen into each registered version."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    batch_size: int = 16
    max_rows: int = DEFAULT_MAX_ROWS
    max_aspect_ratio: int = DEFAULT_MAX_ASPECT_RATIO
    max_frames: int = DEFAULT_MAX_FRAMES
    frames_to_score: int = DEFAULT_FRAMES_TO_SCORE
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS
    max_explain_rows: int = DEFAULT_MAX_EXPLAIN_ROWS
    heatmap_size: int = DEFAULT_HEATMAP_SIZE
    request_deadline_s: int = int(DEFAULT_REQUEST_DEADLINE_S)

    def __post_init__(self) -> None:
        """Every limit is a positive integer."""
        for item in fields(self):
            if int(getattr(self, item.name)) < 1:
                raise ValueError(f"registration.serving.{item.name} must be >= 1")


@dataclass(frozen=True)
class ShadowSettings:
    """The shadow period a candidate must pass before the ``champion`` alias moves to it.

    Attributes:
        required: Check the period at all (off by default: a new project has no shadow
            runs, and the demo's ``kedro run`` promotes directly).
        min_images: Images the shadow and the champion both scored without an error.
        min_agreement: Decision agreement with the champion over those images (0-1).
        approved: An explicit approval that replaces both checks (recorded on the version).
    """

    required: bool = False
    min_images: int = 200
    min_agreement: float = 0.9
    approved: bool = False

    def __post_init__(self) -> None:
        """``min_images`` >= 1 and ``min_agreement`` within [0, 1]; the switches are booleans."""
        if not isinstance(self.required, bool) or not isinstance(self.approved, bool):
            raise ValueError("registration.shadow.required and approved must be true or false")
        if int(self.min_images) < 1:
            raise ValueError("registration.shadow.min_images must be >= 1")
        if not 0.0 <= float(self.min_agreement) <= 1.0:
            raise ValueError("registration.shadow.min_agreement must be within [0, 1]")

    def period(self) -> ShadowPeriod | None:
        """The period to check, or ``None`` when none is required."""
        if not self.required:
            return None
        return ShadowPeriod(int(self.min_images), float(self.min_agreement), self.approved)


@dataclass(frozen=True)
class RegistrationSettings:
    """The ``registration`` parameter block, validated.

    Attributes:
        model_name: Registered model name (serve ``models:/<name>@champion``).
        gate: The gate's thresholds and policies.
        serving: The served model's limits.
        shadow: The shadow period before promotion (not required by default).
        smoke_test_images: Test images sent through the new version before it is champion.
        batch_size: Images per batch when the champion is re-scored.
        storage_options: fsspec options for ``s3://`` image URIs.
        lock_wait_s: How long to wait for another registration's promotion lock.
        lock_stale_s: Age after which a promotion lock is taken as abandoned (a crashed run).
    """

    model_name: str = "eyecatcher-moderation"
    gate: GateSettings = field(default_factory=GateSettings)
    serving: ServingLimits = field(default_factory=ServingLimits)
    shadow: ShadowSettings = field(default_factory=ShadowSettings)
    smoke_test_images: int = 8
    batch_size: int = 16
    storage_options: dict[str, Any] = field(default_factory=dict)
    lock_wait_s: float = 120.0
    lock_stale_s: float = 900.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RegistrationSettings:
        """Build from the ``registration`` parameters; unknown keys are errors.

        Raises:
            ValueError: For an unknown key (with the closest known one) or a bad value.
        """
        refuse_unknown("registration", params, [f.name for f in fields(cls)])
        gate = dict(params.get("gate") or {})
        refuse_unknown("registration.gate", gate, [f.name for f in fields(GateSettings)])
        serving = dict(params.get("serving") or {})
        refuse_unknown("registration.serving", serving, [f.name for f in fields(ServingLimits)])
        shadow = dict(params.get("shadow") or {})
        refuse_unknown("registration.shadow", shadow, [f.name for f in fields(ShadowSettings)])
        values = {k: v for k, v in params.items() if k not in {"gate", "serving", "shadow"}}
        settings = cls(
            gate=GateSettings(**gate),
            shadow=ShadowSettings(**shadow),
            serving=ServingLimits(**{k: int(v) for k, v in serving.items()}),
            **values,
        )
        if settings.smoke_test_images < 1 or settings.batch_size < 1:
            raise ValueError("registration.smoke_test_images and batch_size must be >= 1")
        return settings
