"""Honest monitoring: training images left out and counted, a re-weighted frozen reference."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from eyecatcher.monitoring.drift import DriftSettings, drift_report
from eyecatcher.monitoring.image_stats import image_statistics
from eyecatcher.monitoring.populations import TrainingPopulation, phash_of
from eyecatcher.pipelines.retrain_check.nodes import (
    compute_online_metrics,
    mark_training_images,
    measure_disagreement,
    measure_drift,
)
from tests.pipelines.labelling.conftest import labelling_params

PARAMS = {"min_items_per_class": 1, "max_images": 200}
#: The base ``labelling`` block: its taxonomy names the safe class.
LABELLING = labelling_params()


def _picture(seed: int) -> Image.Image:
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((96, 96), Image.NEAREST)


def _write(picture: Image.Image, path: Path) -> tuple[str, str]:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest(), str(path)


def _scene(tmp_path: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Three scored images: a training image, a near-copy of another one, and a new one."""
    trained_a = _write(_picture(1), tmp_path / "a.png")
    trained_b = _write(_picture(2), tmp_path / "b.png")
    near_b = _picture(2)
    near_b.putpixel((0, 0), (0, 0, 0))
    near = _write(near_b, tmp_path / "b_near.png")
    new = _write(_picture(3), tmp_path / "c.png")
    population = TrainingPopulation(
        frozenset({trained_a[0], trained_b[0]}),
        (phash_of(trained_a[1]), phash_of(trained_b[1])),
        8,
        "test",
    )
    champion = {"version": "1", "training_population": population}
    verdicts = pd.DataFrame(
        {
            "sha256": [trained_a[0], near[0], new[0]],
            "path": [trained_a[1], near[1], new[1]],
            "class": ["safe", "safe", "safe"],
            "decision": ["allow", "allow", "allow"],
            "unsafe_score": [0.1, 0.1, 0.1],
            "model_version": ["1"] * 3,
            "scored_at": ["2026-12-07T10:00Z"] * 3,
            "error": [None] * 3,
        }
    )
    # Humans call all three explicit: the champion is "wrong" on each.
    feedback = pd.DataFrame(
        {
            "sha256": verdicts["sha256"],
            "verdict": ["explicit_nudity"] * 3,
            "kind": ["report"] * 3,
            "timestamp": pd.to_datetime(["2026-12-07T11:00Z"] * 3, utc=True),
        }
    )
    return champion, verdicts, feedback


def test_disagreement_leaves_out_training_images_and_near_copies(tmp_path: Path) -> None:
    champion, verdicts, feedback = _scene(tmp_path)
    marked = mark_training_images(champion, verdicts, PARAMS)
    assert marked["seen_in_training"].tolist() == ["exact", "near_duplicate", None]
    result = measure_disagreement(marked, feedback[["sha256", "verdict"]], PARAMS, champion)
    # Only the image the champion never saw is measured (the old node measured all three).
    assert result["per_class"]["explicit_nudity"]["items"] == 1
    assert result["excluded_verdicts"] == {"exact": 1, "near_duplicate": 1}
    assert result["population"]["excluded_exact"] == 1
    assert result["population"]["excluded_near_duplicate"] == 1
    assert result["population"]["near_duplicate_max_distance"] == 8


def test_online_metrics_count_only_unseen_images(tmp_path: Path) -> None:
    champion, verdicts, feedback = _scene(tmp_path)
    marked = mark_training_images(champion, verdicts, PARAMS)
    metrics = compute_online_metrics(marked, feedback, LABELLING, champion)
    assert metrics["measured"] is True
    assert metrics["overall"]["scored"] == 1 and metrics["overall"]["misses"] == 1
    assert metrics["population"]["kept"] == 1
    assert metrics["population"]["rows"] == 3


def test_without_a_recorded_population_nothing_is_excluded_and_it_is_said(tmp_path) -> None:
    _, verdicts, feedback = _scene(tmp_path)
    champion = {"version": "1", "training_population": None}
    marked = mark_training_images(champion, verdicts, PARAMS)
    result = measure_disagreement(marked, feedback[["sha256", "verdict"]], PARAMS, champion)
    assert result["per_class"]["explicit_nudity"]["items"] == 3
    assert result["population"]["training_population"].startswith("not recorded")


def _images(folder: Path, seeds: range) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    return [_write(_picture(seed), folder / f"{seed}.png")[1] for seed in seeds]


def test_drift_reweights_the_reference_to_the_batch_class_mix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # The frozen reference: a class-balanced test split, scored at registration.
    ref_uris = _images(tmp_path / "ref", range(100, 300))
    stats = image_statistics(ref_uris)
    classes = np.array(["explicit_nudity", "safe"] * 100)
    reference = stats.assign(
        sha256=[f"r{i}" for i in range(200)],
        true_class=classes,
        **{"class": classes},
        unsafe_score=np.where(classes == "safe", rng.beta(2, 8, 200), rng.beta(8, 2, 200)),
    )
    # Production: 95% safe, the same score distribution within each class.
    cur_classes = np.array(["safe"] * 190 + ["explicit_nudity"] * 10)
    cur_uris = _images(tmp_path / "cur", range(1000, 1200))
    verdicts = pd.DataFrame(
        {
            "sha256": [f"c{i}" for i in range(200)],
            "path": cur_uris,
            "class": cur_classes,
            "unsafe_score": np.where(
                cur_classes == "safe", rng.beta(2, 8, 200), rng.beta(8, 2, 200)
            ),
            "error": None,
            "seen_in_training": None,
        }
    )
    champion = {"version": "1", "reference": reference, "training_population": None}
    report, figure = measure_drift(champion, verdicts, PARAMS)
    assert report["measured"] is True
    assert report["class_mix"]["current_class_mix"]["safe"] == 0.95
    assert report["class_mix"]["weight_per_class"]["safe"] == 0.95 / 0.5
    assert "unsafe_score" not in report["alerts"], report["columns"]["unsafe_score"]
    # The same comparison without the weights: the class mix alone alarms.
    unweighted = drift_report(reference, verdicts, DriftSettings(), numeric=["unsafe_score"])
    assert unweighted["alerts"] == ["unsafe_score"]
    assert isinstance(figure, Figure)
    assert len([a for a in figure.axes if a.get_title()]) == 6  # score, 4 numeric, format


def test_drift_without_a_frozen_reference_is_not_measured_and_says_why(tmp_path) -> None:
    champion = {"version": "1", "reference": None, "reference_note": "no frozen reference"}
    verdicts = pd.DataFrame({"sha256": ["x"], "path": ["x"], "class": ["safe"], "error": None})
    report, figure = measure_drift(champion, verdicts, PARAMS)
    assert report["measured"] is False and "no frozen reference" in report["reason"]
    assert isinstance(figure, Figure)
