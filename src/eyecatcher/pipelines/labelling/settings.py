"""The labelling pipeline's settings: the ``labelling`` block, typed and validated once.

Unknown keys are refused with the closest known key. Each default is the value
``conf/base/parameters_labelling.yml`` sets (``tests/test_parameters.py`` compares them); the
two big nested blocks have no default here, so they live in one place only, the YAML:
``taxonomy`` (the class mapping, read by :class:`eyecatcher.rekognition.taxonomy.TaxonomyMapping`)
and ``images`` (the payload limits, :class:`eyecatcher.rekognition.payload.PayloadLimits`). Both
are validated by those classes when the block is parsed, so a typo fails before any request.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool, field_validator, model_validator

from eyecatcher.parameters import Settings
from eyecatcher.pipelines.labelling.label_sources import LabelSourceSettings
from eyecatcher.rekognition.payload import PayloadLimits
from eyecatcher.rekognition.taxonomy import TaxonomyMapping


class LabellingSettings(Settings):
    """The ``labelling`` block (see ``conf/base/parameters_labelling.yml``)."""

    kind = "labelling"

    label_sources: LabelSourceSettings = Field(default_factory=LabelSourceSettings)
    min_confidence: float = 20.0
    resend_higher_min_confidence: StrictBool = False
    project_version: str | None = None
    price_per_image_usd: float = 0.001
    workers: int = 8
    dry_run: StrictBool = False
    max_consecutive_failures: int = 25
    resend_error_codes: list[str] = Field(
        default_factory=lambda: ["AccessDeniedException", "InvalidS3ObjectException"]
    )
    storage_options: dict[str, Any] = Field(default_factory=dict)
    images: dict[str, Any]
    taxonomy: dict[str, Any]

    @field_validator("images")
    @classmethod
    def _images(cls, value: dict[str, Any]) -> dict[str, Any]:
        PayloadLimits.from_params(value)
        return value

    @field_validator("taxonomy")
    @classmethod
    def _taxonomy(cls, value: dict[str, Any]) -> dict[str, Any]:
        TaxonomyMapping.from_params(value)
        return value

    @field_validator("workers", "max_consecutive_failures")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _min_confidence_can_prove_safe(self) -> LabellingSettings:
        safe_below = self.mapping.safe_below
        if self.min_confidence > safe_below:
            raise ValueError(
                f"labelling.min_confidence ({self.min_confidence:g}) is above "
                f"labelling.taxonomy.thresholds.safe_below ({safe_below:g}): answers would "
                "never show the labels that keep an image out of `safe`, so no image could be "
                "proven safe"
            )
        return self

    @property
    def payload_limits(self) -> PayloadLimits:
        """The ``images`` block as the payload code reads it."""
        return PayloadLimits.from_params(self.images)

    @property
    def mapping(self) -> TaxonomyMapping:
        """The ``taxonomy`` block as the class mapping."""
        return TaxonomyMapping.from_params(self.taxonomy)
