"""The accuracy floor across runs: ``reset_floor`` lowers it for one run unless made permanent."""

from __future__ import annotations

import pytest

from eyecatcher.pipelines.registration.gate import (
    ChampionComparison,
    Floor,
    GateSettings,
    Served,
    decide,
    floor_after_promotion,
)


def _served(accuracy: float) -> Served:
    return Served(accuracy=accuracy, recall=1.0, fpr=0.0, target_fpr=0.05, precision="fp32")


def test_reset_floor_lowers_the_bar_for_one_run_only() -> None:
    stored = Floor(0.88, "set when v3 became champion (0.9000 - 0.02)")
    once = GateSettings(min_test_accuracy=0.6, reset_floor=True)
    gate = decide(_served(0.75), once, ChampionComparison(None, "none"), stored)
    assert gate.passed
    assert "for this run only" in " ".join(gate.warnings)
    recorded = floor_after_promotion(stored, once, accuracy=0.75, version="4")
    # The next run is held to 0.88 again (the old code stored 0.75 - 0.02 = 0.73).
    assert recorded == stored
    following = decide(_served(0.75), GateSettings(), ChampionComparison(None, "none"), recorded)
    assert not following.passed
    assert following.checks["accuracy_floor"] == pytest.approx(0.88)


def test_a_permanent_reset_is_recorded_in_the_floor() -> None:
    stored = Floor(0.88, "set when v3 became champion (0.9000 - 0.02)")
    permanent = GateSettings(min_test_accuracy=0.6, reset_floor="permanent")
    gate = decide(_served(0.75), permanent, ChampionComparison(None, "none"), stored)
    assert gate.passed
    assert "REPLACED" in " ".join(gate.warnings)
    recorded = floor_after_promotion(stored, permanent, accuracy=0.75, version="4")
    assert recorded.value == pytest.approx(0.73)
    assert "reset permanently when v4 became champion" in recorded.source
    assert "0.8800" in recorded.source


def test_without_reset_the_floor_only_moves_up() -> None:
    settings = GateSettings(min_test_accuracy=0.6)
    assert floor_after_promotion(None, settings, accuracy=0.9, version="1").value == (
        pytest.approx(0.88)
    )
    stored = Floor(0.88, "v1")
    assert floor_after_promotion(stored, settings, accuracy=0.85, version="2") == stored
    assert floor_after_promotion(stored, settings, accuracy=0.95, version="2").value == (
        pytest.approx(0.93)
    )


def test_reset_floor_refuses_other_values() -> None:
    with pytest.raises(ValueError, match="reset_floor"):
        GateSettings(reset_floor="sometimes")
