"""Views: the ways an image becomes a model input, each the same pixels on every call.

View ``clean`` is the evaluation transform; augmented views apply the training augmentation
with a seed derived from the image, so that a view is the same pixels every time (and a cached
vector of it means something). Images are read through the storage layer and checked against
the sha256 recorded upstream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from eyecatcher import storage
from eyecatcher.images import decode_image, sha256_bytes
from eyecatcher.preprocessing import eval_transform, train_transform
from eyecatcher.storage import StorageOptions

CLEAN_VIEW = "clean"


class ImageIntegrityError(ValueError):
    """An image's bytes no longer match the sha256 the manifest recorded for it."""


@dataclass(frozen=True)
class ViewSpec:
    """One way of turning an image into a model input.

    Attributes:
        name: ``clean`` for the evaluation transform, ``aug<i>`` for augmented view ``i``.
        augmentation: Flip and rotation settings (see
            :func:`eyecatcher.preprocessing.train_transform`); ``None`` for the clean view.
        seed: Seed from which each image's augmentation parameters are derived.
    """

    name: str
    augmentation: Mapping[str, float] | None = None
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        """The part of the cache key that this view contributes."""
        if self.augmentation is None:
            return {"view": self.name, "transform": "eval"}
        return {
            "view": self.name,
            "transform": "train",
            "augmentation": {k: float(v) for k, v in sorted(self.augmentation.items())},
            "augmentation_seed": int(self.seed),
        }


def training_views(
    n_views: int, augmentation: Mapping[str, float], seed: int, include_clean: bool = True
) -> list[ViewSpec]:
    """The views computed for the training split.

    Args:
        n_views: How many views per training image (at least 1).
        augmentation: Keyword arguments of :func:`eyecatcher.preprocessing.train_transform`.
        seed: Augmentation seed.
        include_clean: Whether view 0 is the un-augmented evaluation view.

    Returns:
        ``n_views`` view specs.
    """
    if n_views < 1:
        raise ValueError(f"features.views must be at least 1, got {n_views}")
    views = [ViewSpec(CLEAN_VIEW)] if include_clean else []
    index = 0
    while len(views) < n_views:
        views.append(ViewSpec(f"aug{index}", dict(augmentation), seed))
        index += 1
    return views


def read_image(
    uri: str, expected_sha256: str, storage_options: StorageOptions | None = None
) -> Image.Image:
    """Read an image through the storage layer and check that it is unchanged.

    Args:
        uri: ``/path``, ``relative/path`` or ``s3://bucket/key``.
        expected_sha256: The sha256 recorded for it upstream.
        storage_options: fsspec options of the image source (``${globals:storage_options}``).

    Returns:
        The decoded upright RGB image.

    Raises:
        ImageIntegrityError: If the bytes changed since the manifest was written (cached
            features and labels would silently belong to another image otherwise).
    """
    data = storage.read_bytes(uri, storage_options)
    actual = sha256_bytes(data)
    if actual != expected_sha256:
        raise ImageIntegrityError(
            f"{uri} changed since the split manifest was written (sha256 {actual[:12]}..., "
            f"expected {expected_sha256[:12]}...). Re-run ingestion and splitting."
        )
    return decode_image(data)


def view_transform(view: ViewSpec, data_config: Mapping[str, Any]) -> Any:
    """The transform of ``view``: the evaluation one, or the seeded training augmentation."""
    if view.augmentation is None:
        return eval_transform(data_config)
    return train_transform(data_config, **view.augmentation)


def view_input(view: ViewSpec, transform: Any, image: Image.Image, sha256: str) -> torch.Tensor:
    """The model input of one image under ``view``; the same pixels on every call and machine."""
    if view.augmentation is None:
        return transform(image)
    # The augmentation of (image, view) must be the same every time for the cache to mean
    # anything: seed torch's generator from the key, without disturbing the caller's stream.
    seed_text = f"{view.seed}:{view.name}:{sha256}".encode()
    seed = int.from_bytes(hashlib.sha256(seed_text).digest()[:8], "little")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)
