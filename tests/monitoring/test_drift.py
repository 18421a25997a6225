"""Drift: PSI and KS alert on a shifted batch and stay quiet on an unshifted one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eyecatcher.monitoring.drift import (
    DriftConfigError,
    DriftSettings,
    NumericBins,
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
        DriftSettings.parse({"psi_alrt": 0.2})
    with pytest.raises(DriftConfigError, match="ks_p_value_alert"):
        DriftSettings.parse({"ks_p_value_alert": 1.5})


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


def test_few_distinct_values_do_not_collapse_the_bins() -> None:
    # The examples: the reference's quantile edges collapse, the old PSI was 0.0.
    flag = psi_numeric([0.0] * 95 + [1.0] * 5, [1.0] * 100)
    assert flag >= DriftSettings().psi_alert
    # By hand: shares of 0.0 go 0.95 -> 0 (floored at 1e-4), of 1.0 go 0.05 -> 1.
    expected = (1.0 - 0.05) * np.log(1.0 / 0.05) + (1e-4 - 0.95) * np.log(1e-4 / 0.95)
    assert flag == pytest.approx(expected)
    widths = psi_numeric([4032] * 95 + [640] * 5, [100] * 100)
    assert widths >= DriftSettings().psi_alert
    report = drift_report(
        pd.DataFrame({"width": [4032] * 95 + [640] * 5}),
        pd.DataFrame({"width": [100] * 100}),
        DriftSettings(),
        numeric=["width"],
    )
    assert report["alerts"] == ["width"]
    assert any(r.startswith("PSI") for r in report["columns"]["width"]["reasons"])
    # Unchanged few-valued columns stay quiet.
    assert psi_numeric([0.0] * 95 + [1.0] * 5, [0.0] * 95 + [1.0] * 5) == pytest.approx(0.0)


def test_a_heavy_tie_in_a_many_valued_column_gets_its_own_bin() -> None:
    # 989 zeros and 11 other values: quantile edges collapse to one bin; the tie is an atom.
    reference = np.r_[np.zeros(989), np.arange(1, 12)]
    bins = NumericBins.from_reference(reference, 10)
    assert bins.n_bins >= 2 and 0.0 in bins.atoms
    assert psi_numeric(reference, np.full(1000, 5.0)) >= DriftSettings().psi_alert
    assert psi_numeric(reference, reference) == pytest.approx(0.0)


def test_reference_weights_re_weight_the_class_mix() -> None:
    rng = np.random.default_rng(1)
    # Balanced reference: half unsafe (high scores), half safe (low scores).
    ref_scores = np.r_[rng.beta(8, 2, 500), rng.beta(2, 8, 500)]
    ref_class = np.r_[["unsafe"] * 500, ["safe"] * 500]
    # Production: 95% safe, same per-class score distributions.
    cur_scores = np.r_[rng.beta(8, 2, 50), rng.beta(2, 8, 950)]
    plain = psi_numeric(ref_scores, cur_scores)
    assert plain >= DriftSettings().psi_alert  # the class mix alone alarms
    weights = np.where(ref_class == "unsafe", 0.05 / 0.5, 0.95 / 0.5)
    weighted = psi_numeric(ref_scores, cur_scores, reference_weights=weights)
    assert weighted < 0.1
    stat, p = ks_test(ref_scores, cur_scores, reference_weights=weights)
    assert stat < 0.1 and p > 0.01
    with pytest.raises(ValueError, match="weights"):
        psi_numeric(ref_scores, cur_scores, reference_weights=weights[:10])
