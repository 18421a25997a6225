"""The review queue's settings: the ``review_queue`` block, typed and validated once.

Unknown keys are refused with the closest known key (a misspelt ``audit_rat`` would otherwise
audit the default share without a word). Each default is the value
``conf/base/parameters_review_queue.yml`` sets (``tests/test_parameters.py`` compares them).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydantic import field_validator

from eyecatcher.parameters import Settings


class ReviewQueueSettings(Settings):
    """How the queue is built (the ``review_queue`` parameter block).

    Attributes:
        day: The scoring day queued: ``latest`` (the most recent UTC day in ``scored_at``),
            a date ``YYYY-MM-DD`` (UTC) or ``all``.
        audit_rate: Share of the day's ``allow`` and of its ``block`` verdicts queued for
            audit, each rounded up (so any rate above 0 audits at least one of each).
        seed: Seed of the audit sample; the same seed picks the same images.
        image_url_prefix: Put in front of a local path to make the URL Label Studio loads
            (``/data/local-files/?d=`` for its local-files storage); ``None``: the path as
            scored. URIs with a scheme (``s3://``, ``https://``) are never prefixed.
    """

    kind = "review_queue"

    day: str = "latest"
    audit_rate: float = 0.02
    seed: int = 0
    image_url_prefix: str | None = None

    @field_validator("day", mode="before")
    @classmethod
    def _day(cls, value: Any) -> str:
        # YAML reads `day: 2026-12-07` as a date: the same day as the text.
        text = str(value)
        if text not in ("latest", "all"):
            try:
                pd.Timestamp(text)
            except ValueError:
                raise ValueError(
                    f"must be 'latest', 'all' or a date (YYYY-MM-DD), got {text!r}"
                ) from None
        return text

    @field_validator("audit_rate")
    @classmethod
    def _audit_rate(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"must be in [0, 1], got {value}")
        return value
