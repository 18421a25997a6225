"""Fixtures for the labelling tests: demo answers, a small image index, labelling parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from eyecatcher.images import sha256_bytes, validate_image
from tests.base_config import base_parameters

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "data" / "01_raw" / "demo"


def demo_records() -> list[dict[str, Any]]:
    """The committed synthetic Rekognition answers."""
    with (DEMO / "rekognition_responses.jsonl").open() as handle:
        return [json.loads(line) for line in handle]


def labelling_params(**overrides: Any) -> dict[str, Any]:
    """The base ``labelling`` parameters with top-level overrides."""
    params = base_parameters("parameters_labelling.yml")
    return {**params["labelling"], **overrides}


def index_rows(paths: list[Path]) -> pd.DataFrame:
    """An ``image_index`` frame (docs/architecture.md columns) for local files."""
    rows = []
    for path in paths:
        data = path.read_bytes()
        info = validate_image(data)
        rows.append(
            {
                "sha256": sha256_bytes(data),
                "uri": str(path),
                "all_uris": [str(path)],
                "source": "test",
                "width": info.width,
                "height": info.height,
                "format": info.format,
                "mode": info.mode,
                "n_frames": info.n_frames,
                "bytes": len(data),
                "folder_label": None,
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture
def demo_index() -> pd.DataFrame:
    """An image index of the whole demo, de-duplicated like ingestion does."""
    paths = sorted(p for p in (DEMO / "images").rglob("*") if p.is_file())
    return index_rows(paths).drop_duplicates("sha256").reset_index(drop=True)


@pytest.fixture
def small_images(tmp_path: Path) -> list[Path]:
    """Twelve distinct small PNG/JPEG files (plus one WebP) in a temporary folder."""
    from PIL import Image

    paths = []
    for i in range(13):
        image = Image.new("RGB", (96, 96), (i * 19 % 256, 40 + i, 200 - i * 7))
        suffix, fmt = (
            (".webp", "WEBP") if i == 12 else ((".png", "PNG") if i % 2 else (".jpg", "JPEG"))
        )
        path = tmp_path / "imgs" / f"img_{i:02d}{suffix}"
        path.parent.mkdir(exist_ok=True)
        image.save(path, fmt)
        paths.append(path)
    return paths
