"""The feedback pipeline's settings: the ``feedback`` block, typed and validated once.

Unknown keys are refused with the closest known key (a misspelt ``conflict_rul`` would
otherwise resolve conflicts by the default rule without a word). Each default is the value
``conf/base/parameters_feedback.yml`` sets (``tests/test_parameters.py`` compares them); where
the files are is the catalog's (``feedback_files``).
"""

from __future__ import annotations

from typing import Any

from pydantic import field_validator

from eyecatcher.parameters import Settings
from eyecatcher.pipelines.feedback.files import DEFAULT_MAX_FILE_BYTES

CONFLICT_RULES = ("latest", "majority")
#: The largest clock skew allowed (a day): more is a wrong clock, not drift.
MAX_CLOCK_SKEW_SECONDS = 86_400


class FeedbackConfigError(ValueError):
    """The feedback settings are invalid."""


class FeedbackSettings(Settings):
    """How feedback is validated (the ``feedback`` block).

    Attributes:
        conflict_rule: ``latest`` (the most recent verdict wins) or ``majority`` (the most
            frequent verdict wins; a tie goes to the most recent of the tied verdicts).
        max_listed: Problems and conflicts listed in full in the report (all are counted).
        max_file_bytes: Files larger than this are refused unread (one ``too_large`` record).
        max_clock_skew_seconds: How far past the run's clock a timestamp may be (clocks of
            moderation tools drift); later ones are ``future_timestamp`` (they would win the
            ``latest`` rule forever).
    """

    kind = "feedback"
    error = FeedbackConfigError

    conflict_rule: str = "latest"
    max_listed: int = 50
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_clock_skew_seconds: float = 300.0

    @field_validator("conflict_rule")
    @classmethod
    def _conflict_rule(cls, value: str) -> str:
        if value not in CONFLICT_RULES:
            raise ValueError(f"must be one of {list(CONFLICT_RULES)}, got {value!r}")
        return value

    @field_validator("max_listed")
    @classmethod
    def _max_listed(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value

    @field_validator("max_file_bytes", mode="before")
    @classmethod
    def _max_file_bytes(cls, value: Any) -> int:
        # Strict: "50MB" or 5e7 is a unit mistake to name, not a number to coerce.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {value!r}")
        if value <= 0:
            raise ValueError(f"must be > 0, got {value}")
        return value

    @field_validator("max_clock_skew_seconds", mode="before")
    @classmethod
    def _max_clock_skew_seconds(cls, value: Any) -> float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not 0 <= value <= MAX_CLOCK_SKEW_SECONDS:
            raise ValueError(f"must be between 0 and {MAX_CLOCK_SKEW_SECONDS}, got {value}")
        return value
