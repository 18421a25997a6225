"""Batch scoring throughput against raw ONNX Runtime batch throughput of the same model.

The demo images are copied ``--repeat`` times under unique names; a random-weight champion is
exported and quantized with the pipeline's own functions (``export_onnx``, ``quantize_onnx``),
packaged as registration packages it (``log_served_model``) and registered in a temporary
sqlite registry. Then, in one process and taking turns for ``--rounds`` rounds, on the same
files and in batches of ``--batch-size``:

* **raw ORT**: an ONNX Runtime session of the served model's graph (same threads, idle
  threads spinning: best for back-to-back passes) on tensors decoded and preprocessed
  beforehand (inference only: the ceiling);
* **plain loop (served session)**: read, decode and preprocess each batch (the served model's
  functions), then the served model's own classifier, one after the other in a plain loop;
* **plain loop, ORT spinning / not spinning**: the same with a session whose idle threads
  busy-wait between calls (ONNX Runtime's default; the served model's before 2026-12-03) or
  not (the served model's since);
* **batch scoring**: ``score_images`` with ``engine: local``, end to end (listing excluded;
  loading the model from the registry included, as a run pays it), and the same with the
  read-ahead of the next batch turned off.

The verdicts of the last two are compared (class per file) so a faster wrong answer is not
counted. The figure of merit is ``batch scoring / raw ORT`` (issue 18 asks for >= 0.8).

Run::

    .venv/bin/python benchmarks/bench_batch_scoring.py                      # test_resnet
    .venv/bin/python benchmarks/bench_batch_scoring.py --architecture resnet50 --image-size 224
    .venv/bin/python benchmarks/bench_batch_scoring.py --json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnxruntime
import pandas as pd
from common import random_bundle, register_champion, use_sqlite_registry

from eyecatcher.models.onnx_runtime import OnnxClassifier, export_onnx, quantize_onnx
from eyecatcher.pipelines.batch_scoring import nodes as batch_nodes
from eyecatcher.pipelines.batch_scoring.nodes import list_images_to_score, score_images
from eyecatcher.preprocessing import bytes_to_batch
from eyecatcher.registry.resolve import resolve_champion
from eyecatcher.serving_model import DecisionThresholds, ServingConfig

REPO = Path(__file__).resolve().parents[1]
DEMO_IMAGES = REPO / "data" / "01_raw" / "demo" / "images"
CLASSES = ["explicit_nudity", "safe", "suggestive"]
MODEL_NAME = "eyecatcher-bench-batch"
TARGET_RATIO = 0.8


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


def register_int8_champion(
    root: Path, architecture: str, image_size: int, calibration: list[bytes], batch_size: int
) -> None:
    """A random-weight int8 champion (static QDQ), packaged and registered in sqlite."""
    use_sqlite_registry(root)
    bundle = random_bundle(architecture, CLASSES, image_size)
    fp32_path = export_onnx(
        bundle.build_model(), bundle.data_config["input_size"], root / "fp32.onnx"
    )
    batch = bytes_to_batch(calibration, bundle.data_config)
    int8_path = quantize_onnx(
        fp32_path, root / "int8.onnx", method="static", calibration=batch.numpy()
    )
    config = ServingConfig(
        model_name=MODEL_NAME,
        model_version="1",
        candidate=architecture,
        precision="int8",
        classes=CLASSES,
        safe_class="safe",
        thresholds=DecisionThresholds(review=0.5, block=0.8),
        operating_threshold=0.5,
        batch_size=batch_size,
    )
    register_champion(
        bundle, config, experiment="bench-batch", artifact_root=root / "a", onnx_path=int8_path
    )


def batches(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive chunks of ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def measure(functions: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each function per round, the functions taking turns in every round."""
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the champion, time the three ways of scoring, and return the figures."""
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        root = Path(tmp)
        n_images = copy_demo(root / "images", args.repeat)
        calibration = [p.read_bytes() for p in sorted(DEMO_IMAGES.rglob("*.jpg"))[:16]]
        register_int8_champion(
            root, args.architecture, args.image_size, calibration, args.batch_size
        )
        params = {
            "model_name": MODEL_NAME,
            "alias": "champion",
            "source": str(root / "images"),
            "recursive": True,
            "extensions": [".jpg", ".jpeg", ".png", ".webp"],
            "batch_size": args.batch_size,
            "engine": "local",
            "storage_options": {},
        }
        champion = resolve_champion(params)
        paths = list_images_to_score(params)["path"].tolist()
        listed = pd.DataFrame({"path": paths})
        # The same backend object the served model runs: same session, same threads.
        served = mlflow.pyfunc.load_model(champion["model_uri"]).unwrap_python_model()
        classifier, data_config = served.classifier_, served.bundle_.data_config
        tensors = [
            bytes_to_batch([Path(p).read_bytes() for p in chunk], data_config)
            for chunk in batches(paths, args.batch_size)
        ]

        # Raw throughput at its best: back-to-back forward passes gain from spinning threads.
        raw = OnnxClassifier(root / "int8.onnx", threads=classifier.threads, spinning=True)

        def raw_ort() -> None:
            for batch in tensors:
                raw.predict_proba(batch)

        # The same model with ONNX Runtime's idle threads spinning or not (the served model's
        # session does not spin since 2026-12-03): tells whether spinning after each forward
        # pass takes the cores the decoding between passes needs.
        sessions = {
            "plain loop (served session)": classifier,
            "plain loop, ORT spinning": OnnxClassifier(
                root / "int8.onnx", threads=classifier.threads, spinning=True
            ),
            "plain loop, ORT not spinning": OnnxClassifier(
                root / "int8.onnx", threads=classifier.threads, spinning=False
            ),
        }
        plain_classes: dict[str, list[str]] = {name: [] for name in sessions}

        def plain_loop(name: str) -> Callable[[], None]:
            """Read, decode, preprocess, then the session of ``name``, one batch at a time."""

            def run() -> None:
                classes = plain_classes[name]
                classes.clear()
                for chunk in batches(paths, args.batch_size):
                    batch = bytes_to_batch([Path(p).read_bytes() for p in chunk], data_config)
                    probabilities = sessions[name].predict_proba(batch)
                    classes.extend(CLASSES[i] for i in np.argmax(probabilities, axis=1))

            return run

        tables: dict[str, pd.DataFrame] = {}

        def batch_scoring(read_ahead: int | None) -> Callable[[], None]:
            def score() -> None:
                default = getattr(batch_nodes, "READ_AHEAD_BATCHES", None)
                if read_ahead is not None:
                    batch_nodes.READ_AHEAD_BATCHES = read_ahead
                try:
                    tables[str(read_ahead)], _ = score_images(listed, champion, params)
                finally:
                    if default is not None:
                        batch_nodes.READ_AHEAD_BATCHES = default

            return score

        functions = {"raw ORT": raw_ort, **{name: plain_loop(name) for name in sessions}}
        functions["batch scoring"] = batch_scoring(None)
        if hasattr(batch_nodes, "READ_AHEAD_BATCHES"):  # absent from the code before it
            functions["batch scoring, no read-ahead"] = batch_scoring(0)
        # Warm-up on one batch each: sessions, allocators, file cache.
        classifier.predict_proba(tensors[0])
        score_images(listed.iloc[: args.batch_size], champion, params)
        seconds = measure(functions, args.rounds)
        served_classes = plain_classes["plain loop (served session)"]
        if any(classes != served_classes for classes in plain_classes.values()):
            raise RuntimeError("the ONNX Runtime sessions disagree: timing meaningless")
        for scored in tables.values():
            errors = int(scored["error"].notna().sum())
            if errors or scored["class"].tolist() != served_classes:
                raise RuntimeError("batch scoring and the plain loop disagree: timing meaningless")

    per_second = {name: n_images / statistics.median(s) for name, s in seconds.items()}
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "architecture": args.architecture,
        "image_size": args.image_size,
        "images": n_images,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "code": str(Path(batch_nodes.__file__).parents[3]),
        "images_per_s": per_second,
        "seconds": seconds,
        "ratio_vs_raw": {name: v / per_second["raw ORT"] for name, v in per_second.items()},
        "target_ratio": TARGET_RATIO,
    }


def print_table(result: dict[str, Any]) -> None:
    """The table, with the run's conditions above it."""
    print(
        f"\n{result['date']} · {result['machine']} · {result['cores']} cores · onnxruntime "
        f"{result['onnxruntime']} · {result['architecture']} int8 (static QDQ, random "
        f"weights) at {result['image_size']} px · {result['images']} images · batch "
        f"{result['batch_size']} · median of {result['rounds']} interleaved rounds · code "
        f"from {result['code']}\n"
    )
    frame = pd.DataFrame(
        {
            "way": list(result["images_per_s"]),
            "images/s": list(result["images_per_s"].values()),
            "÷ raw ORT": list(result["ratio_vs_raw"].values()),
        }
    )
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    ratio = result["ratio_vs_raw"]["batch scoring"]
    verdict = "met" if ratio >= result["target_ratio"] else "NOT met"
    print(f"\nbatch scoring ÷ raw ORT = {ratio:.2f} (target ≥ {result['target_ratio']}: {verdict})")


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="test_resnet")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5, help="copies of the demo images")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
