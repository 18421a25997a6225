"""Where the served-vs-raw overhead goes: one request's spans, from HTTP body to JSON answer.

The champion is packaged as registration packages it (``log_served_model``; int8 ONNX by
default, as the ResNet50 int8 champion is served), loaded in this process with
``mlflow.pyfunc.load_model``, and each image is sent as a batch-1 request through:

* **raw**: decode + preprocess + forward with the served model's own backend (the floor);
* **model**: the project's ``ModerationModel.predict`` on the request DataFrame;
* **pyfunc**: ``PyFuncModel.predict`` (adds MLflow's schema enforcement and wrapper);
* **invocations**: MLflow's scoring-server function on the JSON body (adds JSON parsing, the
  DataFrame built from it, and the JSON answer): everything the server runs but HTTP;
* **served**: a real ``mlflow models serve`` over HTTP (adds uvicorn, FastAPI, the socket).

The spans take turns on each image. Then ``invocations`` runs under cProfile and the
cumulative time per request of the functions that make up the gap is printed, split into what
the project owns and what is MLflow's.

Run::

    .venv/bin/python benchmarks/bench_serving_profile.py                 # resnet50 int8
    .venv/bin/python benchmarks/bench_serving_profile.py --quick         # test_resnet, 64 px
    .venv/bin/python benchmarks/bench_serving_profile.py --json out.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import requests
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import (
    CLASSES,
    build_artefacts,
    interleaved,
    percentiles,
    synthetic_jpegs,
)
from common import register_champion, use_sqlite_registry

from eyecatcher.preprocessing import bytes_to_batch
from eyecatcher.serving.client import dataframe_split_body
from eyecatcher.serving.process import ModelServer
from eyecatcher.serving_model import DecisionThresholds, ServingConfig
from eyecatcher.serving_model.contract import encode_image

#: Functions whose cumulative time is reported: (label, owner, file suffix, function name).
SPANS = (
    (
        "JSON body -> DataFrame (parse, schema casts)",
        "mlflow",
        "scoring_server/__init__.py",
        "_parse_json_data",
    ),
    ("schema enforcement", "mlflow", "models/utils.py", "_enforce_schema"),
    ("ModerationModel.predict (all of it)", "project", "serving_model/model.py", "predict"),
    ("  request DataFrame checks", "project", "serving_model/contract.py", "request_frame"),
    ("  base64 -> bytes", "project", "serving_model/contract.py", "decode_base64_image"),
    ("  bounded image decode", "project", "eyecatcher/images.py", "decode_for_model"),
    ("  preprocessing transform", "project", "torchvision/transforms/transforms.py", "__call__"),
    ("  forward pass", "project", "models/onnx_runtime.py", "predict_proba"),
    ("  forward pass (torch)", "project", "serving_model/backends.py", "predict_proba"),
    ("  response DataFrame", "project", "serving_model/model.py", "_response"),
    (
        "  malloc_trim after the request",
        "project",
        "serving_model/model.py",
        "_release_freed_memory",
    ),
    ("DataFrame -> JSON answer", "mlflow", "scoring_server/__init__.py", "predictions_to_json"),
)


def cumulative_ms(stats: pstats.Stats, calls: int) -> list[dict[str, Any]]:
    """Cumulative milliseconds per request of each function in :data:`SPANS`."""
    found: list[dict[str, Any]] = []
    entries = stats.stats  # type: ignore[attr-defined]
    for label, owner, suffix, name in SPANS:
        total = 0.0
        for (filename, _, function), (_, _, _, cumulative, _) in entries.items():
            if function == name and filename.replace("\\", "/").endswith(suffix):
                total += cumulative
        if total:
            found.append({"span": label, "owner": owner, "ms": total * 1000.0 / calls})
    return found


def profile_invocations(
    invoke: Any, bodies: list[bytes], repeats: int
) -> tuple[list[dict[str, Any]], str]:
    """Run ``invoke`` on every body ``repeats`` times under cProfile; spans and the top list."""
    profiler = cProfile.Profile()
    calls = 0
    profiler.enable()
    for _ in range(repeats):
        for body in bodies:
            invoke(body)
            calls += 1
    profiler.disable()
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer)
    stats.sort_stats("cumulative").print_stats(25)
    return cumulative_ms(stats, calls), buffer.getvalue()


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Package, load, time the spans, profile; the result as one dict."""
    import mlflow
    from mlflow.pyfunc.scoring_server import invocations

    images = synthetic_jpegs(max(args.images, args.calibration), args.width, args.height)
    bundle, onnx_path, fp32_onnx_path = build_artefacts(
        args.candidate, args.precision, args.image_size, root, images[: args.calibration]
    )
    images = images[: args.images]
    name = "profile-served"
    config = ServingConfig(
        model_name=name,
        model_version="1",
        candidate=args.candidate,
        precision=args.precision.removesuffix("-torch"),
        classes=CLASSES,
        safe_class="safe",
        thresholds=DecisionThresholds(review=0.5, block=0.8),
        operating_threshold=0.5,
    )
    register_champion(
        bundle,
        config,
        experiment="bench-profile",
        onnx_path=onnx_path,
        fp32_onnx_path=fp32_onnx_path,
    )
    uri = f"models:/{name}@champion"
    pyfunc = mlflow.pyfunc.load_model(uri)
    model = pyfunc.unwrap_python_model()
    schema = pyfunc.metadata.get_input_schema()
    data_config = model.bundle_.data_config
    bodies = {
        data: json.dumps(dataframe_split_body([encode_image(data)])).encode() for data in images
    }
    session = requests.Session()

    def raw(data: bytes) -> None:
        model.classifier_.predict_proba(bytes_to_batch([data], data_config))

    def through_model(data: bytes) -> None:
        model.predict(None, pd.DataFrame({"image": [encode_image(data)]}))

    def through_pyfunc(data: bytes) -> None:
        pyfunc.predict(pd.DataFrame({"image": [encode_image(data)]}))

    def invoke(body: bytes) -> None:
        answer = invocations(body, "application/json", pyfunc, schema)
        if answer.status != 200:
            raise RuntimeError(f"invocations answered {answer.status}: {answer.response[:300]}")

    def through_invocations(data: bytes) -> None:
        invoke(bodies[data])

    def served(data: bytes) -> None:
        response = session.post(
            server.url + "/invocations",
            data=bodies[data],
            headers={"Content-Type": "application/json"},
            timeout=120,
        )
        if response.status_code != 200:
            raise RuntimeError(f"served request failed: {response.status_code}")

    server_env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    with ModelServer(uri, tracking_uri=mlflow.get_tracking_uri(), extra_env=server_env) as server:
        server.wait_until_ready(timeout_s=300)
        timed = interleaved(
            {
                "raw": raw,
                "model": through_model,
                "pyfunc": through_pyfunc,
                "invocations": through_invocations,
                "served": served,
            },
            images,
            args.warmup,
            args.warmup_s,
        )
    summary = {name: percentiles(values) for name, values in timed.items()}
    spans, top = profile_invocations(invoke, list(bodies.values()), args.profile_repeats)
    return {
        "candidate": args.candidate,
        "precision": args.precision,
        "runtime": model.config_.runtime,
        "images": args.images,
        "image_size": args.image_size,
        "jpeg": f"{args.width}x{args.height}",
        "threads": args.threads,
        "load_before": args.load_before,
        "timings_ms": summary,
        "ratio_served_raw_p50": summary["served"]["p50"] / summary["raw"]["p50"],
        "profile_spans_ms_per_request": spans,
        "profile_top": top,
    }


