"""Taxonomy → classes: the configured schemes, the multi-label rule, and every policy."""

from __future__ import annotations

from typing import Any

import pytest

from eyecatcher.rekognition.taxonomy import (
    TaxonomyConfigError,
    TaxonomyMapping,
    UnknownModelVersionError,
    normalise_labels,
)
from tests.pipelines.labelling.conftest import demo_records, labelling_params

NENIPK = "Non-Explicit Nudity of Intimate parts and Kissing"


def _label(name: str, parent: str = "", confidence: float = 90.0, level: int | None = None):
    label: dict[str, Any] = {"Name": name, "ParentName": parent, "Confidence": confidence}
    if level is not None:
        label["TaxonomyLevel"] = level
    return label


def _v7(*labels: dict[str, Any], content: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "ModerationLabels": list(labels),
        "ModerationModelVersion": "7.0",
        "ContentTypes": content or [],
    }


def _mapping(**taxonomy_overrides: Any) -> TaxonomyMapping:
    taxonomy = {**labelling_params()["taxonomy"], **taxonomy_overrides}
    return TaxonomyMapping.from_params(taxonomy)


def test_every_demo_record_maps_to_its_demo_class_under_the_default_scheme() -> None:
    mapping = _mapping()
    records = demo_records()
    assert len(records) == 200
    got = {
        r["sha256"]: mapping.decide(r["response"], r["min_confidence"]).label_class for r in records
    }
    expected = {r["sha256"]: r["demo_expected_class"] for r in records}
    assert got == expected
    # The demo keeps every class (training needs them) and shows the exclusions.
    assert set(expected.values()) == {*mapping.class_names(), None}
    assert all(r["synthetic"] and r["min_confidence"] == 20.0 for r in records)


def test_default_classes_are_the_five_product_classes() -> None:
    assert _mapping().class_names() == [
        "explicit_sexual_activity",
        "explicit_nudity",
        "non_explicit_nudity",
        "swimwear_or_underwear",
        "safe",
    ]


def test_no_label_is_safe_and_the_reason_says_so() -> None:
    decision = _mapping().decide(_v7())
    assert (decision.label_class, decision.included) == ("safe", True)
    assert decision.reason.startswith("safe:")


def test_severity_beats_confidence() -> None:
    response = _v7(
        _label("Swimwear or Underwear", confidence=99.0, level=1),
        _label("Non-Explicit Nudity", "Non-Explicit Nudity of Intimate parts and Kissing", 60.0, 2),
    )
    decision = _mapping().decide(response)
    assert decision.label_class == "non_explicit_nudity"
    assert "over swimwear_or_underwear" in decision.reason


def test_explicit_sexual_activity_ranks_above_explicit_nudity_whatever_the_confidences() -> None:
    mapping = _mapping()
    for nudity, activity in ((95.0, 81.0), (70.0, 88.0)):
        response = _v7(
            _label("Explicit", confidence=97.0, level=1),
            _label("Explicit Nudity", "Explicit", nudity, 2),
            _label("Explicit Sexual Activity", "Explicit", activity, 2),
        )
        decision = mapping.decide(response)
        assert decision.label_class == "explicit_sexual_activity"
        assert "over explicit_nudity" in decision.reason


def test_equal_severities_are_a_config_error() -> None:
    taxonomy = labelling_params()["taxonomy"]
    taxonomy["schemes"]["v7"]["classes"][1]["severity"] = 5
    with pytest.raises(TaxonomyConfigError, match="share severity 5"):
        TaxonomyMapping.from_params(taxonomy)
    with pytest.raises(TaxonomyConfigError, match="severity 1 equals"):
        _mapping(out_of_scheme={"default": "own_class", "severity": 1})


@pytest.mark.parametrize(
    ("labels", "expected_class", "reason"),
    [
        # A near miss is not safe: between safe_below (20) and positive (50) -> excluded.
        ([("Explicit Nudity", "Explicit", 45.0)], None, "excluded_uncertain:"),
        ([("Kissing on the Lips", NENIPK, 30.0)], None, "excluded_uncertain:"),
        # An uncertain label of a more severe class overrules a positive, milder one.
        (
            [
                ("Female Swimwear or Underwear", "Swimwear or Underwear", 80.0),
                ("Explicit Nudity", "Explicit", 45.0),
            ],
            None,
            "excluded_uncertain:",
        ),
        # An uncertain, milder label does not.
        (
            [
                ("Explicit Nudity", "Explicit", 80.0),
                ("Female Swimwear or Underwear", "Swimwear or Underwear", 30.0),
            ],
            "explicit_nudity",
            "labelled:",
        ),
        # Under safe_below is negligible.
        ([("Explicit Nudity", "Explicit", 12.0)], "safe", "safe:"),
        # Out-of-scheme labels unrelated to nudity stay harmless at any confidence.
        ([("Alcoholic Beverages", "Alcohol", 45.0)], "safe", "safe:"),
    ],
)
def test_safe_positive_and_the_uncertain_band_between(
    labels: list[tuple[str, str, float]], expected_class: str | None, reason: str
) -> None:
    response = _v7(*(_label(name, parent, confidence, 2) for name, parent, confidence in labels))
    decision = _mapping().decide(response, answer_min_confidence=10.0)
    assert decision.label_class == expected_class, decision.reason
    assert decision.included is (expected_class is not None)
    assert decision.reason.startswith(reason)


