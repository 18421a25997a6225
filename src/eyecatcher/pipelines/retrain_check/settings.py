"""The retrain check's settings: the ``retrain_check`` block, typed and validated once per node.

Unknown keys are refused with the closest known key (a misspelt ``min_new_feedbak`` would
otherwise leave the threshold at its default without a word), as ``RetrainConfigError``: the
``bad_configuration`` exit code. Each default is the value
``conf/base/parameters_retrain_check.yml`` sets (``tests/test_parameters.py`` compares them).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool, field_validator

from eyecatcher.monitoring.drift import DriftSettings
from eyecatcher.outcomes import ConfigurationError
from eyecatcher.parameters import Settings


class RetrainConfigError(ConfigurationError):
    """The ``retrain_check`` parameters are invalid."""


class RetrainSettings(Settings):
    """The ``retrain_check`` parameter block.

    Attributes:
        min_new_feedback: New feedback records that trigger retraining.
        max_disagreement_rate: Per-class share of human verdicts the champion got wrong that
            triggers retraining.
        min_items_per_class: Human verdicts a class needs before its rate is judged.
        retrain_on_drift: Whether a drift alert triggers retraining.
        fail_on_retrain: Exit non-zero when retraining is due (for CI and cron).
        max_images: Images measured per side for the image-statistics drift.
        seed: Seed of that sample.
        storage_options: fsspec options for reading images (non-secret).
        drift: Drift thresholds (:class:`~eyecatcher.monitoring.drift.DriftSettings`).
    """

    kind = "retrain_check"
    error = RetrainConfigError

    min_new_feedback: int = 50
    max_disagreement_rate: float = 0.2
    min_items_per_class: int = 5
    retrain_on_drift: StrictBool = True
    fail_on_retrain: StrictBool = True
    max_images: int = 500
    seed: int = 0
    storage_options: dict[str, Any] = Field(default_factory=dict)
    drift: DriftSettings = Field(default_factory=DriftSettings)

    @field_validator("min_new_feedback", "min_items_per_class", "max_images")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    @field_validator("max_disagreement_rate")
    @classmethod
    def _rate(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"must be in (0, 1], got {value}")
        return value

    @field_validator("storage_options", "drift", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        # YAML's `storage_options:` (or `drift:`) with nothing after it is null: no options,
        # every drift default, as an empty block means.
        return {} if value is None else value

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings for the report: ``storage_options`` by key name only."""
        out = self.model_dump()
        out["storage_options"] = sorted(self.storage_options)  # names only, never values
        return out
