"""Model card content from hand-made reports: intervals, per-class rates at the served
threshold, the operating point in words, and a self-contained page."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from eyecatcher.mlflow_review import frame_digest
from eyecatcher.reporting import CardInputs, card_sections, render_card
from eyecatcher.reporting.intervals import wilson_interval


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError, match="6 successes out of 5"):
        wilson_interval(6, 5)


def _inputs(**report_overrides) -> CardInputs:
    predictions = pd.DataFrame(
        {
            "sha256": list("abcdef"),
            "class": ["safe", "safe", "nudity", "nudity", "nudity", "safe"],
            "predicted": ["safe", "nudity", "nudity", "nudity", "safe", "safe"],
            "confidence": [0.9, 0.6, 0.8, 0.7, 0.55, 0.95],
            "unsafe_score": [0.1, 0.6, 0.8, 0.7, 0.45, 0.05],
        }
    )
    predictions["correct"] = predictions["class"] == predictions["predicted"]
    manifest = pd.DataFrame(
        {
            "sha256": list("abcdefgh"),
            "class": ["safe", "safe", "nudity", "nudity", "nudity", "safe", "safe", "nudity"],
            "split": ["test"] * 6 + ["train", "validation"],
        }
    )
    report = {
        "model_name": "m",
        "version": "2",
        "candidate": "c",
        "precision": "fp32",
        "outcome": "registered",
        "thresholds": {"review": 0.5, "block": {"nudity": 0.9}},
        "gate": {"summary": "passed: accuracy 0.67 >= 0.50", "warnings": []},
        "run_id": "r1",
    } | report_overrides
    return CardInputs(
        registration_report=report,
        candidate_selection={"reason": "only candidate"},
        quantization_decision={},
        evaluation={
            "test": {"macro_f1": 0.6, "roc_auc": 0.9, "pr_auc": 0.8},
            "operating_threshold": {"threshold": 0.4, "target_fpr": 0.01, "warning": None},
        },
        training_report={
            "architecture": "test_resnet",
            "classes": ["nudity", "safe"],
            "safe_class": "safe",
            "random_weights": True,
            "history": [],
        },
        test_predictions=predictions,
        split_manifest=manifest,
        explanations={},
        explanations_index={"examples": [], "method": "Grad-CAM"},
        image_labels=pd.DataFrame(
            {"sha256": list("abcdefghz"), "label_source": ["human"] * 2 + ["rekognition"] * 7}
        ),
    )


def test_per_class_rates_use_the_served_threshold_with_intervals() -> None:
    sections = card_sections(_inputs())
    per_class = sections["per_class"].set_index("class")
    # Served review threshold 0.5 (registration), not training's 0.4: nudity 0.8 and 0.7 flagged,
    # 0.45 not; safe 0.6 flagged, 0.1 and 0.05 passed.
    assert per_class.loc["nudity", "rate at the operating point"].startswith("66.7% [")
    assert per_class.loc["nudity", "rate at the operating point"].endswith("(2/3)")
    assert per_class.loc["safe", "rate at the operating point"].endswith("(2/3)")
    assert per_class.loc["safe", "what counts as right"] == "passed (not flagged)"
    words = " ".join(sections["operating_words"])
    assert "above 0.500" in words and "at most 1.0%" in words
    assert "its own threshold (nudity 0.900)" in words
    assert dict(sections["label_sources"]) == {
        "Labels from human": "2 images",
        "Labels from rekognition": "6 images",
    }
    data = sections["data"]
    assert data.loc["total", "total"] == 8 and data.loc["safe", "test"] == 3
    assert any("DEMO MODEL" in note for note in sections["limitations"])
    assert sections["banner"] is not None


def test_the_page_is_self_contained_and_escapes_what_it_shows() -> None:
    inputs = _inputs(gate={"summary": "<script>alert(1)</script>", "warnings": []})
    html = render_card(card_sections(inputs), "generated now")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert not re.search(r"(href|src)=['\"]https?:", html)
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


def test_frame_digest_sees_every_cell() -> None:
    frame = pd.DataFrame({"sha256": ["a", "b"], "class": ["safe", "nudity"]})
    changed = frame.copy()
    changed.loc[1, "class"] = "safe"
    renamed = frame.rename(columns={"class": "label"})
    digests = {frame_digest(frame), frame_digest(changed), frame_digest(renamed)}
    assert len(digests) == 3 and frame_digest(frame.copy()) == frame_digest(frame)
    assert len(frame_digest(frame)) == 32
