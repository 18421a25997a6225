"""Serving under hostile load: memory and CPU stay bounded, nothing answers 5xx, nothing restarts.

Two measurements against a real ``mlflow models serve --env-manager local`` on 127.0.0.1,
serving the served pyfunc exactly as registration packages it (random weights: nothing is
downloaded), with a real deployment's per-image limits (50 Mpx, 20 MB):

1. **Memory per request** (a server whose ``max_rows`` is raised to 5,000 so the request is
   decoded, not refused): peak RSS growth of the server's process group and wall time for one
   request of 5,000 rows of a 1x1 GIF, and for one 16-bit 7071x7071 constant PNG (~100 kB).
2. **Load** (the default ``max_rows``): ``--clients`` concurrent clients each send
   ``--requests`` requests cycling through a mix of good JPEGs and bad inputs (invalid base64,
   truncated, decompression bomb, 20,000,000x1 PNG, 10k-page TIFF, animated GIF, 16-bit PNG,
   too many rows, empty payload, not JSON). The table shows responses by status class (must be
   0 at >= 500), server restarts (the process group's members must not change), p50/p95 and
   the server's RSS before and after (growth must stay under 10%).

Run::

    .venv/bin/python benchmarks/bench_serving_load.py                  # 8 clients x 200 requests
    .venv/bin/python benchmarks/bench_serving_load.py --requests 20    # a quick look
    .venv/bin/python benchmarks/bench_serving_load.py --architecture resnet50 --image-size 224
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import requests
import torch
from common import peak_growth, random_bundle, register_champion, use_sqlite_registry
from PIL import Image

from eyecatcher.images import DEFAULT_MAX_PIXELS
from eyecatcher.serving.client import dataframe_split_body
from eyecatcher.serving.probes import bomb_png, sample_jpeg
from eyecatcher.serving.process import ModelServer
from eyecatcher.serving_model import DecisionThresholds, ServingConfig
from eyecatcher.serving_model.contract import DEFAULT_MAX_IMAGE_BYTES, encode_image

CLASSES = ["explicit_nudity", "safe", "suggestive"]
MB = 1024 * 1024
MAX_RSS_GROWTH = 0.10


# -- hostile inputs (the same builders as tests/image_factory.py, kept dependency-free) ---------


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def sixteen_bit_png(side: int) -> bytes:
    """A constant 16-bit grayscale PNG: ~100 kB at 7071 px, 50 Mpx of samples decoded."""
    return _png(Image.new("I;16", (side, side), 4242))


def many_page_tiff(pages: int, side: int = 8) -> bytes:
    """A TIFF of ``pages`` tiny pages sharing one strip (built by hand: Pillow takes minutes)."""
    import struct

    strip = bytes(side * side)
    out = bytearray(b"II*\x00" + struct.pack("<I", 8 + len(strip)) + strip)
    ifd_size = 2 + 8 * 12 + 4
    for page in range(pages):
        next_ifd = 0 if page == pages - 1 else 8 + len(strip) + (page + 1) * ifd_size
        entries = [(256, 3, side), (257, 3, side), (258, 3, 8), (259, 3, 1), (262, 3, 1),
                   (273, 4, 8), (278, 3, side), (279, 4, len(strip))]  # fmt: skip
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        out += struct.pack("<I", next_ifd)
    return bytes(out)


def animated_gif(frames: int = 12, size: int = 160) -> bytes:
    rng = np.random.default_rng(3)
    images = [
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), "RGB")
        for _ in range(frames)
    ]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=50)
    return buffer.getvalue()


def tiny_gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (1, 1), 0).save(buffer, "GIF")
    return buffer.getvalue()


def body(images: list[str]) -> bytes:
    return json.dumps(dataframe_split_body(images)).encode()


def request_mix(max_rows: int) -> list[tuple[str, bytes]]:
    """One cycle of the load: (kind, body); good requests are the majority, as in real traffic."""
    good = [(f"good_jpeg_{i}", body([encode_image(sample_jpeg(256, seed=i))])) for i in range(8)]
    jpeg = sample_jpeg(256, seed=99)
    bad = [
        ("invalid_base64", body(["%% not base64 %%"])),
        ("truncated_jpeg", body([encode_image(jpeg[: len(jpeg) // 2])])),
        ("bomb_header_png", body([encode_image(bomb_png())])),
        ("20M_x_1_png", body([encode_image(_png(Image.new("L", (20_000_000, 1), 9)))])),
        ("10k_page_tiff", body([encode_image(many_page_tiff(10_000))])),
        ("animated_gif", body([encode_image(animated_gif())])),
        ("16bit_7071px_png", body([encode_image(sixteen_bit_png(7071))])),
        ("too_many_rows", body([encode_image(tiny_gif())] * (max_rows + 1))),
        ("empty_payload", json.dumps({"dataframe_split": {"columns": ["image"], "data": []}})),
        ("not_json", b"this is not JSON {"),
    ]
    return good + [(kind, b if isinstance(b, bytes) else b.encode()) for kind, b in bad]


# -- the served model ---------------------------------------------------------------------------


def register(architecture: str, image_size: int, max_rows: int, name: str, root: Path) -> str:
    """Package and register the served model; return its ``models:/name@champion`` URI."""
    config = ServingConfig(
        model_name=name,
        model_version="1",
        candidate=architecture,
        precision="fp32",
        classes=CLASSES,
        safe_class="safe",
        thresholds=DecisionThresholds(review=0.5, block=0.8),
        operating_threshold=0.5,
        max_pixels=DEFAULT_MAX_PIXELS,
        max_image_bytes=DEFAULT_MAX_IMAGE_BYTES,
        max_rows=max_rows,
    )
    bundle = random_bundle(architecture, CLASSES, image_size)
    register_champion(bundle, config, experiment="bench-serving-load")
    return f"models:/{name}@champion"


def post(url: str, payload: bytes, timeout_s: float = 300) -> requests.Response:
    return requests.post(
        url + "/invocations",
        data=payload,
        headers={"Content-Type": "application/json"},
        timeout=timeout_s,
    )


def memory_per_request(model_uri: str, tracking_uri: str, log_dir: Path) -> list[dict[str, Any]]:
    """Peak RSS growth of one 5,000-row request and of one 16-bit 7071 px PNG."""
    cases = [
        ("5,000 rows of a 1x1 GIF", body([encode_image(tiny_gif())] * 5000)),
        ("16-bit 7071x7071 constant PNG", body([encode_image(sixteen_bit_png(7071))])),
        ("16-bit 7071x7071 PNG x4, one request", body([encode_image(sixteen_bit_png(7071))] * 4)),
    ]
    rows = []
    with ModelServer(model_uri, tracking_uri=tracking_uri, log_dir=log_dir) as server:
        server.wait_until_ready(300)
        post(server.url, body([encode_image(sample_jpeg())]))  # warm-up: lazy imports
        for label, payload in cases:
            response, growth, seconds = peak_growth(
                server.rss_bytes, lambda p=payload: post(server.url, p)
            )
            errors = (
                Counter(str(r.get("error")).split(":")[0] for r in response.json()["predictions"])
                if response.status_code == 200
                else {}
            )
            rows.append(
                {
                    "request": label,
                    "bytes": len(payload),
                    "status": response.status_code,
                    "peak_growth_mb": growth / MB,
                    "seconds": seconds,
                    "row_errors": dict(errors),
                }
            )
    return rows


def load(
    model_uri: str,
    tracking_uri: str,
    log_dir: Path,
    *,
    clients: int,
    per_client: int,
    max_rows: int,
) -> dict[str, Any]:
    """``clients`` threads x ``per_client`` requests of the mix; statuses, latency, RSS."""
    mix = request_mix(max_rows)
    statuses: Counter[str] = Counter()
    by_kind: dict[str, Counter[int]] = {kind: Counter() for kind, _ in mix}
    latencies: list[float] = []
    lock = threading.Lock()
    with ModelServer(model_uri, tracking_uri=tracking_uri, log_dir=log_dir) as server:
        server.wait_until_ready(300)
        for _, payload in mix:  # warm-up, one of each: lazy imports and first allocations
            post(server.url, payload)
        members_before = sorted(_members(server))
        rss_before = server.rss_bytes()

        def client(offset: int) -> None:
            session = requests.Session()
            for i in range(per_client):
                kind, payload = mix[(i + offset) % len(mix)]
                started = time.perf_counter()
                try:
                    response = session.post(
                        server.url + "/invocations",
                        data=payload,
                        headers={"Content-Type": "application/json"},
                        timeout=120,
                    )
                    status = response.status_code
                except requests.RequestException:
                    status = 0
                elapsed = (time.perf_counter() - started) * 1000.0
                with lock:
                    statuses[_status_class(status)] += 1
                    by_kind[kind][status] += 1
                    latencies.append(elapsed)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        rss_after = server.rss_bytes()
        members_after = sorted(_members(server))
        alive = server.is_running() and server.ping()
    return {
        "requests": clients * per_client,
        "clients": clients,
        "wall_s": wall,
        "statuses": dict(statuses),
        "by_kind": {kind: dict(counts) for kind, counts in by_kind.items()},
        "p50_ms": statistics.median(latencies),
        "p95_ms": float(np.percentile(latencies, 95)),
        "rss_before_mb": rss_before / MB,
        "rss_after_mb": rss_after / MB,
        "restarts": 0 if members_before == members_after and alive else 1,
        "alive_after": alive,
    }


def _members(server: ModelServer) -> list[int]:
    import psutil

    root = psutil.Process(server.pid)
    return [root.pid, *(child.pid for child in root.children(recursive=True))]


def _status_class(status: int) -> str:
    if status == 0:
        return "no answer"
    return f"{status // 100}xx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="test_resnet")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="requests per client")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-serving-load-") as tmp:
        root = Path(tmp)
        tracking_uri = use_sqlite_registry(root)
        os.chdir(root)  # artefacts under the temporary folder, never the repository's mlruns
        print(
            f"# {time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
            f"{args.architecture} at {args.image_size} px, random weights, fp32, 1 worker"
        )
        if not args.skip_memory:
            uri = register(args.architecture, args.image_size, 5000, "bench-memory", root)
            print("\n## Memory per request (max_rows raised to 5,000 so the rows are decoded)")
            print("| request | body | status | peak RSS growth | time | row errors |")
            print("|---|---:|---:|---:|---:|---|")
            for row in memory_per_request(uri, tracking_uri, root / "log-memory"):
                print(
                    f"| {row['request']} | {row['bytes'] / 1024:.0f} kB | {row['status']} | "
                    f"+{row['peak_growth_mb']:.0f} MB | {row['seconds']:.1f} s | "
                    f"{row['row_errors'] or '-'} |"
                )
        uri = register(args.architecture, args.image_size, 64, "bench-load", root)
        result = load(
            uri,
            tracking_uri,
            root / "log-load",
            clients=args.clients,
            per_client=args.requests,
            max_rows=64,
        )
        growth = result["rss_after_mb"] / result["rss_before_mb"] - 1.0
        print(
            f"\n## Load: {result['clients']} clients x {args.requests} requests of the mix "
            "(default max_rows 64)"
        )
        print("| requests | 2xx | 4xx | >= 500 / no answer | restarts | p50 | p95 | "
              "RSS before | RSS after | growth | verdict |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        statuses = result["statuses"]
        failures = statuses.get("5xx", 0) + statuses.get("no answer", 0)
        ok = failures == 0 and result["restarts"] == 0 and growth < MAX_RSS_GROWTH
        print(
            f"| {result['requests']} | {statuses.get('2xx', 0)} | {statuses.get('4xx', 0)} | "
            f"{failures} | {result['restarts']} | {result['p50_ms']:.0f} ms | "
            f"{result['p95_ms']:.0f} ms | {result['rss_before_mb']:.0f} MB | "
            f"{result['rss_after_mb']:.0f} MB | {growth * 100:+.1f}% | "
            f"{'PASS' if ok else 'FAIL'} |"
        )
        print("\n| request kind | statuses |")
        print("|---|---|")
        for kind, counts in result["by_kind"].items():
            print(f"| {kind} | {counts} |")
        if not ok:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