def test_gore_violence_and_hate_symbols_are_never_safe_but_keep_a_positive_class() -> None:
    mapping = _mapping()
    for top, child in (
        ("Violence", "Graphic Violence"),
        ("Visually Disturbing", "Death and Emaciation"),
        ("Hate Symbols", "Nazi Party"),
    ):
        decision = mapping.decide(_v7(_label(top, "", 90.0, 1), _label(child, top, 90.0, 2)))
        assert (decision.label_class, decision.included) == (None, False)
        assert decision.reason.startswith("excluded_not_safe:")
    with_swimwear = _v7(
        _label("Weapons", "Violence", 95.0, 2),
        _label("Female Swimwear or Underwear", "Swimwear or Underwear", 80.0, 2),
    )
    assert mapping.decide(with_swimwear).label_class == "swimwear_or_underwear"


def test_an_answer_requested_above_safe_below_cannot_prove_safe() -> None:
    mapping = _mapping()
    empty = mapping.decide(_v7(), answer_min_confidence=50.0)
    assert (empty.label_class, empty.included) == (None, False)
    assert empty.reason.startswith("excluded_unproven_safe:")
    # A positive class needs no proof of absence.
    nudity = _v7(_label("Explicit Nudity", "Explicit", 90.0, 2))
    assert mapping.decide(nudity, answer_min_confidence=50.0).label_class == "explicit_nudity"
    assert mapping.decide(_v7(), answer_min_confidence=20.0).label_class == "safe"


def test_unknown_sub_label_inherits_its_parent_class() -> None:
    response = _v7(_label("Some Future Sub-label", "Explicit Nudity", 90.0, 3))
    assert _mapping().decide(response).label_class == "explicit_nudity"


def test_ambiguous_parent_alone_is_excluded_never_safe() -> None:
    response = _v7(_label("Explicit", confidence=88.0, level=1))
    decision = _mapping().decide(response)
    assert (decision.label_class, decision.included) == (None, False)
    assert decision.reason.startswith("excluded_ambiguous:")


def test_ambiguous_policy_safe_is_explicit_in_the_reason() -> None:
    taxonomy = labelling_params()["taxonomy"]
    taxonomy["schemes"]["v7"]["ambiguous_policy"] = "safe"
    decision = TaxonomyMapping.from_params(taxonomy).decide(_v7(_label("Explicit", level=1)))
    assert (decision.label_class, decision.included) == ("safe", True)
    assert decision.reason.startswith("ambiguous_as_safe:")


def test_a_child_explains_its_ambiguous_parent() -> None:
    swimwear_kiss = _v7(
        _label(NENIPK, confidence=70.0, level=1),
        _label("Non-Explicit Nudity", NENIPK, 70, 2),
    )
    assert _mapping().decide(swimwear_kiss).label_class == "non_explicit_nudity"
    # Kissing on the Lips explains its parent but is itself ambiguous (v6 Sexual Situations).
    kiss = _v7(
        _label(NENIPK, confidence=70.0, level=1), _label("Kissing on the Lips", NENIPK, 70, 2)
    )
    decision = _mapping().decide(kiss)
    assert decision.reason.startswith("excluded_ambiguous: Kissing on the Lips")


def test_a_child_under_safe_below_does_not_explain_its_parent() -> None:
    # Requested at MinConfidence 5 (below safe_below 20), the answer shows a weak child: it
    # says nothing about which explicit class the parent at 95 is, so the image is not safe.
    response = _v7(
        _label("Explicit", confidence=95.0, level=1),
        _label("Explicit Nudity", "Explicit", 10.0, 2),
    )
    decision = _mapping().decide(response, 5.0)
    assert (decision.label_class, decision.included) == (None, False)
    assert decision.reason.startswith("excluded_ambiguous: Explicit")
    # A child at safe_below explains it (and, being uncertain, keeps the image out of safe).
    at_floor = _v7(
        _label("Explicit", confidence=95.0, level=1),
        _label("Explicit Nudity", "Explicit", 20.0, 2),
    )
    assert _mapping().decide(at_floor, 5.0).reason.startswith("excluded_uncertain:")


