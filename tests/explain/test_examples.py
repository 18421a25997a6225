"""Which test images get a heatmap: confident errors, threshold cases, one correct per class."""

from __future__ import annotations

import math

import pandas as pd

from eyecatcher.explain import pick_examples


def _predictions() -> pd.DataFrame:
    rows = [
        # sha, class, predicted, confidence, unsafe score
        ("a", "safe", "nudity", 0.95, 0.95),
        ("b", "safe", "nudity", 0.60, 0.60),
        ("c", "nudity", "safe", 0.90, 0.10),
        ("d", "nudity", "nudity", 0.99, 0.99),
        ("e", "nudity", "nudity", 0.52, 0.52),
        ("f", "safe", "safe", 0.97, 0.03),
        ("g", "safe", "safe", 0.51, 0.49),
    ]
    frame = pd.DataFrame(
        rows, columns=["sha256", "class", "predicted", "confidence", "unsafe_score"]
    )
    frame["correct"] = frame["class"] == frame["predicted"]
    frame["uri"] = "/x/" + frame["sha256"]
    return frame


def test_errors_then_threshold_cases_then_one_correct_image_per_class() -> None:
    picked = pick_examples(_predictions(), 0.5, errors=2, near_threshold=2, correct_per_class=1)
    by_reason = picked.groupby("reason")["sha256"].apply(list).to_dict()
    assert by_reason["confident_error"] == ["a", "c"]  # most confident mistakes first
    assert by_reason["near_threshold"] == ["g", "e"]  # |0.49-0.5| < |0.52-0.5|
    assert by_reason["correct"] == ["d", "f"]  # best of each class not already taken
    assert picked["sha256"].is_unique
    assert picked.loc[picked["reason"] == "confident_error", "rank"].tolist() == [1, 2]


def test_without_a_finite_threshold_no_threshold_cases_are_invented() -> None:
    for threshold in (None, -math.inf):
        picked = pick_examples(_predictions(), threshold, errors=1)
        assert set(picked["reason"]) == {"confident_error", "correct"}


def test_a_perfect_model_still_shows_its_correct_examples() -> None:
    frame = _predictions()
    frame = frame[frame["correct"]]
    picked = pick_examples(frame, 0.5, near_threshold=0)
    assert list(picked["reason"]) == ["correct", "correct"]
