"""Benchmark: what storing one paid Rekognition answer costs, local JSONL vs S3 segments.

Each answer is stored durably before the next call (``ResponseCache.append``): locally one
``write`` + ``fsync``; on S3 (:mod:`eyecatcher.rekognition.segments`) one ``PUT`` that re-uploads
the writing session's current segment. The S3 side runs against moto's S3 server on 127.0.0.1,
so it measures the client-side and protocol cost of the layout (bytes re-uploaded per answer,
requests), not a real S3 round trip: add a region's ``PUT`` latency (tens of ms) per answer for
that. Records are the demo's recorded answers, repeated. Every row runs in one process, one
after the other, so compare the ratios. Run from the repository root::

    .venv/bin/python benchmarks/bench_answer_cache.py                 # 400 answers
    .venv/bin/python benchmarks/bench_answer_cache.py --answers 1000 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEMO_ANSWERS = ROOT / "data" / "01_raw" / "demo" / "rekognition_responses.jsonl"


def _records(count: int) -> list[dict[str, Any]]:
    demo = [json.loads(line) for line in DEMO_ANSWERS.open()]
    records = []
    for index in range(count):
        record = dict(demo[index % len(demo)])
        record["sha256"] = f"{index:064x}"  # distinct images
        records.append(record)
    return records


def _time_appends(cache: Any, records: list[dict[str, Any]]) -> list[float]:
    timings = []
    with cache.exclusive():
        for record in records:
            start = time.perf_counter()
            cache.append(record)
            timings.append((time.perf_counter() - start) * 1000)
    return timings


def _row(name: str, timings: list[float], uploaded: int | None) -> dict[str, Any]:
    ordered = sorted(timings)
    return {
        "store": name,
        "answers": len(timings),
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[int(0.95 * (len(ordered) - 1))],
        "total_s": sum(timings) / 1000,
        "kb_uploaded_per_answer": None if uploaded is None else uploaded / len(timings) / 1024,
    }


def main() -> None:
    """Measure and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=400)
    parser.add_argument("--segments", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    import boto3
    import s3fs
    from moto.server import ThreadedMotoServer

    from eyecatcher import storage
    from eyecatcher.rekognition.cache import ResponseCache
    from eyecatcher.rekognition.segments import SegmentedResponseCache

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request lines
    records = _records(args.answers)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        timings = _time_appends(ResponseCache(Path(folder) / "responses.jsonl"), records)
        rows.append(_row("local JSONL (fsync)", timings, None))

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
        s3fs.S3FileSystem.clear_instance_cache()
        boto3.client("s3").create_bucket(Bucket="bench")
        real_write = storage.write_atomic
        for size in args.segments:
            uploaded = 0

            def counting(uri: str, data: bytes, options: Any = None) -> None:
                nonlocal uploaded
                uploaded += len(data)
                real_write(uri, data, options)

            storage.write_atomic = counting  # count the bytes each PUT carries
            try:
                cache = SegmentedResponseCache(
                    f"s3://bench/segments-{size}/responses.jsonl", segment_records=size
                )
                timings = _time_appends(cache, records)
            finally:
                storage.write_atomic = real_write
            rows.append(_row(f"S3 segments of {size} (moto, loopback)", timings, uploaded))
    finally:
        server.stop()

    conditions = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps({"conditions": conditions, "rows": rows}, indent=2))
        return
    print(f"Storing one answer ({conditions['date']}, {conditions['machine']})")
    print("| store | answers | p50 ms | p95 ms | total s | KB uploaded per answer |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        kb = row["kb_uploaded_per_answer"]
        print(
            f"| {row['store']} | {row['answers']} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | "
            f"{row['total_s']:.2f} | {'-' if kb is None else f'{kb:.1f}'} |"
        )


if __name__ == "__main__":
    main()
