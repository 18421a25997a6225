"""Feature-cache building blocks: fingerprints, keys, views, sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from eyecatcher.features.cache import BackboneKey, FeatureCache, backbone_fingerprint, cache_key
from eyecatcher.features.views import ViewSpec, training_views
from eyecatcher.models.factory import model_kwargs_for_size


def test_fingerprint_ignores_the_head_and_sees_any_backbone_change() -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    before = backbone_fingerprint(model)
    with torch.no_grad():
        model.get_classifier().weight.add_(1.0)
    assert backbone_fingerprint(model) == before
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] += 1e-3
    assert backbone_fingerprint(model) != before


def test_keys_differ_by_view_and_augmentation_but_not_by_call() -> None:
    backbone = BackboneKey("test_vit", "random", 0, "f" * 64, {"input_size": [3, 64, 64]})
    clean = ViewSpec("clean")
    aug = ViewSpec("aug0", {"rotation_degrees": 15.0}, seed=1)
    assert cache_key(backbone, clean) == cache_key(backbone, ViewSpec("clean"))
    digests = {
        cache_key(backbone, view)[1]
        for view in (
            clean,
            aug,
            ViewSpec("aug0", {"rotation_degrees": 30.0}, seed=1),
            ViewSpec("aug0", {"rotation_degrees": 15.0}, seed=2),
            ViewSpec("aug1", {"rotation_degrees": 15.0}, seed=1),
        )
    }
    assert len(digests) == 5
    imagenet = BackboneKey("test_vit", "imagenet", 0, "f" * 64, {"input_size": [3, 64, 64]})
    # The init seed is part of the key only for random weights.
    assert cache_key(imagenet, clean)[0]["weights_seed"] is None


def test_training_views() -> None:
    views = training_views(3, {"horizontal_flip": 0.5}, seed=4)
    assert [v.name for v in views] == ["clean", "aug0", "aug1"]
    assert views[0].augmentation is None and views[1].seed == 4
    assert [v.name for v in training_views(2, {}, 0, include_clean=False)] == ["aug0", "aug1"]
    with pytest.raises(ValueError, match="at least 1"):
        training_views(0, {}, 0)


def test_cache_round_trip_and_corrupt_entries_count_as_misses(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    key, digest = cache_key(
        BackboneKey("test_vit", "random", 0, "f" * 64, {"input_size": [3, 64, 64]}),
        ViewSpec("clean"),
    )
    sha = "ab" * 32
    assert cache.get(key, digest, sha) is None
    cache.put(key, digest, sha, np.arange(4, dtype=np.float64))
    assert cache.get(key, digest, sha).dtype == np.float32
    assert (cache.path(key, digest, sha).parents[1] / "key.json").is_file()
    cache.path(key, digest, sha).write_bytes(b"not numpy")
    assert cache.get(key, digest, sha) is None


def test_only_position_embedded_models_get_an_img_size() -> None:
    assert model_kwargs_for_size("test_vit", 64) == {"img_size": 64}
    assert model_kwargs_for_size("test_vit", 160) == {}  # its default
    assert model_kwargs_for_size("test_resnet", 64) == {}  # pools globally
    assert model_kwargs_for_size("resnet50", None) == {}
