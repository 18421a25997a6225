"""Serving overhead: the champion through ``mlflow models serve`` vs its raw in-process forward.

For each candidate (real timm architectures, random weights: nothing is downloaded) and each
precision (``fp32``: the fp32 ONNX graph through ONNX Runtime once packaging checked it against
PyTorch, as registration serves an fp32 champion; ``fp32-torch``: PyTorch, what fp32 served
before; ``int8``: the int8 ONNX model), the served pyfunc is packaged exactly as registration
packages it (``log_served_model``), registered in a temporary sqlite registry, served by a real
``mlflow models serve --env-manager local`` on 127.0.0.1, and timed three ways on the same JPEGs:

* **raw**: in this process, decode + preprocess + forward of one image with the served model's
  own backend (``bytes_to_batch``, its bounded decode, → ``classifier_.predict_proba``): the
  floor any serving stack has to pay;
* **pyfunc**: ``PyFuncModel.predict`` on a one-row DataFrame (adds base64 and the pyfunc wrapper);
* **served**: one HTTP request per image (batch 1) to ``/invocations``, sequential, then from
  ``--clients`` concurrent clients;
* **served + explain**: the same request with ``"explain": true`` (a Grad-CAM heatmap of the
  fp32 PyTorch model in the answer), timed in turn with the others (``--no-explain`` skips it).

The verdicts: served p50 / raw p50 against the 1.1x target, and whether the original design's
SLO (mean < 100 ms, sequential, batch 1) holds on this machine. The three are timed in turns on
each image (never at the same time), so they share whatever background load the machine has.

Run::

    .venv/bin/python benchmarks/bench_serving.py            # resnet50 + ViT-B/16, fp32 + int8
    .venv/bin/python benchmarks/bench_serving.py --candidates resnet50 --precisions fp32
    .venv/bin/python benchmarks/bench_serving.py --precisions fp32-torch fp32   # the ORT gain
    .venv/bin/python benchmarks/bench_serving.py --quick    # test_resnet at 64 px: a smoke run
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests
import torch
from common import register_champion, use_sqlite_registry
from PIL import Image

from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.factory import create_classifier
from eyecatcher.preprocessing import bytes_to_batch, data_config_for
from eyecatcher.serving.client import dataframe_split_body
from eyecatcher.serving.process import ModelServer
from eyecatcher.serving_model import DecisionThresholds, ServingConfig
from eyecatcher.serving_model.contract import encode_image

CLASSES = ["explicit_nudity", "safe", "suggestive"]
#: The int8 method the quantization stage's rule (fastest int8 within the accuracy limit) picks
#: per architecture on this project's CPUs (docs/quantization.md): static QDQ for ResNet50,
#: dynamic for the transformer's MatMuls, and dynamic for MobileNetV3, whose depthwise
#: convolutions run slower in static QDQ than in fp32.
INT8_METHOD = {
    "resnet50": "static",
    "vit_base_patch16_224": "dynamic",
    "mobilenetv3_large_100": "dynamic",
    "test_resnet": "static",
}
TARGET_RATIO = 1.1
SLO_MEAN_MS = 100.0


def synthetic_jpegs(count: int, width: int, height: int) -> list[bytes]:
    """Photo-sized JPEGs (smooth gradients plus noise: realistic decode cost, harmless)."""
    rng = np.random.default_rng(0)
    images = []
    for index in range(count):
        x = np.linspace(0, 1, width)[None, :, None]
        y = np.linspace(0, 1, height)[:, None, None]
        phase = rng.uniform(0, 1, size=3)[None, None, :]
        base = 127 + 100 * np.sin(2 * np.pi * (x * (1 + index % 3) + y + phase))
        pixels = np.clip(base + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=88)
        images.append(buffer.getvalue())
    return images


def percentiles(values_ms: list[float]) -> dict[str, float]:
    """p50, p95 and mean of a list of milliseconds."""
    array = np.asarray(values_ms)
    return {
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "mean": float(array.mean()),
    }


def interleaved(
    functions: dict[str, Callable[[bytes], Any]],
    images: list[bytes],
    warmup_calls: int,
    warmup_s: float,
) -> dict[str, list[float]]:
    """Milliseconds per call of each function on each image, the functions taking turns.

    Each function is first warmed up for at least ``warmup_calls`` calls and ``warmup_s``
    seconds: on this machine class the first seconds of torch inference in a process run several
    times slower (allocator, oneDNN primitive caches), and a count of calls alone did not cover
    them.
    """
    for function in functions.values():
        started, calls = time.perf_counter(), 0
        while calls < warmup_calls or time.perf_counter() - started < warmup_s:
            function(images[calls % len(images)])
            calls += 1
    timings: dict[str, list[float]] = {name: [] for name in functions}
    for data in images:
        for name, function in functions.items():
            started = time.perf_counter()
            function(data)
            timings[name].append((time.perf_counter() - started) * 1000.0)
    return timings


def build_artefacts(
    architecture: str, precision: str, image_size: int, workdir: Path, calibration: list[bytes]
) -> tuple[ClassifierBundle, Path | None, Path | None]:
    """A random-weight bundle, the int8 ONNX file (int8) and the fp32 ONNX graph (fp32).

    Returns:
        The bundle, the ``onnx_path`` and the ``fp32_onnx_path`` of ``log_served_model``.
    """
    torch.manual_seed(0)
    model, source = create_classifier(architecture, len(CLASSES), "random")
    bundle = ClassifierBundle.from_model(
        model,
        architecture=architecture,
        classes=CLASSES,
        data_config=data_config_for(model, image_size),
        weights_source=source,
    )
    if precision == "fp32-torch":
        return bundle, None, None
    from eyecatcher.models.onnx_runtime import export_onnx, quantize_onnx

    fp32_path = export_onnx(model, bundle.data_config["input_size"], workdir / "fp32.onnx")
    if precision == "fp32":
        return bundle, None, fp32_path
    batch = bytes_to_batch(calibration, bundle.data_config)
    method = INT8_METHOD.get(architecture, "static")
    int8_path = quantize_onnx(
        fp32_path, workdir / "int8.onnx", method=method, calibration=batch.numpy()
    )
    return bundle, int8_path, None


def concurrent_requests(
    url: str, bodies: list[bytes], clients: int, timeout_s: float
) -> tuple[list[float], float, int]:
    """Every client sends every body once; returns latencies, wall seconds and errors."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def client(offset: int) -> None:
        nonlocal errors
        session = requests.Session()
        for i in range(len(bodies)):
            body = bodies[(i + offset) % len(bodies)]
            started = time.perf_counter()
            response = session.post(
                url + "/invocations",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=timeout_s,
            )
            elapsed = (time.perf_counter() - started) * 1000.0
            with lock:
                if response.status_code == 200:
                    latencies.append(elapsed)
                else:
                    errors += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, errors


