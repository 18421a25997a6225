"""Timing and scoring of one classifier: the measurements behind the fp32-vs-int8 decision.

Shared by the quantization pipeline and ``benchmarks/bench_quantization.py`` so that the
pipeline's table and the benchmark's table are measured the same way: warm-up calls excluded,
the same inputs, wall-clock ``perf_counter`` around the forward pass only (no decoding).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

#: Anything that maps a ``(N, C, H, W)`` float32 batch to ``(N, n_classes)`` scores.
Predictor = Callable[[np.ndarray], np.ndarray]


def compare_latency_ms(
    predictors: Mapping[str, Predictor], images: np.ndarray, *, iterations: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Batch-1 latency of several models, measured round-robin on the same images.

    On a shared machine the load changes from second to second; timing model A for a minute
    and then model B would compare two different machines. Here every iteration times each
    model once on the same image, so their ratio holds even when absolute numbers drift.

    Args:
        predictors: ``{name: forward function}``.
        images: ``(N, C, H, W)`` preprocessed images, N >= 1 (cycled through).
        iterations: Timed calls per model.
        warmup: Untimed calls per model first.

    Returns:
        ``{name: {"p50", "p95", "mean", "iterations"}}``, milliseconds.

    Raises:
        ValueError: If there are no images or no timed iterations.
    """
    if len(images) == 0 or iterations < 1:
        raise ValueError("Latency needs at least one image and one timed iteration.")
    for i in range(warmup):
        for predict in predictors.values():
            predict(images[i % len(images)][None])
    timings = {name: np.empty(iterations, dtype=np.float64) for name in predictors}
    for i in range(iterations):
        single = images[i % len(images)][None]
        for name, predict in predictors.items():
            start = time.perf_counter()
            predict(single)
            timings[name][i] = (time.perf_counter() - start) * 1000.0
    return {
        name: {
            "p50": float(np.percentile(t, 50)),
            "p95": float(np.percentile(t, 95)),
            "mean": float(t.mean()),
            "iterations": int(iterations),
        }
        for name, t in timings.items()
    }


def compare_throughput_ips(
    predictors: Mapping[str, Predictor],
    images: np.ndarray,
    *,
    batch_size: int,
    iterations: int,
    warmup: int,
) -> dict[str, dict[str, float]]:
    """Images per second of several models at a fixed batch size, measured round-robin.

    Args:
        predictors: ``{name: forward function}``.
        images: Preprocessed images; repeated to fill the batch when there are fewer.
        batch_size: Images per forward pass.
        iterations: Timed batches per model.
        warmup: Untimed batches per model first.

    Returns:
        ``{name: {"images_per_s", "batch_ms", "batch_size", "iterations"}}``.
    """
    if iterations < 1:
        raise ValueError("Throughput needs at least one timed iteration.")
    batch = tile_batch(images, batch_size)
    for _ in range(warmup):
        for predict in predictors.values():
            predict(batch)
    timings = {name: np.empty(iterations, dtype=np.float64) for name in predictors}
    for i in range(iterations):
        for name, predict in predictors.items():
            start = time.perf_counter()
            predict(batch)
            timings[name][i] = time.perf_counter() - start
    return {
        name: {
            "images_per_s": float(batch_size * iterations / t.sum()),
            "batch_ms": float(np.median(t) * 1000.0),
            "batch_size": int(batch_size),
            "iterations": int(iterations),
        }
        for name, t in timings.items()
    }


@dataclass
class ScoredSplits:
    """What :func:`score_round_robin` measured: every model's outputs, throughput, failures."""

    #: ``{model: {split: (N, n_classes) raw outputs}}`` of the models that scored every chunk.
    outputs: dict[str, dict[str, np.ndarray]]
    #: ``{model: {"images_per_s", "batch_size", "images"}}``, timed chunks only.
    throughput: dict[str, dict[str, float]]
    #: ``{model: exception}`` of the optional models that failed (and were dropped).
    failures: dict[str, Exception] = field(default_factory=dict)


