"""``training.features`` settings: defaults, the engine switch, unknown keys refused."""

from __future__ import annotations

import pytest

from eyecatcher.pipelines.training.settings import (
    FeatureRaySettings,
    FeatureSettings,
    candidate_settings,
    head_config,
)
from tests.pipelines.training.conftest import TINY_TRAINING, tiny_training


def test_the_default_engine_is_local_and_needs_no_ray() -> None:
    settings = FeatureSettings.parse(TINY_TRAINING["features"])
    assert settings.engine == "local"
    assert settings.ray == FeatureRaySettings(workers=2, num_cpus=None)
    assert FeatureSettings.parse(None) == FeatureSettings()


def test_the_ray_engine_and_its_pool() -> None:
    settings = FeatureSettings.parse(
        {"engine": "ray", "batch_size": 8, "ray": {"workers": 3, "num_cpus": 4}}
    )
    assert (settings.engine, settings.batch_size) == ("ray", 8)
    assert (settings.ray.workers, settings.ray.num_cpus) == (3, 4)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"engin": "ray"}, r"'engin' \(did you mean 'engine'\?\)"),
        ({"ray": {"worker": 2}}, r"ray.*'worker' \(did you mean 'workers'\?\)"),
        ({"engine": "dask"}, r"engine must be one of \['local', 'ray'\]"),
        ({"ray": {"workers": 0}}, r"workers must be >= 1"),
        ({"batch_size": 0}, r"batch_size must be >= 1"),
        ({"cache": "yes"}, r"must be true or false"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(features: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureSettings.parse(features)


def test_a_typo_inside_a_candidate_override_is_refused_for_that_candidate_only() -> None:
    training = tiny_training(candidate_overrides={"test_vit": {"features": {"engin": "ray"}}})
    assert candidate_settings(training, "test_resnet").features.engine == "local"
    with pytest.raises(ValueError, match=r"Unknown training.features parameter\(s\) 'engin'"):
        candidate_settings(training, "test_vit")


def test_the_head_and_the_views_take_the_candidate_settings() -> None:
    training = tiny_training(candidate_overrides={"test_vit": {"epochs": 7, "seed": 5}})
    settings = candidate_settings(training, "test_vit")
    assert (head_config(settings).epochs, head_config(settings).seed) == (7, 5)
    # augmentation_seed is set in TINY_TRAINING; without it the views follow the seed.
    assert settings.view_seed == TINY_TRAINING["features"]["augmentation_seed"]
    unseeded = {**TINY_TRAINING["features"], "augmentation_seed": None}
    assert candidate_settings(tiny_training(features=unseeded), "test_vit").view_seed == 0
