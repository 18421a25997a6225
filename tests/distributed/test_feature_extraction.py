"""Cold-cache features on Ray (local mode) fill the same cache entries as the local engine."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from eyecatcher.features.cache import BackboneKey, FeatureCache, backbone_fingerprint
from eyecatcher.features.compute import compute_features
from eyecatcher.features.runtimes import bf16 as bf16_module
from eyecatcher.features.views import training_views
from eyecatcher.images import sha256_bytes
from eyecatcher.models.factory import create_classifier
from eyecatcher.pipelines.training.fitting import fit_head
from eyecatcher.preprocessing import data_config_for
from tests.image_factory import good_images
from tests.pipelines.training.conftest import tiny_training

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")

#: The stated tolerance between engines: the same batches through the same float32 kernels give
#: the same bits in practice; different processes may pick other kernel paths.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray (2 CPUs, 127.0.0.1, no dashboard) for the whole module."""
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield
    ray.shutdown()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[torch.nn.Module, BackboneKey, list[tuple[str, str]]]:
    torch.manual_seed(3)
    model, source = create_classifier("test_resnet", 3, "random")
    model.eval()
    data_config = data_config_for(model, 64)
    backbone = BackboneKey("test_resnet", source, 3, backbone_fingerprint(model), data_config)
    images: list[tuple[str, str]] = []
    for seed in range(3):
        for name, data in good_images(seed=seed).items():
            # Distinct images only: a copy would be a cache hit and blur the counts below.
            if name.endswith((".jpg", ".png", ".webp")) and sha256_bytes(data) not in dict(images):
                path = tmp_path / "images" / f"{seed}-{name}"
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(data)
                images.append((sha256_bytes(data), str(path)))
    return model, backbone, images


def _entries(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}


def _assert_same_entries(laptop: FeatureCache, cluster: FeatureCache) -> None:
    """Identical keys and layout; vectors equal within :data:`TOLERANCE`."""
    laptop_files, cluster_files = _entries(laptop.root), _entries(cluster.root)
    assert laptop_files and sorted(laptop_files) == sorted(cluster_files)
    worst = 0.0
    for name, path in laptop_files.items():
        if name.endswith("key.json"):
            assert path.read_text() == cluster_files[name].read_text()
            continue
        a, b = np.load(path), np.load(cluster_files[name])
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        worst = max(worst, float(np.abs(a - b).max()))
    assert worst <= TOLERANCE


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_ray_fills_the_cache_a_laptop_run_fills_and_each_reuses_the_other(
    local_ray: None, setup: tuple, tmp_path: Path, runtime: str
) -> None:
    model, backbone, images = setup
    backbone = dataclasses.replace(backbone, runtime=runtime)
    views = training_views(3, {"horizontal_flip": 0.5, "rotation_degrees": 10.0}, seed=7)
    laptop, cluster = FeatureCache(tmp_path / "laptop"), FeatureCache(tmp_path / "cluster")
    common = {"batch_size": 4}
    local, local_stats = compute_features(model, backbone, images, views, cache=laptop, **common)
    on_ray, ray_stats = compute_features(
        model, backbone, images, views, cache=cluster, engine="ray", workers=2, **common
    )
    assert ray_stats.misses == local_stats.misses == len(images) * len(views)
    assert ray_stats.digests == local_stats.digests
    _assert_same_entries(laptop, cluster)
    for name in local:
        np.testing.assert_allclose(on_ray[name], local[name], atol=TOLERANCE)
    # A cache filled on the cluster serves a laptop run, and the other way round.
    _, laptop_reads_cluster = compute_features(model, backbone, images, views, cache=cluster)
    _, cluster_reads_laptop = compute_features(
        model, backbone, images, views, cache=laptop, engine="ray"
    )
    for stats in (laptop_reads_cluster, cluster_reads_laptop):
        assert stats.misses == 0 and stats.hits == len(images) * len(views)


