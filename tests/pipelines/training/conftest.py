"""Fixtures for the training tests: a tiny split manifest over demo images, tiny settings."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from eyecatcher.images import sha256_bytes
from tests.conftest import copy_demo

#: Tiny settings: timm's test models at 64 px, CPU, a few epochs.
TINY_TRAINING: dict[str, Any] = {
    "candidates": ["test_resnet", "test_vit"],
    "candidate_overrides": {},
    "weights": "random",
    "seed": 0,
    "image_size": 64,
    "device": "cpu",
    "num_threads": None,
    "epochs": 4,
    "batch_size": 16,
    "learning_rate": 0.01,
    "weight_decay": 0.0001,
    "label_smoothing": 0.0,
    "augmentation": {"horizontal_flip": 0.5, "vertical_flip": 0.5, "rotation_degrees": 15.0},
    "features": {
        "cache": True,
        "views": 2,
        "clean_view": True,
        "augmentation_seed": 0,
        "batch_size": 16,
    },
    "safe_class": "safe",
    "evaluation": {"target_fpr": 0.01},
    "selection": {"metric": "macro_f1", "greater_is_better": True},
    "explanations": {"errors": 3, "near_threshold": 3, "correct_per_class": 1, "alpha": 0.45},
    "mlflow": {"log_full_bundle": False},
}


def tiny_training(**overrides: Any) -> dict[str, Any]:
    """A deep copy of :data:`TINY_TRAINING` with top-level ``overrides``."""
    params = copy.deepcopy(TINY_TRAINING)
    params.update(copy.deepcopy(overrides))
    return params


def manifest_for(folder: Path, train: int, validation: int, test: int) -> pd.DataFrame:
    """A split manifest over a copied demo folder: per class, the first images (by sha256) go
    to train, then validation, then test; duplicates of the same bytes appear once."""
    classes = {
        record["sha256"]: record["demo_class"]
        for record in map(json.loads, (folder / "rekognition_responses.jsonl").open())
    }
    rows: dict[str, dict[str, str]] = {}
    for path in sorted((folder / "images").rglob("*")):
        if path.is_file():
            sha = sha256_bytes(path.read_bytes())
            if sha in classes:
                rows.setdefault(sha, {"sha256": sha, "uri": str(path), "class": classes[sha]})
    frame = pd.DataFrame(list(rows.values())).sort_values("sha256").reset_index(drop=True)
    rank = frame.groupby("class").cumcount()
    frame["split"] = [
        "train" if r < train else "validation" if r < train + validation else "test" for r in rank
    ]
    frame = frame[rank < train + validation + test].reset_index(drop=True)
    frame["group"] = frame["sha256"]
    return frame


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of 12 images per class of the demo."""
    return copy_demo(tmp_path_factory.mktemp("training_demo"), per_class=12)


@pytest.fixture(scope="session")
def demo_manifest(demo_folder: Path) -> pd.DataFrame:
    """12 images per class: 8 train, 2 validation, 2 test."""
    return manifest_for(demo_folder, train=8, validation=2, test=2)


@pytest.fixture(scope="session")
def small_manifest(demo_folder: Path) -> pd.DataFrame:
    """6 images per class: 4 train, 1 validation, 1 test (for tests of mechanics)."""
    return manifest_for(demo_folder, train=4, validation=1, test=1)
