"""Heatmap overlays of chosen test images for one trained classifier."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from eyecatcher.explain.gradcam import explainer_for
from eyecatcher.explain.overlay import display_image, overlay_heatmap
from eyecatcher.features.views import read_image
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.preprocessing import eval_transform


def _file_stem(row: Mapping[str, Any]) -> str:
    name = f"{row['reason']}_{int(row['rank']):02d}_{row['class']}_as_{row['predicted']}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _caption(row: Mapping[str, Any]) -> str:
    return (
        f"true {row['class']} | predicted {row['predicted']} ({row['confidence']:.2f}) | "
        f"unsafe {row['unsafe_score']:.2f}"
    )


def explain_examples(
    bundle: ClassifierBundle,
    examples: pd.DataFrame,
    *,
    alpha: float = 0.45,
    batch_size: int = 8,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Image.Image], list[dict[str, Any]]]:
    """Grad-CAM overlays for the predicted class of each chosen image.

    Args:
        bundle: The trained classifier.
        examples: Rows from :func:`eyecatcher.explain.pick_examples`.
        alpha: Heatmap weight in the overlay.
        batch_size: Images per backward pass.
        storage_options: fsspec options of the image source (``${globals:storage_options}``).

    Returns:
        ``{file stem: overlay}`` and one index record per overlay (file, reason, truth,
        prediction, scores, sha256, uri, heatmap peak position and share of the map's mass in
        its top tenth of pixels).
    """
    model = bundle.build_model()
    explainer = explainer_for(model)
    transform = eval_transform(bundle.data_config)
    classes = list(bundle.classes)
    overlays: dict[str, Image.Image] = {}
    index: list[dict[str, Any]] = []
    rows = examples.to_dict("records")
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = torch.stack(
            [transform(read_image(r["uri"], r["sha256"], storage_options)) for r in chunk]
        )
        targets = [classes.index(r["predicted"]) for r in chunk]
        maps = explainer.heatmaps(batch, targets)
        for row, tensor, heatmap in zip(chunk, batch, maps, strict=True):
            stem = _file_stem(row)
            overlays[stem] = overlay_heatmap(
                display_image(tensor, bundle.data_config),
                heatmap,
                alpha=alpha,
                caption=_caption(row),
            )
            flat = heatmap.ravel()
            top = flat >= (np.quantile(flat, 0.9) if flat.any() else 1.0)
            peak_y, peak_x = divmod(int(flat.argmax()), heatmap.shape[1])
            index.append(
                {
                    "file": f"{stem}.png",
                    "method": explainer.method,
                    "explained_class": row["predicted"],
                    "peak_xy": [peak_x / heatmap.shape[1], peak_y / heatmap.shape[0]],
                    "top_decile_mass": float(flat[top].sum() / flat.sum()) if flat.any() else 0.0,
                    **{
                        k: row[k] for k in ("reason", "rank", "sha256", "uri", "class", "predicted")
                    },
                    "confidence": float(row["confidence"]),
                    "unsafe_score": float(row["unsafe_score"]),
                }
            )
    return overlays, index
