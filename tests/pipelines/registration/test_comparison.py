"""The paired comparison leaves out the champion's near-duplicates and human-labelled images."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from PIL import Image

from eyecatcher.monitoring.populations import phash_of
from eyecatcher.pipelines.registration.nodes import register_model
from tests.pipelines.registration.test_pipeline import (  # noqa: F401 (fixtures)
    CLASSES,
    bundles,
    empty_store,
    inputs,
    registry,
)

SPLIT_SUMMARY = {"config": {"near_duplicate_max_distance": 8}}


def _distinct_manifest(folder: Path, n_test: int = 6) -> pd.DataFrame:
    """Random pictures (far apart to pHash, unlike one picture in several formats)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for index in range(n_test + 2):
        blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        picture = Image.fromarray(blocks).resize((96, 96), Image.NEAREST)
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        path = folder / f"image_{index}.png"
        path.write_bytes(buffer.getvalue())
        rows.append(
            {
                "sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
                "uri": str(path),
                "class": CLASSES[index % len(CLASSES)],
                "split": "test" if index < n_test else "train",
                "group": index,
            }
        )
    return pd.DataFrame(rows)


def _phashes(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest.assign(phash=[phash_of(uri) for uri in manifest["uri"]])


def _near_copy(uri: str, folder: Path) -> tuple[str, str]:
    """Other bytes (one pixel changed, PNG), the same picture to a perceptual hash."""
    with Image.open(uri) as image:
        picture = image.convert("RGB")
    picture.putpixel((0, 0), (0, 0, 0))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    data = buffer.getvalue()
    path = folder / "near_copy.png"
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), str(path)


def test_near_duplicates_and_human_labels_stay_out_of_the_paired_test(
    registry,  # noqa: F811 (the fixture imported above)
    bundles,  # noqa: F811
    tmp_path,
) -> None:
    first = _distinct_manifest(tmp_path / "images")
    with mlflow.start_run():
        report, _ = register_model(
            **inputs(bundles, first, accuracy=0.9),
            image_phashes=_phashes(first),
            split_summary=SPLIT_SUMMARY,
        )
    assert report["outcome"] == "registered"
    # The next split: a near-copy of a champion training image lands in test, and one test
    # image carries a human verdict (appeal-selected).
    trained = first[first["split"] == "train"].iloc[0]
    sha, uri = _near_copy(trained["uri"], tmp_path)
    near = {**trained.to_dict(), "sha256": sha, "uri": uri, "split": "test", "group": 99}
    second = pd.concat([first, pd.DataFrame([near])], ignore_index=True)
    second["label_source"] = "rekognition"
    human_sha = second.loc[second["split"] == "test", "sha256"].iloc[0]
    second.loc[second["sha256"] == human_sha, "label_source"] = "human"
    with mlflow.start_run():
        report, _ = register_model(
            **inputs(bundles, second, accuracy=0.9, selected="test_vit"),
            image_phashes=_phashes(second),
            split_summary=SPLIT_SUMMARY,
        )
    checks = report["gate"]["checks"]
    assert checks["champion_comparison"] == "paired"
    assert checks["paired_images_excluded_as_near_duplicates"] == 1
    assert checks["paired_images_excluded_as_seen_by_champion"] == 1
    assert "pHash within 8 bits" in checks["near_duplicate_check"]
    n_test = int((first["split"] == "test").sum())
    # Every original test image but the human-labelled one is paired.
    assert checks["paired_images"] == n_test - 1
    assert checks["human_labelled_slice"]["n_images"] == 1
    assert checks["human_labelled_slice"]["champion_accuracy"] in {0.0, 1.0}
