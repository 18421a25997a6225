"""Simple per-image statistics for drift: size, brightness and format."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from eyecatcher.images import decode_image
from eyecatcher.storage import read_bytes

logger = logging.getLogger(__name__)

STAT_COLUMNS = ["uri", "width", "height", "megapixels", "brightness", "format", "error"]
#: Brightness is measured on a small version of the image: a mean needs no detail.
_BRIGHTNESS_SIDE = 64


def image_statistics(
    uris: Sequence[str],
    storage_options: Mapping[str, Any] | None = None,
    *,
    max_images: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Width, height, megapixels, mean brightness (0-255 luma) and format of each image.

    Unreadable files are kept with an ``error`` (and nulls), never dropped silently.

    Args:
        uris: Local paths or ``s3://`` URIs.
        storage_options: fsspec options for remote URIs.
        max_images: Measure a random sample of this many (``None``: all).
        seed: Seed of that sample.

    Returns:
        One row per measured image, columns :data:`STAT_COLUMNS`.
    """
    chosen = list(uris)
    if max_images is not None and len(chosen) > max_images:
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(chosen, size=max_images, replace=False).tolist())
    rows = []
    for uri in chosen:
        try:
            data = read_bytes(uri, storage_options)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = str(probe.format or "unknown").upper()
            image = decode_image(data)
            width, height = image.size
            image.thumbnail((_BRIGHTNESS_SIDE, _BRIGHTNESS_SIDE))
            brightness = float(np.asarray(image.convert("L"), dtype=float).mean())
            rows.append([uri, width, height, width * height / 1e6, brightness, fmt, None])
        except Exception as exc:  # one unreadable file must not hide the rest
            rows.append([uri, None, None, None, None, None, f"{type(exc).__name__}: {exc}"])
    table = pd.DataFrame(rows, columns=STAT_COLUMNS)
    failed = int(table["error"].notna().sum())
    if failed:
        logger.warning("%d of %d images could not be measured for drift", failed, len(table))
    return table
