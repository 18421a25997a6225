"""The splitting pipeline's settings: the ``splitting`` block, typed and validated once.

Unknown keys are refused with the closest known key. Each default is the value
``conf/base/parameters_splitting.yml`` sets (``tests/test_parameters.py`` compares them). The
split itself is configured by :class:`~eyecatcher.pipelines.splitting.balanced_split.SplitConfig`
(the pure algorithm's input, which checks the ratios); :meth:`SplittingSettings.split_config`
builds it.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from eyecatcher.parameters import Settings
from eyecatcher.pipelines.splitting.balanced_split import SmallClassPolicy, SplitConfig


class NearDuplicateSettings(Settings):
    """``splitting.near_duplicates``: which images count as one and must share a split.

    Attributes:
        max_distance: Largest pHash distance (bits) between near-duplicates; at most 32.
        workers: Threads reading and decoding images to hash them.
        max_pixels: Decoding limit of an image to hash.
        storage_options: fsspec options for ``s3://`` URIs (never credentials).
    """

    kind = "splitting.near_duplicates"

    max_distance: int = 8
    workers: int = 4
    max_pixels: int = 50_000_000
    storage_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value


class SplittingSettings(Settings):
    """The ``splitting`` block (see ``conf/base/parameters_splitting.yml``)."""

    kind = "splitting"

    seed: int = 42
    max_per_class: int = 1000
    ratios: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1}
    )
    min_per_class: int = 10
    on_small_class: SmallClassPolicy = "drop"
    near_duplicates: NearDuplicateSettings = Field(default_factory=NearDuplicateSettings)

    def split_config(self) -> SplitConfig:
        """The balanced split's configuration (it refuses ratios that cannot be a split)."""
        return SplitConfig(
            max_per_class=self.max_per_class,
            ratios=dict(self.ratios),
            seed=self.seed,
            min_per_class=self.min_per_class,
            on_small_class=self.on_small_class,
        )
