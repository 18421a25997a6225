"""The retrain rule at and around each threshold, and the nodes around it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eyecatcher.outcomes import EXIT_BAD_CONFIGURATION, outcome_of
from eyecatcher.pipelines.retrain_check.decision import (
    RetrainRequiredError,
    decide,
    disagreement_per_class,
)
from eyecatcher.pipelines.retrain_check.nodes import (
    champion_verdicts,
    decide_retraining,
    enforce_retrain_decision,
    mark_training_images,
    measure_disagreement,
    measure_drift,
)
from eyecatcher.pipelines.retrain_check.settings import RetrainConfigError, RetrainSettings

SETTINGS = RetrainSettings(min_new_feedback=10, max_disagreement_rate=0.2, min_items_per_class=5)
REGISTERED = pd.Timestamp("2026-11-20T00:00Z")


def _decide(**kwargs):
    arguments = {
        "champion_version": "1",
        "new_feedback": 0,
        "disagreement": {},
        "drift": {"alert": False, "alerts": []},
        "settings": SETTINGS,
    }
    return decide(**{**arguments, **kwargs})


@pytest.mark.parametrize(("new", "retrain"), [(0, False), (9, False), (10, True), (11, True)])
def test_new_feedback_at_and_around_the_threshold(new: int, retrain: bool) -> None:
    decided, reasons, notes = _decide(new_feedback=new)
    assert decided is retrain
    text = reasons[0] if retrain else notes[0]
    assert text.startswith(f"{new} new feedback records {'>=' if retrain else '<'} ")


@pytest.mark.parametrize(
    ("wrong", "items", "retrain"),
    [(0, 5, False), (1, 6, False), (1, 5, True), (2, 5, True), (4, 4, False)],
)
def test_disagreement_rate_at_and_around_the_threshold(wrong: int, items: int, retrain: bool):
    # 1/6 = 0.167 < 0.2; 1/5 = 0.2 is at the threshold; 4/4 has too few items to judge.
    row = {"items": items, "disagreements": wrong, "rate": wrong / items, "judged": items >= 5}
    decided, reasons, notes = _decide(disagreement={"safe": row})
    assert decided is retrain
    if items < 5:
        assert any("not judged" in note for note in notes)
    if retrain:
        assert reasons == [
            f"class safe: champion disagrees with {wrong} of {items} human verdicts "
            f"({wrong / items:.0%}) >= max_disagreement_rate=0.2"
        ]


def test_drift_no_champion_and_what_was_not_measured() -> None:
    assert _decide(drift={"alert": True, "alerts": ["unsafe_score"]})[1] == [
        "drift alert on unsafe_score"
    ]
    quiet = RetrainSettings(retrain_on_drift=False)
    decided, _, notes = _decide(drift={"alert": True, "alerts": ["format"]}, settings=quiet)
    assert not decided and "retrain_on_drift is off" in notes[-1]
    decided, reasons, _ = _decide(champion_version=None)
    assert decided and reasons == ["no champion is registered"]
    _, _, notes = _decide(disagreement=None, drift=None)
    assert any("disagreement with humans not measured" in n for n in notes)
    assert any("drift not measured" in n for n in notes)


def test_disagreement_per_class_joins_on_sha256() -> None:
    scored = pd.DataFrame(
        # "a" was scored twice (a copy under another path): it counts once.
        {"sha256": [*"abcdef", "a"], "class": ["safe"] * 4 + ["explicit_nudity"] * 2 + ["safe"]}
    )
    verdicts = pd.DataFrame(
        {
            "sha256": list("abcdxz"),
            "verdict": ["safe", "safe", "explicit_nudity", "explicit_nudity", "safe", "safe"],
        }
    )
    result = disagreement_per_class(scored, verdicts, min_items=2)
    assert result == {
        "explicit_nudity": {"items": 2, "disagreements": 2, "rate": 1.0, "judged": True},
        "safe": {"items": 2, "disagreements": 0, "rate": 0.0, "judged": True},
    }


def test_settings_refuse_unknown_keys_and_nested_drift_keys() -> None:
    with pytest.raises(RetrainConfigError, match="min_new_feedbak"):
        RetrainSettings.parse({"min_new_feedbak": 3})
    with pytest.raises(ValueError, match="psi"):
        RetrainSettings.parse({"drift": {"psi": 0.1}})


def _feedback(times: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sha256": [f"s{i}" for i in range(len(times))],
            "verdict": "safe",
            "kind": "appeal",
            "timestamp": pd.to_datetime(times, utc=True),
        }
    )


def test_only_feedback_after_the_champion_counts_and_the_run_fails_when_due() -> None:
    champion = {"version": "3", "registered_at": REGISTERED}
    items = _feedback(["2026-11-19T00:00Z", "2026-11-20T00:00Z", "2026-11-21T00:00Z"])
    params = {"min_new_feedback": 1}
    decision, metrics = decide_retraining(
        champion, items, {"measured": False, "per_class": {}}, {"measured": False}, params
    )
    assert decision["new_feedback"] == 1 and decision["retrain"] is True
    assert metrics["retrain"] == {"value": 1.0, "step": 0}
    with pytest.raises(RetrainRequiredError, match="1 new feedback records >= min_new_feedback=1"):
        enforce_retrain_decision(decision, params)
    enforce_retrain_decision(decision, {**params, "fail_on_retrain": False})  # report only
    calm, _ = decide_retraining(
        champion, items, {"measured": False, "per_class": {}}, {"measured": False}, {}
    )
    assert calm["retrain"] is False
    enforce_retrain_decision(calm, {})


def test_champion_verdicts_keep_the_champion_version_and_key_by_content(tmp_path) -> None:
    index = pd.DataFrame(
        {
            "sha256": ["s1", "s2"],
            "uri": ["data/a.jpg", "s3://b/b.jpg"],
            # As read back from Parquet: numpy arrays, not lists.
            "all_uris": [np.array(["data/a.jpg"]), np.array(["s3://b/b.jpg"])],
        }
    )
    batch = pd.DataFrame(
        {
            "path": [str((tmp_path / "x").resolve()), "s3://b/b.jpg", "s3://b/new.jpg"],
            "class": ["safe", "explicit_nudity", "safe"],
            "model_version": ["3", "3", "2"],
            "error": None,
        }
    )
    assert champion_verdicts({"version": None}, batch, index) is None
    assert champion_verdicts({"version": "3"}, None, index) is None
    own = champion_verdicts({"version": "3"}, batch, index)
    assert own["sha256"].tolist() == [str((tmp_path / "x").resolve()), "s2"]
    champion = {"version": "3", "training_population": None}
    marked = mark_training_images(champion, own, {})
    disagreement = measure_disagreement(
        marked,
        pd.DataFrame({"sha256": ["s2"], "verdict": ["safe"]}),
        {"min_items_per_class": 1},
        champion,
    )
    assert disagreement["per_class"]["safe"]["rate"] == 1.0
    assert measure_disagreement(None, pd.DataFrame(), {}, champion)["measured"] is False


def test_drift_is_not_measured_without_a_reference() -> None:
    report, _ = measure_drift(
        {"version": "3", "reference": None, "reference_note": "no predictions"},
        pd.DataFrame({"path": [], "unsafe_score": [], "error": []}),
        {},
    )
    assert report["measured"] is False and report["alert"] is False
    assert report["reason"] == "no reference: no predictions"


def test_a_refused_setting_ends_the_run_as_bad_configuration() -> None:
    """Nested drift keys too: exit code 2, as for the block's own keys."""
    for params in ({"min_new_feedbak": 3}, {"drift": {"psi_alrt": 0.2}}, {"max_images": 0}):
        with pytest.raises(RetrainConfigError) as caught:
            RetrainSettings.parse(params)
        assert outcome_of(caught.value) == ("bad_configuration", EXIT_BAD_CONFIGURATION)
    message = str(caught.value)
    assert message.startswith("retrain_check.max_images must be >= 1, got 0")
    # The line `kedro run` prints after "bad_configuration (exit code 2): ".
    with pytest.raises(RetrainConfigError) as caught:
        RetrainSettings.parse({"min_new_feedback": 0})
    assert str(caught.value) == "retrain_check.min_new_feedback must be >= 1, got 0"


def test_empty_blocks_mean_the_defaults_and_options_are_reported_by_name() -> None:
    settings = RetrainSettings.parse({"storage_options": None, "drift": None})
    assert settings == RetrainSettings()
    record = RetrainSettings.parse({"storage_options": {"anon": True, "key": "s3cr3t"}}).to_dict()
    assert record["storage_options"] == ["anon", "key"]
    assert "s3cr3t" not in str(record)
    assert record["drift"] == RetrainSettings().drift.model_dump()