def test_bf16_features_on_ray_fill_the_same_entries_within_the_bf16_tolerance(
    local_ray: None, setup: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The driver checks the device; the workers compute on their CPUs (emulated where they
    # lack native bfloat16: slower, the same arithmetic).
    monkeypatch.setattr(bf16_module, "native_bf16", lambda device: True)
    model, backbone, images = setup
    backbone = dataclasses.replace(backbone, runtime=bf16_module.BF16_RUNTIME)
    views = training_views(2, {"horizontal_flip": 0.5, "rotation_degrees": 10.0}, seed=7)
    laptop, cluster = FeatureCache(tmp_path / "laptop"), FeatureCache(tmp_path / "cluster")
    local, local_stats = compute_features(model, backbone, images, views, cache=laptop)
    on_ray, ray_stats = compute_features(
        model, backbone, images, views, cache=cluster, engine="ray", workers=2, batch_size=4
    )
    assert ray_stats.misses == local_stats.misses == len(images) * len(views)
    assert ray_stats.digests == local_stats.digests and ray_stats.runtime == "torch_bf16"
    for name in local:
        scale = max(1.0, float(np.abs(local[name]).max()))
        np.testing.assert_allclose(
            on_ray[name], local[name], atol=bf16_module.BF16_TOLERANCE * scale
        )


def test_a_partly_filled_cache_sends_only_the_misses_to_ray(
    local_ray: None, setup: tuple, tmp_path: Path
) -> None:
    model, backbone, images = setup
    views = training_views(1, {}, seed=0)
    cache = FeatureCache(tmp_path / "cache")
    half = len(images) // 2
    compute_features(model, backbone, images[:half], views, cache=cache)
    features, stats = compute_features(
        model, backbone, images, views, cache=cache, engine="ray", workers=1
    )
    assert stats.hits == half and stats.misses == len(images) - half
    fresh, _ = compute_features(model, backbone, images, views, cache=None)
    np.testing.assert_allclose(features["clean"], fresh["clean"], atol=TOLERANCE)


def test_an_unknown_engine_is_refused(setup: tuple) -> None:
    model, backbone, images = setup
    with pytest.raises(ValueError, match="feature engine"):
        compute_features(
            model, backbone, images, training_views(1, {}, 0), cache=None, engine="dask"
        )


def test_the_training_feature_step_on_ray_writes_the_local_engines_cache_entries(
    local_ray: None, setup: tuple, tmp_path: Path
) -> None:
    """``training.features.engine: ray`` through the training step that fills the cache."""
    model, backbone, images = setup
    labels = np.arange(len(images)) % 3
    train, validation = (images[:-2], labels[:-2]), (images[-2:], labels[-2:])
    views = training_views(2, {"horizontal_flip": 0.5, "rotation_degrees": 10.0}, seed=5)
    caches, fits = {}, {}
    for engine in ("local", "ray"):
        features = {"views": 2, "batch_size": 4, "engine": engine, "ray": {"workers": 2}}
        caches[engine] = FeatureCache(tmp_path / engine)
        fits[engine] = fit_head(
            copy.deepcopy(model),  # the head trains in place; both start from the same one
            backbone,
            train,
            validation,
            tiny_training(epochs=1, features=features),
            views=views,
            feature_cache=caches[engine],
            device=torch.device("cpu"),
            candidate=engine,
        )
    local, on_ray = fits["local"].stats, fits["ray"].stats
    assert fits["ray"].mode == "cached_features"
    assert on_ray.misses == local.misses == len(train[0]) * 2 + len(validation[0])
    assert on_ray.digests == local.digests
    _assert_same_entries(caches["local"], caches["ray"])


class _DriverKilledAfter(FeatureCache):
    """A cache whose process is killed after ``n`` entries were written (Ctrl-C, OOM, a node)."""

    def __init__(self, root: Path, n: int) -> None:
        super().__init__(root)
        self.left = n

    def put(self, *args, **kwargs) -> None:
        if self.left == 0:
            raise KeyboardInterrupt("the extraction is killed here")
        self.left -= 1
        super().put(*args, **kwargs)


def test_an_interrupted_extraction_on_ray_resumes_computing_only_the_missing_pairs(
    local_ray: None, setup: tuple, tmp_path: Path
) -> None:
    """Vectors come back batch by batch and are cached as they come: a rerun after a kill
    computes only what the cache still misses, and gives the uninterrupted features."""
    model, backbone, images = setup
    views = training_views(2, {"horizontal_flip": 0.5, "rotation_degrees": 10.0}, seed=7)
    total = len(images) * len(views)
    killed = _DriverKilledAfter(tmp_path / "cache", n=total // 2)
    with pytest.raises(KeyboardInterrupt):
        compute_features(
            model, backbone, images, views, cache=killed, engine="ray", workers=2, batch_size=2
        )
    resumed, stats = compute_features(
        model,
        backbone,
        images,
        views,
        cache=FeatureCache(tmp_path / "cache"),
        engine="ray",
        workers=2,
        batch_size=2,
    )
    assert stats.hits == total // 2 and stats.misses == total - total // 2
    fresh, _ = compute_features(model, backbone, images, views, cache=None)
    for name in fresh:
        np.testing.assert_allclose(resumed[name], fresh[name], atol=TOLERANCE)
