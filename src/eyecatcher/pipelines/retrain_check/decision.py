"""The retrain rule: thresholds on new feedback, disagreement with humans and drift.

Retrain when any of these holds (each configurable, each reported with its numbers):

1. no champion is registered;
2. ``min_new_feedback`` or more feedback records arrived after the champion was registered;
3. for some class with at least ``min_items_per_class`` human verdicts on images the champion
   scored, the share the champion got wrong is at or above ``max_disagreement_rate``;
4. ``retrain_on_drift`` and the drift report has an alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from eyecatcher.monitoring.drift import DriftSettings
from eyecatcher.outcomes import ConfigurationError, RetrainDue


class RetrainConfigError(ConfigurationError):
    """The ``retrain_check`` parameters are invalid."""


class RetrainRequiredError(RetrainDue):
    """A threshold was crossed: ``kedro run`` should retrain (the decision file says why)."""


@dataclass(frozen=True)
class RetrainSettings:
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

    min_new_feedback: int = 50
    max_disagreement_rate: float = 0.2
    min_items_per_class: int = 5
    retrain_on_drift: bool = True
    fail_on_retrain: bool = True
    max_images: int = 500
    seed: int = 0
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    drift: DriftSettings = field(default_factory=DriftSettings)

    def __post_init__(self) -> None:
        if self.min_new_feedback < 1:
            raise RetrainConfigError(f"min_new_feedback must be >= 1, got {self.min_new_feedback}")
        if not 0 < self.max_disagreement_rate <= 1:
            raise RetrainConfigError(
                f"max_disagreement_rate must be in (0, 1], got {self.max_disagreement_rate}"
            )
        if self.min_items_per_class < 1 or self.max_images < 1:
            raise RetrainConfigError("min_items_per_class and max_images must be >= 1")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> RetrainSettings:
        """Build from ``params:retrain_check``, refusing unknown keys.

        Raises:
            RetrainConfigError: On unknown keys or invalid values.
        """
        params = dict(params or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise RetrainConfigError(
                f"unknown retrain_check setting(s) {unknown}; known: {sorted(known)}"
            )
        params["drift"] = DriftSettings.from_params(params.get("drift"))
        params["storage_options"] = dict(params.get("storage_options") or {})
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings for the report."""
        out = asdict(self)
        out["storage_options"] = sorted(self.storage_options)  # names only, never values
        return out


def disagreement_per_class(
    scored: pd.DataFrame, verdicts: pd.DataFrame, min_items: int
) -> dict[str, dict[str, Any]]:
    """How often the champion's class differs from the human verdict, per human class.

    Args:
        scored: The champion's verdicts keyed by ``sha256`` (``class``; error rows dropped;
            repeated images count once).
        verdicts: One human verdict per image (``sha256``, ``verdict``).
        min_items: Classes with fewer human verdicts are reported, not judged.

    Returns:
        ``{class: {"items", "disagreements", "rate", "judged"}}``.
    """
    # Copies of one image scored under several paths get one verdict: count the image once.
    unique = scored.drop_duplicates("sha256")[["sha256", "class"]]
    joined = verdicts.merge(unique, on="sha256", how="inner")
    result: dict[str, dict[str, Any]] = {}
    for cls, rows in joined.groupby("verdict", sort=True):
        wrong = int((rows["class"] != rows["verdict"]).sum())
        result[str(cls)] = {
            "items": len(rows),
            "disagreements": wrong,
            "rate": wrong / len(rows),
            "judged": len(rows) >= min_items,
        }
    return result


def decide(
    *,
    champion_version: str | None,
    new_feedback: int,
    disagreement: Mapping[str, Mapping[str, Any]] | None,
    drift: Mapping[str, Any] | None,
    settings: RetrainSettings,
) -> tuple[bool, list[str], list[str]]:
    """Apply the rule.

    Args:
        champion_version: The champion's version, ``None`` when there is none.
        new_feedback: Feedback records since the champion's registration.
        disagreement: Output of :func:`disagreement_per_class` (``None``: not measured).
        drift: The drift report (``None``: not measured).
        settings: The thresholds.

    Returns:
        ``(retrain, reasons, notes)``: the crossed thresholds, and what was checked and held.
    """
    reasons: list[str] = []
    notes: list[str] = []
    if champion_version is None:
        reasons.append("no champion is registered")
    if new_feedback >= settings.min_new_feedback:
        reasons.append(
            f"{new_feedback} new feedback records >= min_new_feedback={settings.min_new_feedback}"
        )
    else:
        notes.append(
            f"{new_feedback} new feedback records < min_new_feedback={settings.min_new_feedback}"
        )
    if disagreement is None:
        notes.append("disagreement with humans not measured (no verdicts of the champion)")
    for cls, row in (disagreement or {}).items():
        text = (
            f"class {cls}: champion disagrees with {row['disagreements']} of {row['items']} "
            f"human verdicts ({row['rate']:.0%})"
        )
        if not row["judged"]:
            notes.append(f"{text}: not judged, fewer than {settings.min_items_per_class}")
        elif row["rate"] >= settings.max_disagreement_rate:
            reasons.append(f"{text} >= max_disagreement_rate={settings.max_disagreement_rate:g}")
        else:
            notes.append(f"{text} < max_disagreement_rate={settings.max_disagreement_rate:g}")
    if drift is None:
        notes.append("drift not measured (no reference or no current batch)")
    elif drift["alert"]:
        text = f"drift alert on {', '.join(drift['alerts'])}"
        if settings.retrain_on_drift:
            reasons.append(text)
        else:
            notes.append(f"{text} (retrain_on_drift is off)")
    else:
        notes.append("no drift alert")
    return bool(reasons), reasons, notes
