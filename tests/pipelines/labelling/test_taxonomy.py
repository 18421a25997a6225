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
    got = {r["sha256"]: mapping.decide(r["response"]).label_class for r in records}
    expected = {r["sha256"]: r["demo_class"] for r in records}
    assert got == expected
    assert set(expected.values()) == set(mapping.class_names())


def test_default_classes_are_the_five_product_classes() -> None:
    assert _mapping().class_names() == [
        "explicit_nudity",
        "explicit_sexual_activity",
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


def test_equal_severity_goes_to_the_higher_confidence() -> None:
    nudity_first = _v7(
        _label("Explicit", confidence=97.0, level=1),
        _label("Explicit Nudity", "Explicit", 95.0, 2),
        _label("Explicit Sexual Activity", "Explicit", 81.0, 2),
    )
    activity_first = _v7(
        _label("Explicit", confidence=97.0, level=1),
        _label("Explicit Nudity", "Explicit", 70.0, 2),
        _label("Explicit Sexual Activity", "Explicit", 88.0, 2),
    )
    mapping = _mapping()
    assert mapping.decide(nudity_first).label_class == "explicit_nudity"
    assert mapping.decide(activity_first).label_class == "explicit_sexual_activity"


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


def test_ignored_child_explains_its_ambiguous_parent() -> None:
    response = _v7(
        _label("Non-Explicit Nudity of Intimate parts and Kissing", confidence=70.0, level=1),
        _label("Kissing on the Lips", "Non-Explicit Nudity of Intimate parts and Kissing", 70, 2),
    )
    decision = _mapping().decide(response)
    assert (decision.label_class, decision.included) == ("safe", True)


@pytest.mark.parametrize(
    ("policy", "expected_class", "included", "reason"),
    [
        ("ignore", "safe", True, "safe:"),
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
    assert mapping.decide(response).label_class == "revealing_clothes"  # severity 2 > 1


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