def bench_one(
    architecture: str, precision: str, args: argparse.Namespace, images: list[bytes], root: Path
) -> dict[str, Any]:
    """Package, register, serve and time one candidate at one precision."""
    import mlflow

    workdir = root / f"{architecture}-{precision}"
    workdir.mkdir()
    bundle, onnx_path, fp32_onnx_path = build_artefacts(
        architecture, precision, args.image_size, workdir, images[: args.calibration]
    )
    name = f"bench-{architecture}-{precision}".replace("_", "-")
    config = ServingConfig(
        model_name=name,
        model_version="1",
        candidate=architecture,
        precision=precision.removesuffix("-torch"),
        classes=CLASSES,
        safe_class="safe",
        thresholds=DecisionThresholds(review=0.5, block=0.8),
        operating_threshold=0.5,
        batch_size=16,
    )
    register_champion(
        bundle,
        config,
        experiment="bench-serving",
        onnx_path=onnx_path,
        fp32_onnx_path=fp32_onnx_path,
    )
    uri = f"models:/{name}@champion"

    # Raw and pyfunc, in this process, with the registered model's own backend.
    pyfunc = mlflow.pyfunc.load_model(uri)
    served_model = pyfunc.unwrap_python_model()
    data_config = served_model.bundle_.data_config
    bodies = {
        data: json.dumps(dataframe_split_body([encode_image(data)])).encode() for data in images
    }
    explain_bodies = {
        data: json.dumps(dataframe_split_body([encode_image(data)], explain=[True])).encode()
        for data in images
    }
    session = requests.Session()

    def raw(data: bytes) -> None:
        batch = bytes_to_batch([data], data_config)
        served_model.classifier_.predict_proba(batch)

    def through_pyfunc(data: bytes) -> None:
        pyfunc.predict(pd.DataFrame({"image": [encode_image(data)]}))

    def served(data: bytes) -> None:
        response = session.post(
            server.url + "/invocations",
            data=bodies[data],
            headers={"Content-Type": "application/json"},
            timeout=args.timeout,
        )
        if response.status_code != 200 or response.json()["predictions"][0]["error"]:
            raise RuntimeError(f"served request failed: {response.status_code} {response.text}")

    def served_explain(data: bytes) -> None:
        response = session.post(
            server.url + "/invocations",
            data=explain_bodies[data],
            headers={"Content-Type": "application/json"},
            timeout=args.timeout,
        )
        row = response.json()["predictions"][0] if response.status_code == 200 else {}
        if not row.get("heatmap_png"):
            raise RuntimeError(f"explained request failed: {response.status_code} {response.text}")

    # The same intra-op thread count on both sides, or the ratio compares thread counts.
    server_env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    with ModelServer(
        uri, tracking_uri=mlflow.get_tracking_uri(), workers=args.workers, extra_env=server_env
    ) as server:
        startup_s = server.wait_until_ready(timeout_s=args.startup_timeout)
        # Interleaved, one call at a time: the idle server costs no CPU while the raw forward
        # runs, and drifting background load hits the three measurements alike.
        functions = {"raw": raw, "pyfunc": through_pyfunc, "served": served}
        if args.explain:
            functions["served_explain"] = served_explain
        timed = interleaved(functions, images, args.warmup, args.warmup_s)
        raw_ms, pyfunc_ms, served_ms = timed["raw"], timed["pyfunc"], timed["served"]
        concurrent_ms, wall_s, errors = concurrent_requests(
            server.url, list(bodies.values()), args.clients, args.timeout
        )
    raw_stats, pyfunc_stats = percentiles(raw_ms), percentiles(pyfunc_ms)
    served_stats, concurrent_stats = percentiles(served_ms), percentiles(concurrent_ms)
    explain_stats = percentiles(timed["served_explain"]) if args.explain else None
    return {
        "candidate": architecture,
        "precision": precision,
        "runtime": served_model.config_.runtime,
        "runtime_check": served_model.config_.runtime_check,
        "raw": raw_stats,
        "pyfunc": pyfunc_stats,
        "served": served_stats,
        "concurrent": concurrent_stats,
        "concurrent_rps": len(concurrent_ms) / wall_s,
        "concurrent_errors": errors,
        "served_explain": explain_stats,
        "explain_cost_ms_p50": explain_stats["p50"] - served_stats["p50"]
        if explain_stats
        else None,
        "ratio_p50": served_stats["p50"] / raw_stats["p50"],
        "startup_s": startup_s,
    }


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The results as a Markdown table (pasted into docs/benchmarks.md)."""
    print(
        f"\nServing overhead, batch 1, {args.images} JPEGs {args.width}x{args.height}, model input "
        f"{args.image_size}px, {args.workers} uvicorn worker(s), {args.clients} concurrent "
        f"clients, load average before the run {args.load_before}"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, Python {platform.python_version()}, torch {torch.__version__}"
    )
    header = (
        "| candidate | precision | raw p50 / p95 (ms) | pyfunc p50 (ms) | served p50 / p95 / mean "
        f"(ms) | served/raw p50 (target <= {TARGET_RATIO}x) | {args.clients} clients p50 / p95 "
        f"(ms), req/s | SLO mean < {SLO_MEAN_MS:.0f} ms | served + explain p50 (ms), cost |"
    )
    print(header)
    print("|" + "---|" * 9)
    for row in rows:
        raw, served, conc = row["raw"], row["served"], row["concurrent"]
        ratio_ok = "met" if row["ratio_p50"] <= TARGET_RATIO else "missed"
        slo = "holds" if served["mean"] < SLO_MEAN_MS else "does not hold"
        explained = (
            f"{row['served_explain']['p50']:.1f}, +{row['explain_cost_ms_p50']:.1f}"
            if row["served_explain"]
            else "not measured"
        )
        print(
            f"| {row['candidate']} | {row['precision']} ({row['runtime']}) "
            f"| {raw['p50']:.1f} / {raw['p95']:.1f} "
            f"| {row['pyfunc']['p50']:.1f} | {served['p50']:.1f} / {served['p95']:.1f} / "
            f"{served['mean']:.1f} | {row['ratio_p50']:.2f}x ({ratio_ok}) | {conc['p50']:.1f} / "
            f"{conc['p95']:.1f}, {row['concurrent_rps']:.1f} | {slo} ({served['mean']:.0f} ms) "
            f"| {explained} |"
        )
    overheads = [row["served"]["p50"] - row["raw"]["p50"] for row in rows]
    if overheads:
        print(
            f"\nserved - raw p50 (HTTP, JSON, base64, pyfunc wrapper): median "
            f"{statistics.median(overheads):.1f} ms; startup of `mlflow models serve`: "
            + ", ".join(f"{r['candidate']}/{r['precision']} {r['startup_s']:.0f} s" for r in rows)
        )


def main() -> None:
    """Parse arguments, run every candidate x precision, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", nargs="+", default=["resnet50", "vit_base_patch16_224"])
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "int8"],
        choices=["fp32", "fp32-torch", "int8"],
        help="fp32: ONNX Runtime's fp32 graph after the check against PyTorch (as registered); "
        "fp32-torch: PyTorch",
    )
    parser.add_argument("--images", type=int, default=20, help="timed images per measurement")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--image-size", type=int, default=224, help="model input side (px)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads here and in the server (OMP_NUM_THREADS); 0: torch's "
        "default (on a busy 2-vCPU VM the in-process 2-thread forward was erratic, see "
        "docs/serving.md)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="warm-up calls, at least")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="warm-up seconds, at least")
    parser.add_argument("--calibration", type=int, default=8, help="int8 calibration images")
    parser.add_argument("--timeout", type=float, default=120.0, help="per request (s)")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument(
        "--no-explain",
        dest="explain",
        action="store_false",
        help="skip the served + explain timing (a heatmap per request)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="test_resnet at 64 px, fp32 only (a smoke run)"
    )
    args = parser.parse_args()
    if args.quick:
        args.candidates, args.image_size = ["test_resnet"], 64
        args.precisions = ["fp32"] if args.precisions == ["fp32", "int8"] else args.precisions
        args.images = min(args.images, 10)
    if args.json:
        args.json = args.json.resolve()  # before the chdir below
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

    import mlflow

    args.load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    images = synthetic_jpegs(max(args.images, args.calibration), args.width, args.height)
    images = images[: args.images]
    rows = []
    with tempfile.TemporaryDirectory(prefix="eyecatcher-bench-serving-") as tmp:
        root = Path(tmp)
        # A throw-away registry: the benchmark never touches the project's mlruns/.
        os.chdir(root)
        use_sqlite_registry(root)
        experiment = mlflow.create_experiment(
            "bench-serving", artifact_location=(root / "artifacts").as_uri()
        )
        mlflow.set_experiment(experiment_id=experiment)
        for architecture in args.candidates:
            for precision in args.precisions:
                print(f"== {architecture} {precision} ...", flush=True)
                try:
                    rows.append(bench_one(architecture, precision, args, images, root))
                except Exception as exc:  # one failed combination must not lose the others
                    print(f"   {architecture} {precision} FAILED: {type(exc).__name__}: {exc}")
        print_table(rows, args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
