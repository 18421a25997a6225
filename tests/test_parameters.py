"""One message for every unknown parameter key, with the closest known key."""

from __future__ import annotations

import pytest

from eyecatcher.parameters import closest, refuse_unknown, unknown_keys_error


def test_the_closest_key_is_named_and_nothing_far_is_guessed() -> None:
    assert closest("engin", ["engine", "workers"]) == "engine"
    assert closest("by_architecture.vit.methds", ["methods"]) == "methods"
    assert closest("zzzz", ["engine"]) is None


def test_every_unknown_key_is_listed_once_with_the_known_ones() -> None:
    error = unknown_keys_error("training.features", {"engin", "zzzz"}, ["engine", "views"])
    text = str(error)
    assert "Unknown training.features parameter(s)" in text
    assert "'engin' (did you mean 'engine'?), 'zzzz'; known" in text  # no guess for zzzz
    assert text.endswith("known: ['engine', 'views'].")


def test_known_keys_pass_and_unknown_ones_are_refused() -> None:
    refuse_unknown("batch_scoring", {"engine": "ray"}, {"engine", "ray"})
    with pytest.raises(ValueError, match=r"'engnie' \(did you mean 'engine'\?\)"):
        refuse_unknown("batch_scoring", {"engnie": "ray"}, {"engine", "ray"})
