"""Drift: PSI and KS alert on a shifted batch and stay quiet on an unshifted one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eyecatcher.monitoring.drift import (
    DriftConfigError,
    DriftSettings,
    drift_report,
    ks_test,
    psi_categorical,
    psi_numeric,
)
from eyecatcher.monitoring.image_stats import image_statistics


def _sample(rng: np.random.Generator, n: int, *, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "unsafe_score": np.clip(rng.beta(2, 5, n) + shift, 0, 1),
            "brightness": rng.normal(120 + 200 * shift, 20, n),
            "format": rng.choice(["JPEG", "PNG"], n, p=[0.8, 0.2])
            if shift == 0
            else rng.choice(["JPEG", "PNG", "WEBP"], n, p=[0.3, 0.2, 0.5]),
        }
    )


def test_a_shifted_batch_alerts_and_an_unshifted_one_does_not() -> None:
    rng = np.random.default_rng(0)
    reference = _sample(rng, 500)
    settings = DriftSettings()
    same = drift_report(
        reference,
        _sample(rng, 400),
        settings,
        numeric=["unsafe_score", "brightness"],
        categorical=["format"],
    )
    assert same["alert"] is False and same["alerts"] == []
    assert same["columns"]["unsafe_score"]["psi"] < 0.1
    shifted = drift_report(
        reference,
        _sample(rng, 400, shift=0.3),
        settings,
        numeric=["unsafe_score", "brightness"],
        categorical=["format"],
    )
    assert shifted["alert"] is True
    assert shifted["alerts"] == ["unsafe_score", "brightness", "format"]
    score = shifted["columns"]["unsafe_score"]
    assert score["psi"] >= settings.psi_alert and score["ks_p_value"] < 0.01
    assert any("KS statistic" in r for r in score["reasons"])
    assert shifted["columns"]["format"]["ks_statistic"] is None  # categorical: PSI only


def test_psi_by_hand_and_edge_cases() -> None:
    # Two categories, shares 0.5/0.5 -> 0.8/0.2: PSI = 0.3 ln 1.6 + (-0.3) ln 0.4.
    expected = 0.3 * np.log(1.6) - 0.3 * np.log(0.4)
    assert psi_categorical(["a", "b"] * 50, ["a"] * 80 + ["b"] * 20) == pytest.approx(expected)
    assert psi_numeric(np.arange(100), np.arange(100)) == pytest.approx(0.0)
    # Values beyond the reference's range land in the open outer bins, not nowhere.
    assert psi_numeric(np.arange(100), np.arange(1000, 1100)) > 1
    # A constant reference still gives a finite answer.
    assert psi_numeric([0.5] * 50, [0.5] * 50) == pytest.approx(0.0)
    assert psi_numeric([0.5] * 50, [0.9] * 50) > 1
    assert ks_test([0, 1, 2], [0, 1, 2]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        psi_numeric([np.nan], [1.0])


def test_too_few_samples_are_reported_but_never_alerted() -> None:
    report = drift_report(
        pd.DataFrame({"x": np.zeros(10)}),
        pd.DataFrame({"x": np.ones(10)}),
        DriftSettings(min_samples=30),
        numeric=["x", "missing"],
    )
    assert report["alert"] is False
    assert report["columns"]["x"]["reasons"][0].startswith("not judged: 10 reference")
    assert "no column 'missing'" in report["columns"]["missing"]["reasons"][0]


def test_settings_refuse_unknown_keys_and_bad_values() -> None:
    with pytest.raises(DriftConfigError, match="psi_alrt"):
        DriftSettings.from_params({"psi_alrt": 0.2})
    with pytest.raises(DriftConfigError, match="ks_p_value_alert"):
        DriftSettings.from_params({"ks_p_value_alert": 1.5})


def test_image_statistics_measure_size_brightness_format_and_keep_failures(tmp_path) -> None:
    dark, light = tmp_path / "dark.png", tmp_path / "light.jpg"
    Image.new("RGB", (200, 100), (10, 10, 10)).save(dark)
    Image.new("RGB", (100, 100), (250, 250, 250)).save(light)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    table = image_statistics([str(dark), str(light), str(broken)])
    assert table["format"].tolist()[:2] == ["PNG", "JPEG"]
    assert table["width"].tolist()[:2] == [200, 100]
    assert table["brightness"][0] < 20 and table["brightness"][1] > 230
    assert table["error"][2] is not None and pd.isna(table["width"][2])
    assert len(image_statistics([str(dark)] * 5, max_images=2)) == 2
