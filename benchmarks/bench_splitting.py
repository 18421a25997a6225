"""Splitting benchmark: near-duplicate grouping, the balanced split, and perceptual hashing.

Prints three tables:

1. grouping N perceptual hashes within ``d`` bits with the multi-index (pigeonhole) search used
   by the pipeline, against a blocked brute-force all-pairs comparison (same groups checked);
2. :func:`balanced_split` on synthetic tables of several sizes, with near-duplicate groups;
3. read + decode + pHash per image for the demo images and for larger JPEGs.

    .venv/bin/python benchmarks/bench_splitting.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse.csgraph import connected_components

from eyecatcher.images import decode_image
from eyecatcher.near_duplicates import (
    HASH_DECODE_MIN_SIDE,
    near_duplicate_components,
    perceptual_hash,
)
from eyecatcher.pipelines.splitting.balanced_split import SplitConfig, balanced_split

REPO = Path(__file__).resolve().parents[1]


def _planted_hashes(n: int, max_distance: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` hashes: 90% random, 10% near-copies of random ones (up to ``max_distance`` flips)."""
    base = rng.integers(0, 2**64, size=n - n // 10, dtype=np.uint64)
    sources = base[rng.integers(0, len(base), size=n // 10)]
    flips = np.zeros(len(sources), dtype=np.uint64)
    for bit_round in range(max_distance):
        bits = rng.integers(0, 64, size=len(sources)).astype(np.uint64)
        keep = rng.random(len(sources)) < 0.7 if bit_round else np.ones(len(sources), bool)
        flips ^= np.where(keep, np.uint64(1) << bits, np.uint64(0))
    return rng.permutation(np.concatenate([base, sources ^ flips]))


def _brute_force(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    rows, cols = [], []
    block = 2000
    for start in range(0, len(hashes), block):
        close = (
            np.bitwise_count(hashes[start : start + block, None] ^ hashes[None, :]) <= max_distance
        )
        r, c = np.nonzero(close)
        rows.append(r + start)
        cols.append(c)
    from scipy.sparse import coo_matrix

    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(len(hashes), len(hashes)))
    return connected_components(graph, directed=False)[1]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    # Two labelings are the same partition when the (a, b) pairs map one-to-one.
    pairs = pd.DataFrame({"a": a, "b": b}).drop_duplicates()
    return pairs["a"].is_unique and pairs["b"].is_unique


def _timed(fn, *args, repeat: int = 3):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_grouping(sizes: list[int], distances: list[int]) -> None:
    print("\n1. Near-duplicate grouping (best of 3)")
    print(f"{'images':>8} {'d':>3} {'index s':>9} {'brute s':>9} {'speed-up':>9} "
          f"{'groups>1':>9} {'same':>5}")  # fmt: skip
    rng = np.random.default_rng(0)
    for n in sizes:
        for d in distances:
            hashes = _planted_hashes(n, d, rng)
            t_index, labels = _timed(near_duplicate_components, hashes, d)
            multi = int((np.bincount(labels) > 1).sum())
            if n <= 20_000:
                t_brute, reference = _timed(_brute_force, hashes, d, repeat=2)
                same = "yes" if _same_partition(labels, reference) else "NO"
                brute, speed = f"{t_brute:9.3f}", f"{t_brute / t_index:8.0f}x"
            else:
                brute, speed, same = f"{'-':>9}", f"{'-':>9}", "-"
            print(f"{n:>8} {d:>3} {t_index:9.3f} {brute} {speed} {multi:>9} {same:>5}")


def bench_split(sizes: list[tuple[int, int]]) -> None:
    print("\n2. balanced_split (best of 3; 10% of images in near-duplicate groups of 2-5)")
    print(f"{'classes':>8} {'per class':>10} {'rows':>8} {'seconds':>8} {'sampled':>8}")
    rng = np.random.default_rng(1)
    for n_classes, per_class in sizes:
        n = n_classes * per_class
        sha = [f"{i:064x}" for i in rng.permutation(n)]
        classes = np.repeat([f"class_{i}" for i in range(n_classes)], per_class)
        groups = np.array(sha, dtype=object)
        grouped = rng.permutation(n)[: n // 10]
        for start in range(0, len(grouped), 4):
            members = grouped[start : start + int(rng.integers(2, 6))]
            groups[members] = sha[members[0]]
        table = pd.DataFrame({"sha256": sha, "class": classes, "group": groups})
        seconds, result = _timed(balanced_split, table, SplitConfig())
        print(f"{n_classes:>8} {per_class:>10} {n:>8} {seconds:8.3f} {len(result.manifest):>8}")


def _jpeg(size: tuple[int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    image = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def bench_hashing(count: int) -> None:
    print("\n3. Decode + pHash, one thread (median ms per image): full decode vs JPEG draft")
    print(f"{'images':<28} {'n':>5} {'full':>8} {'draft':>8} {'max bits apart':>15}")
    demo = sorted(p for p in (REPO / "data/01_raw/demo/images").rglob("*") if p.is_file())
    cases = {"demo (128x128, mixed)": [p.read_bytes() for p in demo[:count]]}
    for size in ((640, 480), (1920, 1080), (4000, 3000)):
        cases[f"JPEG {size[0]}x{size[1]}"] = [_jpeg(size, i) for i in range(max(3, count // 10))]
    for name, blobs in cases.items():
        full, draft, apart = [], [], []
        for data in blobs:
            start = time.perf_counter()
            a = perceptual_hash(decode_image(data))
            full.append(time.perf_counter() - start)
            start = time.perf_counter()
            b = perceptual_hash(decode_image(data, draft_min_side=HASH_DECODE_MIN_SIDE))
            draft.append(time.perf_counter() - start)
            apart.append(bin(int(a, 16) ^ int(b, 16)).count("1"))
        print(
            f"{name:<28} {len(blobs):>5} {1000 * float(np.median(full)):8.2f} "
            f"{1000 * float(np.median(draft)):8.2f} {max(apart):>15}"
        )


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a few seconds")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}")  # fmt: skip
    if args.quick:
        bench_grouping([2_000, 10_000], [4, 8])
        bench_split([(5, 1_000)])
        bench_hashing(20)
    else:
        bench_grouping([2_000, 10_000, 20_000, 50_000, 100_000], [4, 8, 12])
        bench_split([(5, 1_000), (10, 10_000), (50, 2_000)])
        bench_hashing(100)


if __name__ == "__main__":
    main()
