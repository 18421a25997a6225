"""``training.features`` settings: defaults, the engine switch, unknown keys refused."""

from __future__ import annotations

import pytest

from eyecatcher.pipelines.training.settings import FeatureRaySettings, FeatureSettings
from tests.pipelines.training.conftest import TINY_TRAINING


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
