"""Shadow scoring: columns side by side, agreement, confusion, disagreements, the period."""

from __future__ import annotations

import pandas as pd
import pytest

from eyecatcher.monitoring.shadow import (
    ShadowMismatchError,
    ShadowPeriod,
    add_shadow_columns,
    disagreement_paths,
    shadow_comparison,
    shadow_metrics,
)


def _table(classes: list[str], decisions: list[str], scores: list[float], version: str):
    return pd.DataFrame(
        {
            "path": [f"img/{i}.jpg" for i in range(len(classes))],
            "class": classes,
            "unsafe_score": scores,
            "decision": decisions,
            "model_version": version,
            "error": None,
        }
    )


@pytest.fixture
def verdicts() -> pd.DataFrame:
    champion = _table(
        ["safe", "safe", "explicit_nudity", "swimwear_or_underwear", "safe"],
        ["allow", "allow", "block", "review", "allow"],
        [0.1, 0.2, 0.95, 0.6, 0.1],
        "3",
    )
    shadow = _table(
        ["safe", "swimwear_or_underwear", "explicit_nudity", "swimwear_or_underwear", "safe"],
        ["allow", "review", "block", "allow", "allow"],
        [0.1, 0.7, 0.9, 0.4, 0.1],
        "4",
    )
    shadow.loc[4, ["class", "decision", "unsafe_score"]] = [None, None, None]
    shadow.loc[4, "error"] = "corrupt: truncated"
    return add_shadow_columns(champion, shadow.sample(frac=1, random_state=1))


def test_shadow_columns_sit_next_to_the_champion_in_its_row_order(verdicts: pd.DataFrame) -> None:
    assert verdicts["path"].tolist() == [f"img/{i}.jpg" for i in range(5)]
    for column in ("class", "unsafe_score", "decision", "model_version", "error"):
        assert f"shadow_{column}" in verdicts.columns
    assert verdicts["shadow_class"][1] == "swimwear_or_underwear"
    assert set(verdicts["shadow_model_version"]) == {"4"}


def test_agreement_confusion_and_disagreements(verdicts: pd.DataFrame) -> None:
    comparison = shadow_comparison(verdicts)
    assert comparison["compared"] == 4 and comparison["errors"] == 1
    # Classes agree on img 0, 2, 3; decisions on img 0 and 2.
    assert comparison["class_agreement_rate"] == pytest.approx(0.75)
    assert comparison["decision_agreement_rate"] == pytest.approx(0.5)
    assert comparison["confusion"] == {
        "explicit_nudity": {"explicit_nudity": 1},
        "safe": {"safe": 1, "swimwear_or_underwear": 1},
        "swimwear_or_underwear": {"swimwear_or_underwear": 1},
    }
    assert comparison["decision_confusion"]["review"] == {"allow": 1}
    # Largest score gap first: img/1 (0.5) before img/3 (0.2).
    assert disagreement_paths(comparison) == ["img/1.jpg", "img/3.jpg"]
    assert shadow_metrics(comparison)["decision_agreement_rate"] == pytest.approx(0.5)


def test_mismatched_item_sets_are_refused() -> None:
    champion = _table(["safe"], ["allow"], [0.1], "3")
    shadow = _table(["safe", "safe"], ["allow", "allow"], [0.1, 0.1], "4")
    with pytest.raises(ShadowMismatchError, match="only one of"):
        add_shadow_columns(champion, shadow)


def test_shadow_period_needs_images_and_agreement_or_an_approval(verdicts) -> None:
    comparison = shadow_comparison(verdicts)
    passed, reasons = ShadowPeriod(min_images=4, min_agreement=0.5, approved=False).check(
        comparison
    )
    assert passed and reasons[0].startswith("4 images compared >=")
    passed, reasons = ShadowPeriod(min_images=5, min_agreement=0.9, approved=False).check(
        comparison
    )
    assert not passed and "< min_images=5" in reasons[0] and "< min_agreement=0.9" in reasons[1]
    assert ShadowPeriod(min_images=10**6, min_agreement=1.0, approved=True).check(comparison)[0]


def test_disagreement_sheet_shows_each_disagreement(tmp_path) -> None:
    from PIL import Image

    from eyecatcher.monitoring.shadow import disagreement_sheet

    good = tmp_path / "a.png"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(good)
    comparison = {
        "disagreements": [
            {
                "path": str(good),
                "class": "safe",
                "decision": "allow",
                "shadow_class": "explicit_nudity",
                "shadow_decision": "block",
            },
            {
                "path": str(tmp_path / "gone.png"),
                "class": "safe",
                "decision": "allow",
                "shadow_class": "safe",
                "shadow_decision": "review",
            },
        ]
    }
    sheet = disagreement_sheet(comparison, thumb=64, columns=2)
    assert sheet.size == (128, 64 + 28)
    assert sheet.getpixel((10, 10))[0] > 150  # the red thumbnail
    assert sheet.getpixel((64 + 10, 10)) == (160, 160, 160)  # unreadable: a grey tile
    assert disagreement_sheet({"disagreements": []}) is None
