"""Evaluation metrics and candidate selection, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eyecatcher import metrics
from eyecatcher.pipelines.training.nodes import select_candidate


def test_classification_metrics_match_a_hand_computed_example() -> None:
    classes = ["a", "safe", "b"]
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])

    result = metrics.classification_metrics(y_true, y_pred, classes)

    assert result["accuracy"] == pytest.approx(4 / 6)
    # F1 per class: a 0.5, safe 0.8 (P 2/3, R 1), b 2/3 (P 1, R 0.5).
    assert result["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert result["per_class"]["a"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert result["per_class"]["safe"]["precision"] == pytest.approx(2 / 3)
    assert result["per_class"]["safe"]["recall"] == 1.0
    assert result["per_class"]["b"]["precision"] == 1.0
    assert result["per_class"]["b"]["recall"] == 0.5
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_a_class_missing_from_the_split_still_gets_a_row() -> None:
    result = metrics.classification_metrics(np.array([0, 0]), np.array([0, 1]), ["x", "y", "z"])
    assert result["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]


def test_threshold_for_a_1_percent_fpr_on_4_safe_images_flags_no_safe_image() -> None:
    scores = np.array([0.1, 0.4, 0.3, 0.2, 0.35, 0.9, 0.5])
    unsafe = np.array([False, False, False, False, True, True, True])

    result = metrics.calibrate_threshold(scores, unsafe, target_fpr=0.01)

    # No safe image may be flagged: the threshold is the highest safe score (strict rule).
    assert result["threshold"] == 0.4
    assert result["fpr"] == 0.0
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["resolution"] == 0.25
    assert "only 4 safe images" in result["warning"]


def test_threshold_for_a_25_percent_fpr_allows_one_safe_image() -> None:
    scores = np.array([0.1, 0.4, 0.3, 0.2, 0.35, 0.9, 0.5])
    unsafe = np.array([False, False, False, False, True, True, True])

    result = metrics.calibrate_threshold(scores, unsafe, target_fpr=0.25)

    assert result["threshold"] == 0.3
    assert result["fpr"] == 0.25
    assert result["recall"] == 1.0
    assert result["warning"] is None


def test_tied_safe_scores_never_push_the_fpr_over_the_target() -> None:
    scores = np.array([0.5, 0.5, 0.1, 0.2, 0.7])
    unsafe = np.array([False, False, False, False, True])
    result = metrics.calibrate_threshold(scores, unsafe, target_fpr=0.25)
    assert result["threshold"] == 0.5
    assert result["fpr"] == 0.0  # flagging one tied 0.5 would flag both (50% > 25%)
    assert result["recall"] == 1.0


def test_calibration_without_safe_images_is_an_error() -> None:
    with pytest.raises(ValueError, match="without safe images"):
        metrics.calibrate_threshold(np.array([0.2, 0.9]), np.array([True, True]), 0.01)


def test_rates_at_threshold_on_test_images() -> None:
    scores = np.array([0.2, 0.6, 0.8, 0.3, 0.9])
    unsafe = np.array([False, False, True, True, True])
    rates = metrics.rates_at_threshold(scores, unsafe, threshold=0.5)
    assert rates["fpr"] == 0.5  # the safe 0.6 is flagged
    assert rates["recall"] == pytest.approx(2 / 3)  # 0.3 is missed


def test_roc_auc_and_average_precision_by_hand() -> None:
    scores = np.array([0.1, 0.6, 0.4, 0.9])
    unsafe = np.array([False, False, True, True])
    curves = metrics.moderation_curves(scores, unsafe)
    # 3 of the 4 (unsafe, safe) pairs are ranked correctly.
    assert curves["roc_auc"] == pytest.approx(0.75)
    # Ranked 0.9 (unsafe), 0.6 (safe), 0.4 (unsafe): AP = 0.5 * 1 + 0.5 * 2/3.
    assert curves["pr_auc"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert curves["roc"]["fpr"][0] == 0.0 and curves["roc"]["tpr"][-1] == 1.0


def test_aucs_are_undefined_with_one_kind_of_image() -> None:
    curves = metrics.moderation_curves(np.array([0.1, 0.2]), np.array([False, False]))
    assert math.isnan(curves["roc_auc"]) and math.isnan(curves["pr_auc"])


def test_unsafe_score_is_one_minus_p_safe() -> None:
    probabilities = np.array([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    assert metrics.unsafe_scores(probabilities, safe_index=1) == pytest.approx([0.3, 0.9])


def _evaluation(name: str, validation: dict, test: dict | None = None) -> dict:
    return {"candidate": name, "validation": validation, "test": test or validation}


def test_selection_uses_validation_not_test() -> None:
    a = _evaluation("a", {"macro_f1": 0.9}, {"macro_f1": 0.1})
    b = _evaluation("b", {"macro_f1": 0.5}, {"macro_f1": 1.0})
    selection = select_candidate({"selection": {"metric": "macro_f1"}}, a, b)
    assert selection["selected"] == "a"
    assert selection["split"] == "validation"
    assert selection["values"] == {"a": 0.9, "b": 0.5}
    assert selection["test_values"] == {"a": 0.1, "b": 1.0}
    assert "highest validation macro_f1 (0.9000 vs 0.5000 for b)" in selection["reason"]


def test_selection_tie_goes_to_the_first_configured_and_says_so() -> None:
    a = _evaluation("a", {"accuracy": 0.8})
    b = _evaluation("b", {"accuracy": 0.8})
    selection = select_candidate({"selection": {"metric": "accuracy"}}, a, b)
    assert selection["selected"] == "a"
    assert "tied with ['b']" in selection["reason"]


def test_selection_lower_is_better_and_undefined_values() -> None:
    a = _evaluation("a", {"fpr_at_threshold": 0.2})
    b = _evaluation("b", {"fpr_at_threshold": 0.05})
    c = _evaluation("c", {"fpr_at_threshold": None})
    selection = select_candidate(
        {"selection": {"metric": "fpr_at_threshold", "greater_is_better": False}}, a, b, c
    )
    assert selection["selected"] == "b"
    assert selection["ranking"] == ["b", "a"]
    assert "['c'] had no finite value" in selection["reason"]


def test_selection_on_an_unknown_metric_is_a_clear_error() -> None:
    a = _evaluation("a", {"accuracy": 0.8})
    with pytest.raises(ValueError, match="not a validation metric"):
        select_candidate({"selection": {"metric": "acuracy"}}, a)
