"""Labelling throughput: images/s at concurrency 1 vs N against a local Rekognition stand-in.

The endpoint (``eyecatcher.rekognition.local_endpoint``) runs on 127.0.0.1, speaks
Rekognition's JSON protocol and answers every request after a fixed simulated latency, so the
measurement isolates what the client side does: botocore signing and parsing, reading each
image, and appending + fsync-ing every answer to the response cache. Each worker count labels
the same images into a fresh cache, in the same process, one after the other; compare the
ratios, not the absolute numbers, across machines.

Run::

    .venv/bin/python benchmarks/bench_labelling.py               # 100 ms latency, 1..16 workers
    .venv/bin/python benchmarks/bench_labelling.py --latency-ms 50 --images 200 --workers 1,8,32
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
from pathlib import Path

from PIL import Image

from eyecatcher.images import sha256_bytes
from eyecatcher.rekognition.batch import ImageTask, RequestSettings, send_images
from eyecatcher.rekognition.cache import ResponseCache
from eyecatcher.rekognition.client import RekognitionEndpoint
from eyecatcher.rekognition.local_endpoint import LocalRekognition, ScriptedBehaviour

ANSWER = {
    "ModerationLabels": [
        {"Confidence": 91.0, "Name": "Swimwear or Underwear", "ParentName": "", "TaxonomyLevel": 1},
    ],
    "ModerationModelVersion": "7.0",
    "ContentTypes": [],
}


def make_images(folder: Path, n: int) -> list[ImageTask]:
    """Write ``n`` distinct 128x128 JPEGs and describe them as an image index would."""
    tasks = []
    for i in range(n):
        path = folder / f"img_{i:04d}.jpg"
        Image.new("RGB", (128, 128), (i % 256, (i * 3) % 256, (i * 7) % 256)).save(path, "JPEG")
        data = path.read_bytes()
        tasks.append(ImageTask(sha256_bytes(data), str(path), "JPEG", len(data)))
    return tasks


def measure(tasks: list[ImageTask], url: str, workers: int, cache_path: Path) -> float:
    """Label ``tasks`` into a fresh cache with ``workers`` threads; return the wall time (s)."""
    endpoint = RekognitionEndpoint(
        mode="live",
        endpoint_url=url,
        credentials={"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret"},
        max_attempts=3,
    )
    client = endpoint.client(max_pool_connections=workers)
    cache = ResponseCache(cache_path)
    report = send_images(
        tasks, client=client, cache=cache, settings=RequestSettings(), workers=workers
    )
    cache.close()
    answered = sum(outcome.status == "answered" for outcome in report.outcomes)
    if answered != len(tasks):
        raise RuntimeError(f"only {answered} of {len(tasks)} images were answered")
    return report.elapsed_s


def main() -> None:
    """Command-line entry point: print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--workers", default="1,2,4,8,16")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        tasks = make_images(Path(tmp), args.images)
        behaviour = ScriptedBehaviour(answer=lambda _: ANSWER, latency_s=args.latency_ms / 1000)
        with LocalRekognition(behaviour) as server:
            measure(tasks[:4], server.url, 2, Path(tmp) / "warmup.jsonl")  # load botocore models
            rows = []
            for workers in worker_counts:
                elapsed = measure(tasks, server.url, workers, Path(tmp) / f"cache_{workers}.jsonl")
                rows.append((workers, elapsed, len(tasks) / elapsed))

    base = rows[0][2]
    ideal = 1000.0 / args.latency_ms
    print(
        f"Labelling throughput: {args.images} images (128x128 JPEG), simulated latency "
        f"{args.latency_ms:g} ms, local endpoint on 127.0.0.1"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print()
    print("| workers | wall s | images/s | ideal images/s | speed-up vs 1 | efficiency |")
    print("|---:|---:|---:|---:|---:|---:|")
    for workers, elapsed, rate in rows:
        speedup = rate / base
        print(
            f"| {workers} | {elapsed:.2f} | {rate:.1f} | {ideal * workers:.1f} | "
            f"{speedup:.2f}x | {speedup / workers * rows[0][0]:.0%} |"
        )


if __name__ == "__main__":
    main()
