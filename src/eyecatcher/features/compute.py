"""Frozen-backbone features, computed once per image and view and cached on disk.

With a frozen backbone, the only thing training changes is the head; running the backbone
again every epoch recomputes the same numbers. Here features are computed once per image per
*view* (view ``clean`` is the evaluation transform; augmented views apply the training
augmentation with a seed derived from the image, so that a view is the same pixels every time)
and stored under a key made of everything that changes them:

* the architecture, the weights source, the random-initialisation seed and a fingerprint of the
  backbone's weights (so a new checkpoint or a new timm default invalidates the entry),
* the preprocessing config (input size, mean, std, interpolation) and, for augmented views,
  the augmentation settings, the augmentation seed and the view index,
* the image's sha256 (its identity everywhere in the project), and the timm version,
* the runtime that computed the vectors (``torch``, ``onnxruntime`` running the backbone's
  exported graph: see :mod:`eyecatcher.models.feature_graph`, or ``torch_bf16``: PyTorch
  under bfloat16 autocast, :mod:`eyecatcher.models.bf16_features`).

Layout: ``<root>/<architecture>/<key digest>/key.json`` (the key in full, for humans) and one
``.npy`` file per image below it; ``<root>`` is a local folder or an ``s3://`` prefix. Entries
are written atomically (:func:`eyecatcher.storage.write_atomic`), so an interrupted run keeps
everything it finished and never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from kedro.io import AbstractDataset, DatasetError
from PIL import Image
from tqdm.auto import tqdm

from eyecatcher import storage
from eyecatcher.images import decode_image, sha256_bytes
from eyecatcher.models.bf16_features import BF16_RUNTIME, Bf16Features, checked_bf16_features
from eyecatcher.models.factory import extract_features
from eyecatcher.models.feature_graph import FEATURE_RUNTIMES, FeatureGraph, feature_graph
from eyecatcher.preprocessing import eval_transform, train_transform
from eyecatcher.storage import StorageOptions

logger = logging.getLogger(__name__)

#: Bump when the stored representation changes (dtype, layout, what is extracted).
CACHE_FORMAT_VERSION = 1

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


def backbone_fingerprint(model: torch.nn.Module) -> str:
    """A sha256 over every backbone tensor (the classification head excluded).

    Args:
        model: A timm model.

    Returns:
        Hex digest that changes whenever any backbone weight or buffer changes.
    """
    head_tensors = {id(t) for t in model.get_classifier().state_dict(keep_vars=True).values()}
    digest = hashlib.sha256()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in head_tensors:
            continue
        data = tensor.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(data.dtype).encode())
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class BackboneKey:
    """The model half of a cache key.

    Attributes:
        architecture: timm model name.
        weights_source: ``imagenet``, ``random`` or ``checkpoint:<path>``.
        weights_seed: Seed of the random initialisation (part of the key for random weights).
        fingerprint: :func:`backbone_fingerprint` of the backbone.
        data_config: Preprocessing config the inputs were made with.
        model_kwargs: Extra ``timm.create_model`` arguments (``img_size``).
        runtime: What computes the vectors: ``torch`` (eager PyTorch), ``onnxruntime`` (the
            exported graph of :mod:`eyecatcher.models.feature_graph`) or ``torch_bf16``
            (bfloat16 autocast, :mod:`eyecatcher.models.bf16_features`). They agree within
            those modules' tolerances, not bit for bit, so each has its own cache entries.
    """

    architecture: str
    weights_source: str
    weights_seed: int | None
    fingerprint: str
    data_config: Mapping[str, Any]
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    runtime: str = "torch"

    def __post_init__(self) -> None:
        """A known runtime."""
        if self.runtime not in FEATURE_RUNTIMES:
            raise ValueError(
                f"feature runtime must be one of {list(FEATURE_RUNTIMES)}, got {self.runtime!r}"
            )

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable form of the key."""
        return {
            "format_version": CACHE_FORMAT_VERSION,
            "timm_version": timm.__version__,
            "architecture": self.architecture,
            "weights_source": self.weights_source,
            "weights_seed": self.weights_seed if self.weights_source == "random" else None,
            "backbone_fingerprint": self.fingerprint,
            "data_config": json.loads(json.dumps(dict(self.data_config), sort_keys=True)),
            "model_kwargs": dict(sorted(self.model_kwargs.items())),
            "runtime": self.runtime,
        }