def print_report(result: dict[str, Any]) -> None:
    """The spans and the profile as Markdown tables (pasted into docs/benchmarks.md)."""
    t = result["timings_ms"]
    print(
        f"\n{result['candidate']} {result['precision']} ({result['runtime']}), batch 1, "
        f"{result['images']} JPEGs {result['jpeg']}, input {result['image_size']} px, "
        f"{result['threads']} thread(s), load before {result['load_before']}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    print("| span | p50 ms | p95 ms | added over the previous p50 (ms) |")
    print("|---|---|---|---|")
    previous = None
    for name in ("raw", "model", "pyfunc", "invocations", "served"):
        added = "" if previous is None else f"{t[name]['p50'] - t[previous]['p50']:+.2f}"
        print(f"| {name} | {t[name]['p50']:.2f} | {t[name]['p95']:.2f} | {added} |")
        previous = name
    print(f"\nserved / raw p50: {result['ratio_served_raw_p50']:.3f} (target <= 1.10)")
    print("\n| under cProfile, per request | owner | ms |")
    print("|---|---|---|")
    for span in result["profile_spans_ms_per_request"]:
        print(f"| {span['span']} | {span['owner']} | {span['ms']:.2f} |")
    print("\n(cProfile adds its own overhead per Python call: compare spans, not totals)")


def main() -> None:
    """Parse arguments, run, print, and write the JSON if asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate", default="resnet50")
    parser.add_argument("--precision", default="int8", choices=["fp32", "fp32-torch", "int8"])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1, help="torch/ORT threads, both sides")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--calibration", type=int, default=8)
    parser.add_argument("--profile-repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="test_resnet at 64 px")
    args = parser.parse_args()
    if args.quick:
        args.candidate, args.image_size, args.images = "test_resnet", 64, min(args.images, 10)
        args.warmup_s = min(args.warmup_s, 2.0)
    if args.json:
        args.json = args.json.resolve()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    args.load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())

    import mlflow

    with tempfile.TemporaryDirectory(prefix="eyecatcher-bench-profile-") as tmp:
        root = Path(tmp)
        os.chdir(root)
        use_sqlite_registry(root)
        experiment = mlflow.create_experiment(
            "bench-profile", artifact_location=(root / "artifacts").as_uri()
        )
        mlflow.set_experiment(experiment_id=experiment)
        result = run(args, root)
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
