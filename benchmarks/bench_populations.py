"""Honest-population benchmark: what leaving out a version's training images costs at check time.

The retrain check marks every verdict of the champion as an exact copy (sha256 set lookup) or a
near-duplicate (pHash within the split's distance of any training pHash) of its training images.
Prints two tables:

1. :meth:`TrainingPopulation.near` for N query hashes against M training hashes (a blocked
   all-pairs XOR + popcount), with the number found near;
2. :func:`mark_seen` per image on the demo images (read + decode + pHash of each image not
   seen exactly), the part that grows with the batch.

    .venv/bin/python benchmarks/bench_populations.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from eyecatcher.images import sha256_bytes
from eyecatcher.monitoring.populations import TrainingPopulation, mark_seen

REPO = Path(__file__).resolve().parents[1]


def _cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line]
    return names[0] if names else platform.processor()


def _hex(values: np.ndarray) -> list[str]:
    return [f"{int(v):016x}" for v in values]


def near_table(quick: bool) -> None:
    rng = np.random.default_rng(0)
    sizes = (
        [(1_000, 1_000), (10_000, 10_000)]
        if quick
        else [(1_000, 1_000), (10_000, 10_000), (50_000, 20_000)]
    )
    print("| queries | training hashes | distance | near found | seconds | µs per query |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n_query, n_train in sizes:
        train = rng.integers(0, 2**64, size=n_train, dtype=np.uint64)
        query = rng.integers(0, 2**64, size=n_query, dtype=np.uint64)
        # 10% of the queries are training hashes with 3 bits flipped: near at distance 8.
        planted = n_query // 10
        flips = np.zeros(planted, dtype=np.uint64)
        for _ in range(3):
            flips ^= np.uint64(1) << rng.integers(0, 64, size=planted).astype(np.uint64)
        query[:planted] = train[:planted] ^ flips
        population = TrainingPopulation(
            frozenset(str(i) for i in range(n_train)), tuple(_hex(train)), 8, "bench"
        )
        series = pd.Series(_hex(query))
        start = time.perf_counter()
        found = int(population.near(series).sum())
        seconds = time.perf_counter() - start
        print(
            f"| {n_query:,} | {n_train:,} | 8 | {found:,} | {seconds:.2f} | "
            f"{seconds / n_query * 1e6:.0f} |"
        )


def mark_table(quick: bool) -> None:
    files = sorted(p for p in (REPO / "data/01_raw/demo/images").rglob("*") if p.is_file())
    files = files[:100] if quick else files
    if not files:
        print("(no demo images under data/01_raw/demo/images: run the demo generator first)")
        return
    frame = pd.DataFrame(
        {"sha256": [sha256_bytes(p.read_bytes()) for p in files], "path": [str(p) for p in files]}
    )
    population = TrainingPopulation(frozenset(), ("0" * 16,), 8, "bench")
    start = time.perf_counter()
    marked = mark_seen(frame, population, uri_column="path")
    seconds = time.perf_counter() - start
    unchecked = int(marked["phash_error"].notna().sum())
    print("| images | pHash computed | unreadable | seconds | ms per image |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {len(frame)} | {len(frame) - unchecked} | {unchecked} | {seconds:.2f} | "
        f"{seconds / len(frame) * 1e3:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    print(f"host: {_cpu()}; date {time.strftime('%Y-%m-%d')}\n")
    near_table(args.quick)
    print()
    mark_table(args.quick)


if __name__ == "__main__":
    main()
