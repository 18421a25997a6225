"""Tiny random-weight backbones and image files shared by the feature-runtime tests."""

from __future__ import annotations

from pathlib import Path

import torch

from eyecatcher.features.cache import BackboneKey, backbone_fingerprint
from eyecatcher.images import sha256_bytes
from eyecatcher.models.factory import create_classifier
from eyecatcher.preprocessing import data_config_for
from tests.image_factory import good_images


def small_backbone(architecture: str, size: int = 64) -> tuple[torch.nn.Module, BackboneKey]:
    """A seeded random-weight timm model at ``size`` px and its (torch runtime) cache key."""
    torch.manual_seed(1)
    kwargs = {"img_size": size} if "vit" in architecture else {}
    model, source = create_classifier(architecture, 3, "random", **kwargs)
    model.eval()
    config = data_config_for(model, size)
    key = BackboneKey(architecture, source, 1, backbone_fingerprint(model), config, kwargs)
    return model, key


def image_files(folder: Path) -> list[tuple[str, str]]:
    """Distinct JPEG and PNG files of the shared good-image set: ``(sha256, path)`` pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    images: list[tuple[str, str]] = []
    for name, data in good_images(seed=0).items():
        if name.endswith((".jpg", ".png")) and sha256_bytes(data) not in dict(images):
            (folder / name).write_bytes(data)
            images.append((sha256_bytes(data), str(folder / name)))
    return images