def score_round_robin(
    predictors: Mapping[str, Predictor],
    splits: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    optional: Sequence[str] = (),
    warmup_chunks: int = 1,
) -> ScoredSplits:
    """Score every split with every model, one chunk at a time, taking turns, timing each call.

    The scoring the decision needs is also the throughput measurement: every model gets the
    same chunks of real images in the same order, round-robin (so a change of load hits every
    model alike, as in :func:`compare_latency_ms`), and no forward pass is spent on timing
    alone. Each model's first ``warmup_chunks`` chunks are scored but not timed (a session's
    first calls allocate); when there are no more chunks than that, every chunk is timed.

    Args:
        predictors: ``{name: forward function}``, scored in this order.
        splits: ``{split: (N, C, H, W) preprocessed images}``, N >= 1 each.
        batch_size: Images per forward pass (the last chunk of a split may be smaller).
        optional: Models whose failure drops them (recorded in ``failures``) instead of raising.
        warmup_chunks: Untimed chunks per model.

    Returns:
        The outputs, throughput and failures (see :class:`ScoredSplits`).

    Raises:
        ValueError: If a split is empty or ``batch_size`` < 1.
        Exception: Whatever a model not in ``optional`` raises.
    """
    if batch_size < 1 or any(len(images) == 0 for images in splits.values()):
        raise ValueError("Scoring needs a batch size >= 1 and at least one image per split.")
    chunks = [
        (split, start)
        for split, images in splits.items()
        for start in range(0, len(images), batch_size)
    ]
    untimed = warmup_chunks if len(chunks) > warmup_chunks else 0
    active = dict(predictors)
    pieces: dict[str, dict[str, list[np.ndarray]]] = {
        name: {split: [] for split in splits} for name in predictors
    }
    seconds = dict.fromkeys(predictors, 0.0)
    timed_images = dict.fromkeys(predictors, 0)
    failures: dict[str, Exception] = {}
    for index, (split, start) in enumerate(chunks):
        chunk = np.ascontiguousarray(splits[split][start : start + batch_size])
        for name, predict in list(active.items()):
            began = time.perf_counter()
            try:
                output = predict(chunk)
            except Exception as exc:  # an optional model that cannot run is a recorded failure
                if name not in optional:
                    raise
                failures[name] = exc
                del active[name]
                continue
            elapsed = time.perf_counter() - began
            pieces[name][split].append(np.asarray(output))
            if index >= untimed:
                seconds[name] += elapsed
                timed_images[name] += len(chunk)
    return ScoredSplits(
        outputs={
            name: {split: np.concatenate(parts) for split, parts in pieces[name].items()}
            for name in active
        },
        throughput={
            name: {
                "images_per_s": float(timed_images[name] / max(seconds[name], 1e-12)),
                "batch_size": int(batch_size),
                "images": int(timed_images[name]),
            }
            for name in active
        },
        failures=failures,
    )


def tile_batch(images: np.ndarray, batch_size: int) -> np.ndarray:
    """A batch of exactly ``batch_size`` images, repeating ``images`` if there are fewer."""
    if len(images) == 0:
        raise ValueError("Cannot build a batch from zero images.")
    repeats = -(-batch_size // len(images))
    return np.ascontiguousarray(np.concatenate([images] * repeats)[:batch_size])


def predict_in_batches(predict: Predictor, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Scores for all ``images``, computed ``batch_size`` at a time (bounded memory)."""
    outputs = [
        predict(np.ascontiguousarray(images[start : start + batch_size]))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs)


def classification_scores(
    y_true: Sequence[int], y_pred: Sequence[int], n_classes: int
) -> dict[str, float]:
    """Accuracy and macro-F1 (over every class of the model, present in the split or not).

    Args:
        y_true: True class indices.
        y_pred: Predicted class indices.
        n_classes: Number of classes of the model.

    Returns:
        ``accuracy`` and ``macro_f1``, both in [0, 1].
    """
    labels = list(range(n_classes))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
    }