def cache_key(backbone: BackboneKey, view: ViewSpec) -> tuple[dict[str, Any], str]:
    """The full key of one (backbone, view) and its digest.

    Returns:
        The key as a dict and the sha256 hex digest of its canonical JSON.
    """
    key = {**backbone.describe(), **view.describe()}
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return key, hashlib.sha256(text.encode()).hexdigest()


class FeatureCache:
    """A folder (local or ``s3://``) of cached feature vectors, one ``.npy`` file per key and image.

    Args:
        root: Cache folder or prefix (``data/04_feature/feature_cache`` in the catalog).
        storage_options: fsspec filesystem arguments for a remote ``root`` (and credentials,
            when the catalog passes them).
    """

    def __init__(self, root: str | Path, storage_options: StorageOptions | None = None) -> None:
        self.storage_options = dict(storage_options or {})
        self.root: Path | str = Path(root) if storage.is_local(str(root)) else str(root).rstrip("/")
        self._written_keys: set[str] = set()

    def _entry_dir(self, key: Mapping[str, Any], digest: str) -> str:
        return storage.join(str(self.root), str(key["architecture"]), digest[:24])

    def path(self, key: Mapping[str, Any], digest: str, sha256: str) -> Path | str:
        """Where the vector of image ``sha256`` under ``key`` lives (a URL for a remote cache)."""
        uri = storage.join(self._entry_dir(key, digest), sha256[:2], f"{sha256}.npy")
        return Path(uri) if isinstance(self.root, Path) else uri

    def get(self, key: Mapping[str, Any], digest: str, sha256: str) -> np.ndarray | None:
        """The cached vector, or ``None`` on a miss (a corrupt file counts as a miss)."""
        uri = str(self.path(key, digest, sha256))
        try:
            data = storage.read_bytes(uri, self.storage_options)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("Ignoring unreadable feature cache entry %s (%s)", uri, exc)
            return None
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable feature cache entry %s (%s)", uri, exc)
            return None

    def put(self, key: Mapping[str, Any], digest: str, sha256: str, vector: np.ndarray) -> None:
        """Store ``vector`` atomically (:func:`eyecatcher.storage.write_atomic`)."""
        key_uri = storage.join(self._entry_dir(key, digest), "key.json")
        if key_uri not in self._written_keys:
            if not storage.exists(key_uri, self.storage_options):
                text = json.dumps(key, indent=2, sort_keys=True).encode()
                storage.write_atomic(key_uri, text, self.storage_options)
            self._written_keys.add(key_uri)
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(vector, dtype=np.float32), allow_pickle=False)
        storage.write_atomic(
            str(self.path(key, digest, sha256)), buffer.getvalue(), self.storage_options
        )


