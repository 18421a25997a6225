"""Cold-cache backbone features computed by Ray actors (``compute_features(engine="ray")``).

Workers only compute: each actor holds a copy of the frozen model and runs
:func:`eyecatcher.features.compute_view_batches`, the local engine's own unit of work, on one
batch of images at a time (the same batches the local engine forms). The vectors come back to
the caller as each batch finishes, and the caller writes the cache entries under the keys it
computed, so a cache filled through Ray is the cache a laptop run fills, and the other way round.
Because entries are written batch by batch, an extraction that is interrupted (a lost node past
its retries, a killed driver) resumes where it stopped: the next call finds those entries in the
cache and computes only the rest.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from eyecatcher.distributed.actors import (
    ActorPoolSettings,
    PoolReport,
    run_on_actor_pool,
    split_batches,
)
from eyecatcher.distributed.session import check_pool_fits, ray_session
from eyecatcher.features.compute import compute_view_batches
from eyecatcher.features.runtimes.bf16 import Bf16Features
from eyecatcher.features.runtimes.onnx_graph import FeatureGraph
from eyecatcher.features.views import ViewSpec

logger = logging.getLogger(__name__)


class FeatureWorker:
    """A Ray actor holding one copy of the frozen backbone.

    Args:
        model: The frozen timm model (moved to CPU, eval mode), its checked ONNX feature
            graph (``features.runtime: onnxruntime``) or its bfloat16 function
            (``torch_bf16``; on the workers' CPUs).
        data_config: The preprocessing config of the cache key.
        views: Every view a row may name, by name.
        storage_options: fsspec options of the image source.
    """

    def __init__(
        self,
        model: torch.nn.Module | FeatureGraph | Bf16Features,
        data_config: Mapping[str, Any],
        views: Mapping[str, ViewSpec],
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(model, torch.nn.Module):
            model = model.cpu().eval()
        elif isinstance(model, Bf16Features):
            model = model.to_cpu()
        self.model = model
        self.data_config = dict(data_config)
        self.views = dict(views)
        self.storage_options = dict(storage_options or {})

    @torch.no_grad()
    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Rows ``index, sha256, uri, views`` in; one row per (image, view) out, vector as bytes."""
        images = list(zip(batch["sha256"], batch["uri"], strict=True))
        missing = {
            local: [self.views[name] for name in names.split(",")]
            for local, names in enumerate(batch["views"])
        }
        out: list[dict[str, Any]] = []
        for triples, _ in compute_view_batches(
            self.model,
            self.data_config,
            images,
            missing,
            batch_size=len(images),
            storage_options=self.storage_options,
        ):
            for local, view, vector in triples:
                out.append(
                    {
                        "index": int(batch["index"].iloc[local]),
                        "view": view.name,
                        # Raw float32 bytes: the exact values, whatever Arrow would make of arrays.
                        "vector": np.asarray(vector, dtype=np.float32).tobytes(),
                    }
                )
        return pd.DataFrame(out, columns=["index", "view", "vector"])


def compute_on_ray(
    model: torch.nn.Module | FeatureGraph | Bf16Features,
    data_config: Mapping[str, Any],
    images: Sequence[tuple[str, str]],
    missing: Mapping[int, Sequence[ViewSpec]],
    *,
    batch_size: int,
    workers: int,
    storage_options: Mapping[str, Any] | None = None,
    report: PoolReport | None = None,
) -> Iterator[tuple[int, ViewSpec, np.ndarray]]:
    """The vectors of the (image, view) pairs in ``missing``, computed by Ray actors.

    Ray is used as :func:`eyecatcher.distributed.session.ray_session` says (``RAY_ADDRESS``,
    or a local Ray for the call). The image URIs must be readable from the workers. A batch
    whose actor or node dies is computed again elsewhere (this process keeps the books).

    Args:
        model: The frozen timm model, or its checked ONNX feature graph (shipped to the
            workers as its bytes; each session gets the actor's CPUs as threads).
        data_config: The preprocessing config of the cache key.
        images: ``(sha256, uri)`` pairs.
        missing: For each image index to compute, the views it needs.
        batch_size: Images per forward pass (and per Ray task).
        workers: Actors in the pool.
        storage_options: fsspec options of the image source, passed to every worker.
        report: Filled in with the batches retried after a worker or node died.

    Yields:
        ``(index, view, float32 vector)`` for every pair in ``missing``, each exactly once,
        batch by batch as they finish (so the caller can store them at once).

    Raises:
        RuntimeError: If a pair comes back twice or not at all, or a batch was lost more
            often than the pool retries it.
    """
    views = {view.name: view for wanted in missing.values() for view in wanted}
    frame = _work_frame(images, missing)
    settings = ActorPoolSettings(workers=workers, batch_size=max(1, batch_size))
    if isinstance(model, FeatureGraph):
        # ONNX Runtime would otherwise start one thread per core of the node in every actor.
        model = dataclasses.replace(model, threads=max(1, int(settings.cpus_per_worker)))
    expected = {(i, view.name) for i, wanted in missing.items() for view in wanted}
    got: set[tuple[int, str]] = set()
    report = report if report is not None else PoolReport()
    with ray_session() as where:
        logger.info(
            "Features on Ray (%s): %d images, %d workers, batches of %d",
            where,
            len(frame),
            settings.workers,
            settings.batch_size,
        )
        check_pool_fits(settings.workers, settings.cpus_per_worker, where)
        for _, table in run_on_actor_pool(
            split_batches(frame, settings.batch_size),
            FeatureWorker,
            {
                "model": model,
                "data_config": dict(data_config),
                "views": views,
                "storage_options": dict(storage_options or {}),
            },
            settings,
            report,
        ):
            yield from _checked_vectors(table, views, expected, got)
    if report.retried_batches:
        logger.warning(
            "Features on Ray: %d batches (%d images) recomputed after a worker or node died",
            report.retried_batches,
            report.retried_rows,
        )
    if got != expected:
        raise RuntimeError(
            f"Ray returned {len(got)} feature vectors for {len(expected)} (image, view) pairs"
        )


def _work_frame(
    images: Sequence[tuple[str, str]], missing: Mapping[int, Sequence[ViewSpec]]
) -> pd.DataFrame:
    """One row per image to compute (index order): its index, sha256, URI and view names."""
    todo = sorted(missing)
    return pd.DataFrame(
        {
            "index": todo,
            "sha256": [images[i][0] for i in todo],
            "uri": [images[i][1] for i in todo],
            "views": [",".join(view.name for view in missing[i]) for i in todo],
        }
    )


def _checked_vectors(
    table: pd.DataFrame,
    views: Mapping[str, ViewSpec],
    expected: set[tuple[int, str]],
    got: set[tuple[int, str]],
) -> Iterator[tuple[int, ViewSpec, np.ndarray]]:
    """The vectors of one returned batch, each pair added to ``got`` as it is yielded.

    Raises:
        RuntimeError: If a pair was already returned, or was never asked for.
    """
    for index, name, vector in zip(table["index"], table["view"], table["vector"], strict=True):
        pair = (int(index), str(name))
        if pair in got or pair not in expected:
            raise RuntimeError(f"Ray returned the feature vector {pair} twice or unasked")
        got.add(pair)
        yield int(index), views[name], np.frombuffer(vector, dtype=np.float32).copy()