@pytest.mark.parametrize(
    ("policy", "expected_class", "included", "reason"),
    [
        ("ignore", "safe", True, "safe:"),
        ("not_safe", None, False, "excluded_not_safe:"),
        ("exclude", None, False, "excluded_out_of_scheme:"),
        ("own_class", "other_moderated", True, "out_of_scheme_class:"),
    ],
)
def test_out_of_scheme_policies(
    policy: str, expected_class: str | None, included: bool, reason: str
) -> None:
    response = _v7(_label("Violence", confidence=87.0, level=1))
    mapping = _mapping(out_of_scheme={"default": policy, "class_name": "other_moderated"})
    decision = mapping.decide(response)
    assert (decision.label_class, decision.included) == (expected_class, included)
    assert decision.reason.startswith(reason)
    if policy == "ignore":
        assert decision.ignored_out_of_scheme == ("Violence",)


def test_out_of_scheme_per_label_overrides_the_default_and_in_scheme_wins_over_own_class() -> None:
    mapping = _mapping(
        out_of_scheme={"default": "own_class", "per_label": {"Alcohol": "ignore"}, "severity": 0}
    )
    alcohol = _v7(_label("Alcoholic Beverages", "Alcohol", 90.0, 2))
    assert mapping.decide(alcohol).label_class == "safe"
    weapons_and_swimwear = _v7(
        _label("Weapons", "Violence", 99.0, 2),
        _label("Female Swimwear or Underwear", "Swimwear or Underwear", 60.0, 2),
    )
    assert mapping.decide(weapons_and_swimwear).label_class == "swimwear_or_underwear"
    assert "other_moderated" in mapping.class_names()


def test_content_type_exclusion_respects_its_threshold() -> None:
    mapping = _mapping(exclude_content_types=["Animated"], content_type_min_confidence=60)
    animated = _v7(content=[{"Name": "Animated", "Confidence": 75.0}])
    weak = _v7(content=[{"Name": "Animated", "Confidence": 55.0}])
    illustrated = _v7(content=[{"Name": "Illustrated", "Confidence": 99.0}])
    assert mapping.decide(animated).reason.startswith("excluded_content_type:")
    assert mapping.decide(weak).label_class == "safe"
    assert mapping.decide(illustrated).label_class == "safe"


def test_v6_answers_map_onto_the_same_classes() -> None:
    mapping = _mapping()

    def v6(*labels: dict[str, Any]) -> dict[str, Any]:
        return {"ModerationLabels": list(labels), "ModerationModelVersion": "6.1"}

    cases = {
        "explicit_nudity": v6(
            _label("Explicit Nudity"), _label("Graphic Female Nudity", "Explicit Nudity")
        ),
        "explicit_sexual_activity": v6(
            _label("Explicit Nudity"), _label("Sexual Activity", "Explicit Nudity")
        ),
        "non_explicit_nudity": v6(_label("Suggestive"), _label("Partial Nudity", "Suggestive")),
        "swimwear_or_underwear": v6(
            _label("Suggestive"), _label("Female Swimwear Or Underwear", "Suggestive")
        ),
        "safe": v6(),
    }
    for expected, response in cases.items():
        assert mapping.decide(response).label_class == expected, expected
    assert mapping.decide(v6(_label("Suggestive"))).included is False


def test_the_original_designs_sub_label_classes_are_one_config_change_away() -> None:
    mapping = _mapping(scheme_by_model_version={"6": "v6_sublabels", "7": "v7"})
    response = {
        "ModerationLabels": [
            _label("Suggestive", confidence=95.0),
            _label("Female Swimwear Or Underwear", "Suggestive", 94.0),
            _label("Revealing Clothes", "Suggestive", 60.0),
        ],
        "ModerationModelVersion": "6.0",
    }
    assert mapping.decide(response).label_class == "revealing_clothes"  # severity 3 > 2


def test_unknown_model_version_is_a_clear_error() -> None:
    with pytest.raises(UnknownModelVersionError, match="scheme_by_model_version"):
        _mapping().decide({"ModerationLabels": [], "ModerationModelVersion": "8.0"})


def test_a_label_mapped_to_two_classes_is_a_config_error() -> None:
    taxonomy = labelling_params()["taxonomy"]
    taxonomy["schemes"]["v7"]["classes"][0]["labels"].append("Explicit Nudity")
    with pytest.raises(TaxonomyConfigError, match="Explicit Nudity"):
        TaxonomyMapping.from_params(taxonomy)


def test_bad_policy_names_are_config_errors() -> None:
    with pytest.raises(TaxonomyConfigError):
        _mapping(out_of_scheme={"default": "drop"})
    with pytest.raises(TaxonomyConfigError):
        _mapping(scheme_by_model_version={"7": "v9"})


def test_v6_labels_get_an_inferred_taxonomy_level() -> None:
    labels = normalise_labels([_label("Suggestive"), _label("Partial Nudity", "Suggestive")])
    assert [label["TaxonomyLevel"] for label in labels] == [1, 2]
    assert (
        normalise_labels([_label("Implied Nudity", "Non-Explicit Nudity", 80, 3)])[0][
            "TaxonomyLevel"
        ]
        == 3
    )
