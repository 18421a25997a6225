"""The feature recipe: look every (image, view) up, compute the misses, store them.

Cache misses are computed by an *engine*: ``local`` runs them in this process; any other engine
(``ray``: :mod:`eyecatcher.distributed.feature_extraction`) is an ``eyecatcher.feature_engines``
entry point declared in ``pyproject.toml``, loaded only when there is something to compute. The
package that distributes the work registers itself there, so this module imports nothing of it
(no import cycle) and a new engine is a registration, not an edit here. Every engine runs
:func:`compute_view_batches`, so keys and cache entries are the same whichever computed them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol

import numpy as np
import torch

from eyecatcher.features.cache import BackboneKey, FeatureCache, cache_key
from eyecatcher.features.runtimes.bf16 import BF16_RUNTIME, Bf16Features, checked_bf16_features
from eyecatcher.features.runtimes.onnx_graph import FeatureGraph, feature_graph
from eyecatcher.features.views import ViewSpec, read_image, view_input, view_transform
from eyecatcher.models.factory import extract_features
from eyecatcher.progress import progress_bar
from eyecatcher.storage import StorageOptions

logger = logging.getLogger(__name__)

#: The entry-point group of the engines that compute cache misses elsewhere than here.
ENGINE_GROUP = "eyecatcher.feature_engines"

#: The engine of this process, always available.
LOCAL_ENGINE = "local"

#: What computes backbone vectors: the model itself or a checked feature function of it.
Extractor = torch.nn.Module | FeatureGraph | Bf16Features

#: ``{image index: [views it still needs]}``: the cache misses of one call.
Missing = Mapping[int, Sequence[ViewSpec]]

#: ``(image index, view, float32 vector)``: one computed miss.
Computed = tuple[int, ViewSpec, np.ndarray]


class MissEngine(Protocol):
    """An engine registered under :data:`ENGINE_GROUP` (e.g. ``compute_on_ray``)."""

    def __call__(
        self,
        model: Extractor,
        data_config: Mapping[str, Any],
        images: Sequence[tuple[str, str]],
        missing: Missing,
        *,
        batch_size: int,
        workers: int,
        storage_options: StorageOptions | None = None,
    ) -> Iterable[Computed]:
        """Every pair of ``missing`` exactly once."""


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


def feature_engines() -> list[str]:
    """The engine names ``compute_features`` accepts: ``local`` and every registered one."""
    registered = {entry.name for entry in metadata.entry_points(group=ENGINE_GROUP)}
    return [LOCAL_ENGINE, *sorted(registered - {LOCAL_ENGINE})]


def check_engine(engine: str) -> None:
    """Refuse an engine that is neither ``local`` nor registered.

    Raises:
        ValueError: Naming the engines there are (``ray`` needs the ``ray`` extra installed).
    """
    known = feature_engines()
    if engine not in known:
        raise ValueError(
            f"feature engine must be one of {known}, got {engine!r} (remote engines are "
            f"{ENGINE_GROUP!r} entry points: pip install -e '.[ray]' for ray)"
        )


def load_engine(engine: str) -> MissEngine:
    """The registered engine ``engine`` (imported now: only when there are misses)."""
    check_engine(engine)
    (entry,) = metadata.entry_points(group=ENGINE_GROUP, name=engine)
    return entry.load()


def feature_function(model: torch.nn.Module, backbone: BackboneKey) -> Extractor:
    """What computes the misses for ``backbone.runtime``: the model, or its checked function.

    ``onnxruntime`` exports (once per backbone and process) and checks the feature graph;
    ``torch_bf16`` checks the bfloat16 function; ``torch`` is the model itself.
    """
    input_size = backbone.data_config["input_size"]
    if backbone.runtime == "onnxruntime":
        return feature_graph(
            model, backbone.fingerprint, input_size, threads=torch.get_num_threads()
        )
    if backbone.runtime == BF16_RUNTIME:
        return checked_bf16_features(model, backbone.fingerprint, input_size)
    return model


def look_up(
    cache: FeatureCache | None,
    keys: Mapping[str, tuple[dict[str, Any], str]],
    images: Sequence[tuple[str, str]],
    views: Sequence[ViewSpec],
) -> tuple[dict[str, list[np.ndarray | None]], dict[int, list[ViewSpec]]]:
    """The cached vectors (``None`` where missing) and, per image index, the views to compute."""
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
    return rows, missing


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
    engine: str = LOCAL_ENGINE,
    workers: int = 2,
    storage_options: StorageOptions | None = None,
) -> tuple[dict[str, np.ndarray], FeatureStats]:
    """Backbone features of every image under every view, from the cache when possible.

    Args:
        model: The frozen timm model (in eval mode), already on ``device``.
        backbone: The model half of the cache key; its ``runtime`` says what computes the
            misses (:func:`feature_function`).
        images: ``(sha256, uri)`` pairs, in the order of the returned rows.
        views: Views to compute.
        cache: Where to read and store vectors; ``None`` computes without caching.
        batch_size: Images per backbone forward pass.
        device: Device the model is on (the local engine; Ray workers use their CPUs).
        description: Progress-bar label.
        engine: Where cache misses are computed: ``local`` (this process) or a registered
            engine (:func:`feature_engines`; ``ray``: a pool of ``workers`` Ray actors, each
            with a copy of the model). Keys, and the cache entries this process writes, are
            the same either way.
        workers: Ray actors, for ``engine="ray"``.
        storage_options: fsspec options of the image source (``${globals:storage_options}``).

    Returns:
        ``{view name: array (len(images), n_features)}`` and the hit/miss statistics.
    """
    start = time.perf_counter()
    check_engine(engine)
    keys = {view.name: cache_key(backbone, view) for view in views}
    rows, missing = look_up(cache, keys, images, views)
    stats = FeatureStats(runtime=backbone.runtime, digests={n: d for n, (_, d) in keys.items()})
    stats.hits = sum(vector is not None for column in rows.values() for vector in column)
    if missing:
        extractor = feature_function(model, backbone)
        if not isinstance(extractor, torch.nn.Module):  # a checked function says how close
            stats.graph_check = dict(extractor.check)
        common = {"batch_size": batch_size, "storage_options": storage_options}
        if engine == LOCAL_ENGINE:
            computed = _compute_here(
                extractor,
                backbone.data_config,
                images,
                missing,
                device=device,
                description=description,
                **common,
            )
        else:
            computed = load_engine(engine)(
                extractor, backbone.data_config, images, missing, workers=workers, **common
            )
        for index, view, vector in computed:
            rows[view.name][index] = vector
            if cache is not None:
                cache.put(*keys[view.name], images[index][0], vector)
            stats.misses += 1
    stats.seconds = time.perf_counter() - start
    if not images:
        return {view.name: np.zeros((0, 0), dtype=np.float32) for view in views}, stats
    return {name: np.stack(vectors) for name, vectors in rows.items()}, stats  # type: ignore[arg-type]


def compute_view_batches(
    model: Extractor,
    data_config: Mapping[str, Any],
    images: Sequence[tuple[str, str]],
    missing: Missing,
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
    model: Extractor,
    data_config: Mapping[str, Any],
    images: Sequence[tuple[str, str]],
    missing: Missing,
    *,
    batch_size: int,
    device: str | torch.device,
    description: str,
    storage_options: StorageOptions | None,
) -> Iterator[Computed]:
    total = sum(len(v) for v in missing.values())
    with progress_bar(total=total, desc=description, unit="img", disable=total == 0) as bar:
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
