"""Consecutive two-node Ray runs that lose the worker node at a random moment (issue #28).

Each run starts a real two-node cluster on 127.0.0.1 with Ray's own harness
(``ray.cluster_utils.Cluster``: a head and a worker node, one CPU each, their own raylets and
object stores), points ``RAY_ADDRESS`` at it, and scores the demo images with
``batch_scoring.engine: ray`` (two actors, one per node) through ``score_images``, the node the
pipeline runs. A timer kills the worker node without grace (its raylet and its worker
processes get SIGKILL) at a random moment of the job (below). A run passes when the job
finishes with every image exactly once and verdicts equal to the local engine's (decisions
equal, unsafe scores within 1e-5).

The moment is drawn from the scoring itself: the clock starts when the first batch is back (so
both actors had the chance to start: before that a kill only costs an actor that was still
loading the model) and the node dies ``uniform(0, --kill-within)`` seconds later.

Ray's health checks are left at their defaults unless ``--fast-health-checks`` (the tests'
setting): the time until the head declares the node dead is part of the time lost.

Run::

    cd benchmarks && ../.venv/bin/python bench_node_failure.py --runs 10 --batch-size 8
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_ray_scoring import MODEL_NAME, copy_demo, register_bench_champion

from eyecatcher.pipelines.batch_scoring import ray_engine
from eyecatcher.pipelines.batch_scoring.nodes import list_images_to_score, score_images
from eyecatcher.registry.resolve import resolve_champion

FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 4,
}


def one_run(params: dict, champion: dict, local: pd.DataFrame, kill_at: float, fast: bool) -> dict:
    """One cluster, one job, the worker node killed ``kill_at`` s in: what happened."""
    import ray
    from ray.cluster_utils import Cluster

    # Ray replaces 127.0.0.1 by the machine's outward address unless told this is a
    # one-machine cluster: here, and in the nodes it starts (they inherit the environment).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            **({"_system_config": FAST_HEALTH_CHECKS} if fast else {}),
        },
    )
    worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    killed_at: list[float] = []
    started = time.perf_counter()

    def kill() -> None:
        killed_at.append(time.perf_counter() - started)
        cluster.remove_node(worker, allow_graceful=False)

    timer = threading.Timer(kill_at, kill)
    original = ray_engine.run_on_actor_pool

    def starting_the_clock(*args, **kwargs):
        for number, result in enumerate(original(*args, **kwargs)):
            if number == 0:
                timer.start()
            yield result

    ray_engine.run_on_actor_pool = starting_the_clock
    row = {"kill_after_first_batch_s": kill_at}
    try:
        table, summary = score_images(list_images_to_score(params), champion, params)
        row["seconds"] = time.perf_counter() - started
        row["node_killed"] = bool(killed_at)
        row["once"] = table["path"].tolist() == local["path"].tolist()
        row["equal"] = row["once"] and (
            table["decision"].tolist() == local["decision"].tolist()
            and np.allclose(
                table["unsafe_score"].to_numpy(float),
                local["unsafe_score"].to_numpy(float),
                atol=1e-5,
            )
        )
        row.update(
            lost_workers=summary["n_lost_workers"],
            retried_batches=summary["n_retried_batches"],
            retried_images=summary["n_retried"],
            seconds_lost=summary["seconds_lost"],
            error="",
        )
    except Exception as exc:  # a failed run is a result here: count it and go on
        row.update(seconds=time.perf_counter() - started, once=False, equal=False)
        row["error"] = f"{type(exc).__name__}: {str(exc)[:80]}"
    finally:
        timer.cancel()
        ray_engine.run_on_actor_pool = original
        os.environ.pop("RAY_ADDRESS", None)
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    row["node_killed"] = bool(killed_at)
    return row


def main() -> None:
    """Print one row per run and the count of runs that passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="copies of the demo images")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--kill-within", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast-health-checks", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-node-failure-") as tmp:
        root = Path(tmp)
        n_images = copy_demo(root / "images", args.repeat)
        register_bench_champion(root, "test_resnet", 64)
        params = {
            "model_name": MODEL_NAME,
            "alias": "champion",
            "source": str(root / "images"),
            "recursive": True,
            "extensions": [".jpg", ".jpeg", ".png", ".webp"],
            "batch_size": args.batch_size,
            "storage_options": {},
            "engine": "ray",
            "ray": {"workers": 2, "max_restarts": 3, "replace_timeout_s": 120},
        }
        champion = resolve_champion(params)
        local, _ = score_images(
            list_images_to_score(params), champion, {**params, "engine": "local"}
        )
        rows = []
        for number in range(args.runs):
            kill_at = round(rng.uniform(0.0, args.kill_within), 2)
            rows.append(
                {
                    "run": number + 1,
                    **one_run(params, champion, local, kill_at, args.fast_health_checks),
                }
            )
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    passed = int((frame["equal"] & frame["error"].eq("")).sum())
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M')} UTC · {platform.processor() or platform.machine()} · "
        f"{os.cpu_count()} cores · {n_images} images, batches of {args.batch_size} · health "
        f"checks {'fast (tests)' if args.fast_health_checks else 'Ray defaults'}\n"
    )
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"\n{passed}/{len(frame)} runs: every image once, verdicts equal to the local engine")


if __name__ == "__main__":
    main()
