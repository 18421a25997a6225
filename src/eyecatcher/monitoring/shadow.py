"""Shadow challenger: score with the champion and a shadow side by side and compare them.

The shadow never decides anything; its answers sit next to the champion's in ``shadow_``
columns so that a reviewer sees how often, and where, a promotion would change a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw

from eyecatcher.images import decode_image
from eyecatcher.storage import read_bytes

#: Columns of the shadow's answer that are copied next to the champion's.
SHADOW_SOURCE_COLUMNS = ("class", "unsafe_score", "decision", "model_version", "error")
SHADOW_PREFIX = "shadow_"
#: Keys of the shadow report (written by batch scoring, read by registration's shadow period)
#: that name the compared versions: here, so that neither pipeline imports the other.
SHADOW_VERSION_KEY = "shadow_model_version"
CHAMPION_VERSION_KEY = "champion_model_version"


class ShadowMismatchError(ValueError):
    """The champion's and the shadow's answers do not cover the same items."""


def add_shadow_columns(
    champion: pd.DataFrame, shadow: pd.DataFrame, key: str = "path"
) -> pd.DataFrame:
    """Put the shadow's answers next to the champion's, one row per item.

    Args:
        champion: The champion's verdict table (``key``, ``class``, ``unsafe_score``,
            ``decision``, ...).
        shadow: The shadow's verdict table for the same items.
        key: The column that identifies an item.

    Returns:
        The champion's table with ``shadow_class``, ``shadow_unsafe_score``,
        ``shadow_decision``, ``shadow_model_version`` and ``shadow_error`` added (the
        columns the shadow's table has), in the champion's row order.

    Raises:
        ShadowMismatchError: When the tables do not hold the same items, or repeat one.
    """
    for name, table in (("champion", champion), ("shadow", shadow)):
        if table[key].duplicated().any():
            raise ShadowMismatchError(f"the {name}'s verdicts repeat items in {key!r}")
    missing = set(champion[key]) ^ set(shadow[key])
    if missing:
        raise ShadowMismatchError(
            f"{len(missing)} item(s) were scored by only one of champion and shadow, e.g. "
            f"{sorted(map(str, missing))[:3]}"
        )
    copied = [c for c in SHADOW_SOURCE_COLUMNS if c in shadow.columns]
    renamed = shadow[[key, *copied]].rename(columns={c: SHADOW_PREFIX + c for c in copied})
    return champion.merge(renamed, on=key, how="left", validate="one_to_one")


def shadow_comparison(
    verdicts: pd.DataFrame, key: str = "path", max_listed: int = 50
) -> dict[str, Any]:
    """Agreement between champion and shadow, a per-class confusion and the disagreements.

    Items where either model returned an error are counted apart and not compared.

    Args:
        verdicts: Output of :func:`add_shadow_columns`.
        key: The item identifier column (listed with each disagreement).
        max_listed: Disagreements listed in full (all are counted).

    Returns:
        ``compared``, ``errors``, ``class_agreement_rate``, ``decision_agreement_rate`` (None
        when nothing was compared), ``confusion`` (``{champion class: {shadow class: n}}``),
        ``decision_confusion``, ``disagreements`` (up to ``max_listed`` rows, the largest
        unsafe-score gaps first) and ``n_disagreements``.
    """
    errors = verdicts["error"].notna() if "error" in verdicts.columns else False
    if "shadow_error" in verdicts.columns:
        errors = errors | verdicts["shadow_error"].notna()
    errors = pd.Series(errors, index=verdicts.index).astype(bool)
    rows = verdicts[~errors]
    compared = len(rows)
    same_class = rows["class"] == rows["shadow_class"]
    same_decision = rows["decision"] == rows["shadow_decision"]
    confusion = pd.crosstab(rows["class"], rows["shadow_class"]) if compared else pd.DataFrame()
    decisions = (
        pd.crosstab(rows["decision"], rows["shadow_decision"]) if compared else pd.DataFrame()
    )
    differing = rows[~same_class | ~same_decision].copy()
    differing["_gap"] = (differing["unsafe_score"] - differing["shadow_unsafe_score"]).abs()
    listed_columns = [
        c
        for c in (
            key,
            "class",
            "shadow_class",
            "decision",
            "shadow_decision",
            "unsafe_score",
            "shadow_unsafe_score",
        )
        if c in differing.columns
    ]
    listed = differing.sort_values("_gap", ascending=False).head(max_listed)[listed_columns]
    return {
        "compared": compared,
        "errors": int(errors.sum()),
        "class_agreement_rate": float(same_class.mean()) if compared else None,
        "decision_agreement_rate": float(same_decision.mean()) if compared else None,
        "confusion": _nested(confusion),
        "decision_confusion": _nested(decisions),
        "n_disagreements": len(differing),
        "disagreements": listed.to_dict(orient="records"),
    }


def _nested(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    return {
        str(row): {str(col): int(n) for col, n in values.items() if n}
        for row, values in table.to_dict(orient="index").items()
    }


@dataclass(frozen=True)
class ShadowPeriod:
    """What a shadow must show before the ``champion`` alias may move to it.

    Built from ``registration.shadow``
    (:class:`~eyecatcher.pipelines.registration.settings.ShadowSettings` holds the defaults,
    equal to ``conf/base``'s), so no value here has a second default.

    Attributes:
        min_images: Items compared (errors excluded) at least.
        min_agreement: Decision agreement rate with the champion at least.
        approved: An explicit approval that replaces both checks (recorded on the version).
    """

    min_images: int
    min_agreement: float
    approved: bool

    def check(self, comparison: dict[str, Any]) -> tuple[bool, list[str]]:
        """Whether a shadow comparison satisfies the period.

        Args:
            comparison: Output of :func:`shadow_comparison`.

        Returns:
            ``(passed, reasons)``; the reasons say what passed or what is missing.
        """
        if self.approved:
            return True, ["explicitly approved (shadow checks not applied)"]
        reasons: list[str] = []
        compared = int(comparison.get("compared") or 0)
        agreement = comparison.get("decision_agreement_rate")
        ok_images = compared >= self.min_images
        reasons.append(
            f"{compared} images compared {'>=' if ok_images else '<'} min_images={self.min_images}"
        )
        ok_agreement = agreement is not None and agreement >= self.min_agreement
        shown = "n/a" if agreement is None else f"{agreement:.3f}"
        reasons.append(
            f"decision agreement {shown} {'>=' if ok_agreement else '<'} "
            f"min_agreement={self.min_agreement:g}"
        )
        return ok_images and ok_agreement, reasons


def shadow_metrics(comparison: dict[str, Any]) -> dict[str, float]:
    """Flat numbers of a comparison for MLflow (``shadow.*``)."""
    values: dict[str, float] = {
        "compared": float(comparison["compared"]),
        "errors": float(comparison["errors"]),
        "disagreements": float(comparison["n_disagreements"]),
    }
    for name in ("class_agreement_rate", "decision_agreement_rate"):
        if comparison[name] is not None:
            values[name] = float(comparison[name])
    return values


def disagreement_paths(comparison: dict[str, Any], key: str = "path") -> Sequence[str]:
    """The items of the listed disagreements, e.g. to render thumbnails for them."""
    return [str(row[key]) for row in comparison["disagreements"] if key in row]


def disagreement_sheet(
    comparison: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
    *,
    key: str = "path",
    thumb: int = 128,
    columns: int = 6,
) -> Image.Image | None:
    """A contact sheet of the listed disagreements, captioned champion → shadow.

    Args:
        comparison: Output of :func:`shadow_comparison`.
        storage_options: fsspec options to read remote images.
        key: The column holding each item's path or URI.
        thumb: Thumbnail side in pixels.
        columns: Thumbnails per row.

    Returns:
        An RGB image to log to MLflow, or ``None`` when there is no disagreement. An
        unreadable file gets a grey tile with its caption (never a silent gap).
    """
    rows = comparison["disagreements"]
    if not rows:
        return None
    caption = 28
    n_rows = -(-len(rows) // columns)
    sheet = Image.new("RGB", (columns * thumb, n_rows * (thumb + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        x, y = (i % columns) * thumb, (i // columns) * (thumb + caption)
        try:
            tile = decode_image(read_bytes(str(row[key]), storage_options))
            tile.thumbnail((thumb, thumb))
        except Exception:  # shown as a grey tile: the caption still names the item
            tile = Image.new("RGB", (thumb, thumb), (160, 160, 160))
        sheet.paste(tile, (x, y))
        text = (
            f"{row.get('class')}/{row.get('decision')}\n"
            f"-> {row.get('shadow_class')}/{row.get('shadow_decision')}"
        )
        draw.multiline_text((x + 2, y + thumb + 1), text, fill="black", spacing=1)
    return sheet
