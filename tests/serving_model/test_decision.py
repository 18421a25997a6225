"""The decision policy: block on the combined probability of the blockable classes."""

from __future__ import annotations

import numpy as np
import pytest

from eyecatcher.serving_model.decision import (
    BLOCK,
    REVIEW,
    DecisionPolicy,
    DecisionThresholds,
    calibrate_block_thresholds,
)

CLASSES = [
    "explicit_sexual_activity",
    "explicit_nudity",
    "non_explicit_nudity",
    "swimwear_or_underwear",
    "safe",
]
BLOCKABLE = ["explicit_nudity", "explicit_sexual_activity"]


def _policy(block: float = 0.9) -> DecisionPolicy:
    thresholds = DecisionThresholds(review=0.3, block=dict.fromkeys(BLOCKABLE, block))
    return DecisionPolicy(CLASSES, "safe", thresholds)


def test_mass_split_between_two_blockable_classes_blocks() -> None:
    # 99% of the mass is blockable, though neither class alone passes 0.9.
    row = {
        "explicit_nudity": 0.50,
        "explicit_sexual_activity": 0.49,
        "non_explicit_nudity": 0.0,
        "swimwear_or_underwear": 0.0,
        "safe": 0.01,
    }
    assert _policy().decide(row) == BLOCK


def test_review_only_classes_add_nothing_to_the_blockable_mass() -> None:
    swimwear = [0.0, 0.0, 0.0, 0.99, 0.01]
    assert _policy().decide(swimwear) == REVIEW
    # 0.45 + 0.45 blockable, 0.09 non-explicit nudity: 0.90 is not above 0.9.
    mixed = [0.45, 0.45, 0.09, 0.0, 0.01]
    assert _policy().decide(mixed) == REVIEW


def test_different_per_class_values_use_the_smallest() -> None:
    thresholds = DecisionThresholds(
        review=0.3, block={"explicit_nudity": 0.95, "explicit_sexual_activity": 0.9}
    )
    policy = DecisionPolicy(CLASSES, "safe", thresholds)
    # Under the old per-class rule this blocked (0.93 > 0.9 for sexual activity): still blocks.
    assert policy.decide([0.93, 0.0, 0.0, 0.0, 0.07]) == BLOCK
    assert thresholds.combined_block(CLASSES[:-1]) == (
        ["explicit_sexual_activity", "explicit_nudity"],
        0.9,
    )


def test_calibration_reads_the_combined_probability() -> None:
    # Validation: three blockable images whose mass is split, and safe/swimwear negatives.
    probabilities = np.array(
        [
            [0.50, 0.48, 0.0, 0.0, 0.02],  # explicit_sexual_activity, split mass
            [0.47, 0.50, 0.0, 0.0, 0.03],  # explicit_nudity, split mass
            [0.0, 0.99, 0.0, 0.0, 0.01],  # explicit_nudity, sure
            [0.0, 0.0, 0.0, 0.9, 0.1],  # swimwear
            [0.0, 0.05, 0.0, 0.0, 0.95],  # safe
            [0.0, 0.0, 0.0, 0.0, 1.0],  # safe
        ]
    )
    labels = np.array([0, 1, 1, 3, 4, 4])
    result = calibrate_block_thresholds(
        probabilities,
        labels,
        CLASSES,
        BLOCKABLE,
        max_false_block_rate=0.0,
        min_probability=0.9,
    )
    assert set(result) == set(BLOCKABLE)
    assert result["explicit_nudity"]["threshold"] == result["explicit_sexual_activity"]["threshold"]
    assert result["explicit_nudity"]["threshold"] == pytest.approx(0.9)
    # Every blockable image is blocked, split mass included; no negative is.
    assert result["explicit_nudity"]["recall"] == 1.0
    assert result["explicit_sexual_activity"]["recall"] == 1.0
    assert result["explicit_nudity"]["false_block_rate"] == 0.0


def test_a_model_without_blockable_classes_never_blocks() -> None:
    policy = DecisionPolicy(CLASSES, "safe", DecisionThresholds(review=0.3, block={}))
    assert policy.decide([0.5, 0.49, 0.0, 0.0, 0.01]) == REVIEW
    assert (
        calibrate_block_thresholds(
            np.eye(5), np.arange(5), CLASSES, [], max_false_block_rate=0.0, min_probability=0.9
        )
        == {}
    )
