"""Batch scoring throughput: the local engine vs Ray (local mode) at 1 and 2 workers.

The demo images are copied ``--repeat`` times under unique names (a few thousand files), a
random-weight champion is packaged exactly as registration packages it (``log_served_model``)
and registered in a temporary sqlite registry; then, in one run and in turns:

* **local**: ``score_images`` with ``engine: local`` (one process, the model loaded once);
* **ray, N workers**: ``engine: ray`` inside one already-started local Ray, so Ray's own start
  is reported apart (it is paid once per ``kedro run``). Each run includes starting its actors,
  which load the model: that is part of what a user pays per run;
* **Ray overhead per batch**: the same batches through an actor that returns its input untouched
  (no reading, no model), less the same over one batch, divided by the extra batches;
* **projection**: images/s of one Ray worker x workers. It is arithmetic, not a measurement: it
  assumes storage and the registry keep up and each worker has its own cores.

Run::

    .venv/bin/python benchmarks/bench_ray_scoring.py                  # test_resnet, ~2,000 images
    .venv/bin/python benchmarks/bench_ray_scoring.py --architecture resnet50 --repeat 5
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from common import random_bundle, register_champion, use_sqlite_registry

from eyecatcher.distributed.actors import ActorPoolSettings, run_on_actor_pool, split_batches
from eyecatcher.pipelines.batch_scoring.nodes import list_images_to_score, score_images
from eyecatcher.registry.resolve import resolve_champion
from eyecatcher.serving_model import DecisionThresholds, ServingConfig

REPO = Path(__file__).resolve().parents[1]
DEMO_IMAGES = REPO / "data" / "01_raw" / "demo" / "images"
CLASSES = ["explicit_nudity", "safe", "suggestive"]
MODEL_NAME = "eyecatcher-bench-ray"


class PassThrough:
    """An actor that does no work: what remains of a run is Ray's own cost per batch."""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return batch


def ray_overhead_per_batch_ms(listed: pd.DataFrame, batch_size: int) -> float:
    """Ray's own cost per batch: a pass-through pool over every batch, minus one over one batch.

    The difference cancels what a run pays once (the actor start).
    """
    settings = ActorPoolSettings(workers=1, batch_size=batch_size)
    seconds = []
    for rows in (listed.iloc[:batch_size], listed):
        started = time.perf_counter()
        for _ in run_on_actor_pool(split_batches(rows, batch_size), PassThrough, {}, settings):
            pass
        seconds.append(time.perf_counter() - started)
    n_batches = -(-len(listed) // batch_size)
    return (seconds[1] - seconds[0]) / max(1, n_batches - 1) * 1000


def copy_demo(dest: Path, repeat: int) -> int:
    """``repeat`` copies of every demo image under ``dest``, with unique names."""
    count = 0
    for copy in range(repeat):
        for path in sorted(DEMO_IMAGES.rglob("*")):
            if path.is_file():
                target = dest / f"copy{copy:03d}" / path.relative_to(DEMO_IMAGES)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                count += 1
    return count


def register_bench_champion(root: Path, architecture: str, image_size: int) -> None:
    """A random-weight champion, packaged as registration packages it, in a sqlite registry."""
    use_sqlite_registry(root)
    config = ServingConfig(
        model_name=MODEL_NAME,
        model_version="1",
        candidate=architecture,
        precision="fp32",
        classes=CLASSES,
        safe_class="safe",
        thresholds=DecisionThresholds(review=0.5, block=0.8),
        operating_threshold=0.5,
        max_pixels=40_000_000,
        max_image_bytes=5_000_000,
        batch_size=64,
    )
    bundle = random_bundle(architecture, CLASSES, image_size)
    register_champion(bundle, config, experiment="bench-ray", artifact_root=root / "a")


def main() -> None:
    """Print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="test_resnet")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=10, help="copies of the demo images")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        n_images = copy_demo(root / "images", args.repeat)
        register_bench_champion(root, args.architecture, args.image_size)
        params = {
            "model_name": MODEL_NAME,
            "alias": "champion",
            "source": str(root / "images"),
            "recursive": True,
            "extensions": [".jpg", ".jpeg", ".png", ".webp"],
            "batch_size": args.batch_size,
            "storage_options": {},
        }
        champion = resolve_champion(params)
        listed = list_images_to_score(params)
        rows: list[dict] = []

        started = time.perf_counter()
        table, _ = score_images(listed, champion, {**params, "engine": "local"})
        rows.append({"engine": "local", "workers": 1, "seconds": time.perf_counter() - started})

        started = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=args.num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
        ray_start = time.perf_counter() - started
        try:
            for workers in (1, 2):
                ray_params = {**params, "engine": "ray", "ray": {"workers": workers}}
                started = time.perf_counter()
                on_ray, _ = score_images(listed, champion, ray_params)
                seconds = time.perf_counter() - started
                rows.append({"engine": "ray", "workers": workers, "seconds": seconds})
                if on_ray["class"].tolist() != table["class"].tolist():
                    raise RuntimeError("Ray and local verdicts differ: the timing is meaningless")
            per_batch_ms = ray_overhead_per_batch_ms(listed, args.batch_size)
        finally:
            ray.shutdown()

    frame = pd.DataFrame(rows)
    frame["images/s"] = n_images / frame["seconds"]
    frame["vs local"] = frame["images/s"] / frame.loc[0, "images/s"]
    print(
        f"\n{time.strftime('%Y-%m-%d')} · {platform.processor() or platform.machine()} · "
        f"{os.cpu_count()} cores · torch {torch.__version__} · ray {ray.__version__} · "
        f"{args.architecture} at {args.image_size} px, random weights · {n_images} images "
        f"({args.repeat}x the demo) · batch {args.batch_size}\n"
    )
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\nlocal Ray start (once per run): {ray_start:.1f} s")
    print(f"Ray overhead per batch (pass-through actor, 1 worker): {per_batch_ms:.1f} ms")
    one_worker = frame["workers"].eq(1) & frame["engine"].eq("ray")
    per_worker = float(frame.loc[one_worker, "images/s"].iloc[0])
    batch_ms = 1000 * args.batch_size / per_worker
    print(f"Time per batch of {args.batch_size}, 1 Ray worker, all included: {batch_ms:.0f} ms")
    print("\nProjection, not a measurement (images/s of one Ray worker here x workers):")
    for workers in (4, 16, 64):
        print(f"  {workers:>3} workers ≈ {per_worker * workers:,.0f} images/s")


if __name__ == "__main__":
    main()
