"""Features computed from s3:// images, cached on S3, with the endpoint from AWS_ENDPOINT_URL."""

from __future__ import annotations

import io

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from eyecatcher import storage
from eyecatcher.datasets.feature_cache_dataset import FeatureCacheDataset
from eyecatcher.features.cache import BackboneKey, backbone_fingerprint
from eyecatcher.features.compute import compute_features
from eyecatcher.features.views import ImageIntegrityError, ViewSpec, read_image
from eyecatcher.images import sha256_bytes
from eyecatcher.preprocessing import data_config_for


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(48, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def s3_images(s3_bucket: str) -> list[tuple[str, str]]:
    """Four PNGs under ``<bucket>/01_raw/images`` as ``(sha256, uri)`` pairs."""
    images = []
    for seed in range(4):
        data = _png(seed)
        uri = f"{s3_bucket}/01_raw/images/{seed}.png"
        storage.write_atomic(uri, data)
        images.append((sha256_bytes(data), uri))
    return images


def test_features_from_s3_images_into_an_s3_cache(
    s3_bucket: str, s3_images: list[tuple[str, str]]
) -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2).eval()
    config = data_config_for(model, 64)
    key = BackboneKey("test_resnet", "random", 0, backbone_fingerprint(model), config)
    views = [ViewSpec("clean"), ViewSpec("aug0", {"horizontal_flip": 1.0}, seed=3)]
    dataset = FeatureCacheDataset(path=f"{s3_bucket}/04_feature/feature_cache")
    # No storage_options at all: the endpoint comes from AWS_ENDPOINT_URL alone.
    cold, cold_stats = compute_features(
        model, key, s3_images, views, cache=dataset.load(), batch_size=3
    )
    assert (cold_stats.hits, cold_stats.misses) == (0, 8)
    assert dataset.exists()
    entries = storage.list_files(f"{s3_bucket}/04_feature/feature_cache", extensions=[".npy"])
    assert len(entries) == 8
    assert len(storage.list_files(f"{s3_bucket}/04_feature", extensions=["key.json"])) == 2

    warm, warm_stats = compute_features(model, key, s3_images, views, cache=dataset.load())
    assert (warm_stats.hits, warm_stats.misses) == (8, 0)
    for name in ("clean", "aug0"):
        np.testing.assert_array_equal(warm[name], cold[name])
    uncached, _ = compute_features(model, key, s3_images, views, cache=None)
    np.testing.assert_allclose(uncached["clean"], cold["clean"], rtol=1e-5, atol=1e-6)


def test_read_image_checks_the_s3_bytes(s3_images: list[tuple[str, str]]) -> None:
    sha, uri = s3_images[0]
    assert read_image(uri, sha).size == (40, 48)
    with pytest.raises(ImageIntegrityError, match="changed since"):
        read_image(uri, "0" * 64)


def test_storage_options_reach_the_image_reads(
    s3_images: list[tuple[str, str]], moto_s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without AWS_ENDPOINT_URL, only the configured storage_options can find the endpoint."""
    import s3fs

    monkeypatch.delenv("AWS_ENDPOINT_URL")
    s3fs.S3FileSystem.clear_instance_cache()
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2).eval()
    config = data_config_for(model, 64)
    key = BackboneKey("test_resnet", "random", 0, backbone_fingerprint(model), config)
    options = {"client_kwargs": {"endpoint_url": moto_s3}}
    features, stats = compute_features(
        model, key, s3_images, [ViewSpec("clean")], cache=None, storage_options=options
    )
    assert features["clean"].shape[0] == 4 and stats.misses == 4