class FeatureCacheDataset(AbstractDataset[FeatureCache, None]):
    """Catalog entry for the feature cache: loading gives a :class:`FeatureCache` handle.

    The cache is read and written entry by entry while features are computed, so the node
    receives a handle on the folder rather than its content; the folder itself is declared in
    the catalog like any other dataset. Example::

        feature_cache:
          type: eyecatcher.features.FeatureCacheDataset
          path: s3://my-bucket/eyecatcher/04_feature/feature_cache
          fs_args: ${globals:storage_options}
    """

    def __init__(
        self,
        path: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            path: The cache folder: a local path or an ``s3://`` prefix.
            credentials: Secrets for the filesystem (``credentials.yml``), or ``None`` for the
                default chain.
            fs_args: fsspec filesystem arguments (``${globals:storage_options}``).
            metadata: Free-form metadata for Kedro plugins; unused here.
        """
        self._path = str(path)
        self._options = {**dict(fs_args or {}), **dict(credentials or {})}
        self.metadata = metadata

    def load(self) -> FeatureCache:
        """A handle on the cache folder."""
        return FeatureCache(self._path, self._options)

    def save(self, data: None) -> None:
        """Not supported: the cache is written through its handle."""
        raise DatasetError("The feature cache is written through FeatureCache, not saved.")

    def _exists(self) -> bool:
        return storage.exists(self._path, self._options)

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}


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


@dataclass
class FeatureStats:
    """What a feature computation did.

    Attributes:
        hits: (image, view) pairs read from the cache.
        misses: Pairs computed by the backbone.
        seconds: Wall time of the whole call.
        digests: Cache key digest per view name.
        runtime: What computed the misses (``torch``, ``onnxruntime`` or ``torch_bf16``).
        graph_check: Agreement with float32 PyTorch of the ONNX graph or the bfloat16
            function (``onnxruntime`` or ``torch_bf16`` with misses).
    """

    hits: int = 0
    misses: int = 0
    seconds: float = 0.0
    digests: dict[str, str] = field(default_factory=dict)
    runtime: str = "torch"
    graph_check: dict[str, float] = field(default_factory=dict)

    def add(self, other: FeatureStats) -> None:
        """Accumulate ``other`` into this one."""
        self.hits += other.hits
        self.misses += other.misses
        self.seconds += other.seconds
        self.digests.update(other.digests)
        self.runtime = other.runtime
        self.graph_check = other.graph_check or self.graph_check


@torch.no_grad()
def compute_features(
    model: torch.nn.Module,
    backbone: BackboneKey,
    images: Sequence[tuple[str, str]],
    views: Sequence[ViewSpec],
    *,
    cache: FeatureCache | None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    description: str = "features",
    engine: str = "local",
    workers: int = 2,
    storage_options: StorageOptions | None = None,
) -> tuple[dict[str, np.ndarray], FeatureStats]:
    """Backbone features of every image under every view, from the cache when possible.

    Args:
        model: The frozen timm model (in eval mode), already on ``device``.
        backbone: The model half of the cache key; its ``runtime`` says what computes the
            misses (``onnxruntime``: the model's feature graph, exported and checked against
            PyTorch once per backbone and process).
        images: ``(sha256, uri)`` pairs, in the order of the returned rows.
        views: Views to compute.
        cache: Where to read and store vectors; ``None`` computes without caching.
        batch_size: Images per backbone forward pass.
        device: Device the model is on (the local engine; Ray workers use their CPUs).
        description: Progress-bar label.
        engine: Where cache misses are computed: ``local`` (this process) or ``ray`` (a pool
            of ``workers`` Ray actors, each with a copy of the model; see
            :mod:`eyecatcher.distributed.feature_extraction`). Keys, and the cache entries
            this process writes, are the same either way.
        workers: Ray actors, for ``engine="ray"``.
        storage_options: fsspec options of the image source (``${globals:storage_options}``).

    Returns:
        ``{view name: array (len(images), n_features)}`` and the hit/miss statistics.
    """
    start = time.perf_counter()
    stats = FeatureStats(runtime=backbone.runtime)
    keys = {view.name: cache_key(backbone, view) for view in views}
    stats.digests = {name: digest for name, (_, digest) in keys.items()}
    rows: dict[str, list[np.ndarray | None]] = {view.name: [None] * len(images) for view in views}
    missing: dict[int, list[ViewSpec]] = {}
    for view in views:
        key, digest = keys[view.name]
        for index, (sha256, _) in enumerate(images):
            vector = cache.get(key, digest, sha256) if cache is not None else None
            if vector is None:
                missing.setdefault(index, []).append(view)
            else:
                rows[view.name][index] = vector
                stats.hits += 1

    if engine not in ("local", "ray"):
        raise ValueError(f"feature engine must be 'local' or 'ray', got {engine!r}")
    total = sum(len(v) for v in missing.values())
    extractor: torch.nn.Module | FeatureGraph | Bf16Features = model
    if backbone.runtime == "onnxruntime" and total:
        extractor = feature_graph(
            model,
            backbone.fingerprint,
            backbone.data_config["input_size"],
            threads=torch.get_num_threads(),
        )
        stats.graph_check = dict(extractor.check)
    elif backbone.runtime == BF16_RUNTIME and total:
        extractor = checked_bf16_features(
            model, backbone.fingerprint, backbone.data_config["input_size"]
        )
        stats.graph_check = dict(extractor.check)
    if engine == "ray" and total:
        from eyecatcher.distributed.feature_extraction import compute_on_ray

        computed = compute_on_ray(
            extractor,
            backbone.data_config,
            images,
            missing,
            batch_size=batch_size,
            workers=workers,
            storage_options=storage_options,
        )
    else:
        computed = _compute_here(
            extractor,
            backbone.data_config,
            images,
            missing,
            batch_size=batch_size,
            device=device,
            description=description,
            storage_options=storage_options,
        )
    for index, view, vector in computed:
        rows[view.name][index] = vector
        if cache is not None:
            key, digest = keys[view.name]
            cache.put(key, digest, images[index][0], vector)
        stats.misses += 1

    stats.seconds = time.perf_counter() - start
    if not images:
        return {view.name: np.zeros((0, 0), dtype=np.float32) for view in views}, stats
    return {name: np.stack(vectors) for name, vectors in rows.items()}, stats  # type: ignore[arg-type]


def compute_view_batches(
    model: torch.nn.Module | FeatureGraph | Bf16Features,
    data_config: Mapping[str, Any],
    images: Sequence[tuple[str, str]],
    missing: Mapping[int, Sequence[ViewSpec]],
    *,
    batch_size: int,
    device: str | torch.device = "cpu",
    storage_options: StorageOptions | None = None,
) -> Iterator[tuple[list[tuple[int, ViewSpec, np.ndarray]], int]]:
    """Backbone vectors of the (image, view) pairs in ``missing``, one forward pass at a time.

    The unit of work of both engines: each chunk of ``batch_size`` images is decoded once and
    run through the backbone once per view, so the Ray engine batches exactly as this one does.

    Args:
        model: The frozen timm model, on ``device``, or a checked feature function of it (its
            ONNX feature graph, or its bfloat16 function).
        data_config: The preprocessing config of the cache key.
        images: ``(sha256, uri)`` pairs.
        missing: For each image index to compute, the views it needs.
        batch_size: Images per forward pass.
        device: Device the model is on (a feature graph takes CPU tensors).
        storage_options: fsspec options of the image source.

    Yields:
        ``(index, view, float32 vector)`` triples of one forward pass, and its size.
    """
    transforms: dict[str, Any] = {}
    todo = sorted(missing)
    for chunk_start in range(0, len(todo), batch_size):
        chunk = todo[chunk_start : chunk_start + batch_size]
        decoded = {
            index: read_image(images[index][1], images[index][0], storage_options)
            for index in chunk
        }
        views = {view.name: view for index in chunk for view in missing[index]}
        for name, view in views.items():
            members = [index for index in chunk if view in missing[index]]
            if name not in transforms:
                transforms[name] = view_transform(view, data_config)
            batch = torch.stack(
                [view_input(view, transforms[name], decoded[i], images[i][0]) for i in members]
            )
            if isinstance(model, torch.nn.Module):
                vectors = extract_features(model, batch.to(device)).float().cpu().numpy()
            else:  # a checked feature function (ONNX graph, bfloat16) takes CPU tensors
                vectors = model(batch)
            yield [(i, view, v) for i, v in zip(members, vectors, strict=True)], len(members)


@torch.no_grad()
def _compute_here(
    model: torch.nn.Module | FeatureGraph | Bf16Features,
    data_config: Mapping[str, Any],
    images: Sequence[tuple[str, str]],
    missing: Mapping[int, Sequence[ViewSpec]],
    *,
    batch_size: int,
    device: str | torch.device,
    description: str,
    storage_options: StorageOptions | None,
) -> Iterator[tuple[int, ViewSpec, np.ndarray]]:
    total = sum(len(v) for v in missing.values())
    with tqdm(total=total, desc=description, unit="img", disable=total == 0) as bar:
        for triples, size in compute_view_batches(
            model,
            data_config,
            images,
            missing,
            batch_size=batch_size,
            device=device,
            storage_options=storage_options,
        ):
            yield from triples
            bar.update(size)
