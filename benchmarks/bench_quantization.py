"""Benchmark: fp32 vs int8 (ONNX Runtime static and dynamic) per architecture, on this machine.

Measures, in one process and on the same inputs, for each architecture:

* ``torch-fp32``: the PyTorch model (the reference);
* ``ort-fp32``: the same model exported to ONNX, run by ONNX Runtime;
* ``int8-static``: ONNX Runtime static QDQ quantization, per-channel weights, MinMax calibration
  on demo images that are not in the evaluation set;
* ``int8-static-rr``: the same with ``reduce_range`` (7-bit weights, for CPUs without VNNI);
* ``int8-dynamic``: ONNX Runtime dynamic quantization of MatMul/Gemm weights.

Columns: file size, batch-1 latency p50/p95 (warm-up excluded), throughput at batch 32, top-1
agreement with ``torch-fp32`` and accuracy against the demo's labels, and the p50 ratio to
``ort-fp32``. Ratios inside one run are what to compare on a shared, noisy machine: all
variants of a model are timed round-robin, one call each in turn, so a load spike hits them
all alike.

Models are the real timm architectures at 224x224. Without ``--bundle`` they are randomly
initialised (no weights can be downloaded here), so accuracy is near chance and only agreement
and speed mean something; pass trained bundles (``data/06_models/<candidate>/model_bundle.pt``
after ``kedro run``) to measure accuracy too.

Run: ``.venv/bin/python benchmarks/bench_quantization.py`` (about 5 minutes on 2 cores), or
``--architectures test_resnet test_vit --image-size 64`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# Variants take turns on the CPU: idle OpenMP threads must sleep, not spin (set before torch).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from eyecatcher.images import decode_image, sha256_bytes
from eyecatcher.models import ClassifierBundle, create_classifier
from eyecatcher.models.onnx_runtime import OnnxClassifier, export_onnx, quantize_onnx
from eyecatcher.pipelines.quantization.measure import (
    compare_latency_ms,
    compare_throughput_ips,
    predict_in_batches,
)
from eyecatcher.preprocessing import data_config_for, images_to_batch

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "01_raw" / "demo"

VARIANTS: dict[str, dict] = {
    "int8-static": {"method": "static", "reduce_range": False},
    "int8-static-rr": {"method": "static", "reduce_range": True},
    "int8-dynamic": {"method": "dynamic", "reduce_range": False},
}


def _demo_images(n_eval: int, n_calibration: int) -> tuple[list, list[str], list]:
    """Evaluation images with their demo classes, and disjoint calibration images."""
    labels = {}
    for line in (DEMO / "rekognition_responses.jsonl").open():
        record = json.loads(line)
        labels[record["sha256"]] = record["demo_class"]
    labelled = []
    for path in sorted((DEMO / "images").rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if sha256_bytes(data) in labels:
            labelled.append((decode_image(data), labels[sha256_bytes(data)]))
    # Interleave so both sets cover every class.
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labelled))
    chosen = [labelled[i] for i in order]
    evaluation = chosen[:n_eval]
    calibration = [image for image, _ in chosen[n_eval : n_eval + n_calibration]]
    return [image for image, _ in evaluation], [label for _, label in evaluation], calibration


def _bundle_for(architecture: str, bundle_path: str | None, image_size: int) -> ClassifierBundle:
    if bundle_path:
        return ClassifierBundle.load(bundle_path)
    classes = [
        "safe",
        "explicit_nudity",
        "explicit_sexual_activity",
        "non_explicit_nudity",
        "swimwear_or_underwear",
    ]
    torch.manual_seed(0)
    model, source = create_classifier(architecture, len(classes), "random")
    return ClassifierBundle.from_model(
        model,
        architecture=architecture,
        classes=classes,
        data_config=data_config_for(model, image_size),
        weights_source=source,
    )


def bench_architecture(args: argparse.Namespace, bundle: ClassifierBundle) -> list[dict]:
    """Measure every variant of one model; returns one row per variant."""
    eval_images, eval_labels, calib_images = _demo_images(args.images, args.calibration)
    batch = images_to_batch(eval_images, bundle.data_config).numpy()
    calibration = images_to_batch(calib_images, bundle.data_config).numpy()
    y_true = np.array([bundle.classes.index(c) if c in bundle.classes else -1 for c in eval_labels])
    model = bundle.build_model()
    torch.set_num_threads(args.threads)

    def torch_predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as scratch:
        fp32_path = Path(scratch) / "fp32.onnx"
        start = time.perf_counter()
        export_onnx(model, bundle.data_config["input_size"], fp32_path)
        export_s = time.perf_counter() - start
        predictors: dict[str, tuple] = {"torch-fp32": (torch_predict, None, 0.0)}
        fp32 = OnnxClassifier(fp32_path, threads=args.threads, spinning=False)
        predictors["ort-fp32"] = (fp32.predict_logits, fp32_path, export_s)
        for name in args.variants:
            spec = VARIANTS[name]
            path = Path(scratch) / f"{name}.onnx"
            start = time.perf_counter()
            try:
                quantize_onnx(
                    fp32_path,
                    path,
                    method=spec["method"],
                    calibration=calibration,
                    reduce_range=spec["reduce_range"],
                )
            except Exception as exc:
                print(f"  {name}: FAILED {exc}", file=sys.stderr)
                continue
            seconds = time.perf_counter() - start
            runner = OnnxClassifier(path, threads=args.threads, spinning=False)
            predictors[name] = (runner.predict_logits, path, seconds)

        reference = predict_in_batches(torch_predict, batch, 8).argmax(axis=1)
        functions = {name: spec[0] for name, spec in predictors.items()}
        print(f"  timing {bundle.architecture} round-robin ...", file=sys.stderr, flush=True)
        latency = compare_latency_ms(
            functions, batch, iterations=args.iterations, warmup=args.warmup
        )
        throughput = compare_throughput_ips(
            functions,
            batch,
            batch_size=args.batch_size,
            iterations=args.throughput_iterations,
            warmup=1,
        )
        torch_bytes = sum(v.numel() * v.element_size() for v in bundle.state_dict.values())
        for name, (predict, path, seconds) in predictors.items():
            pred = predict_in_batches(predict, batch, 8).argmax(axis=1)
            rows.append(
                {
                    "architecture": bundle.architecture,
                    "variant": name,
                    "size_mb": (path.stat().st_size if path else torch_bytes) / 1e6,
                    "p50_ms": latency[name]["p50"],
                    "p95_ms": latency[name]["p95"],
                    "ips_b32": throughput[name]["images_per_s"],
                    "agreement": float((pred == reference).mean()),
                    "accuracy": float((pred == y_true).mean()),
                    "build_s": seconds,
                }
            )
    base = next(r["p50_ms"] for r in rows if r["variant"] == "ort-fp32")
    for row in rows:
        row["p50_vs_ort_fp32"] = row["p50_ms"] / base
    return rows


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the benchmark, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="+", default=["resnet50", "vit_base_patch16_224"])
    parser.add_argument(
        "--bundle", nargs="*", default=[], help="trained bundles, one per architecture, in order"
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=40, help="evaluation images")
    parser.add_argument("--calibration", type=int, default=32, help="calibration images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=20, help="timed batch-1 calls")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--throughput-iterations", type=int, default=2)
    args = parser.parse_args(argv)

    rows = []
    for i, architecture in enumerate(args.architectures):
        bundle_path = args.bundle[i] if i < len(args.bundle) else None
        bundle = _bundle_for(architecture, bundle_path, args.image_size)
        print(
            f"{architecture}: weights {bundle.weights_source}, "
            f"input {bundle.data_config['input_size']}",
            file=sys.stderr,
        )
        rows.extend(bench_architecture(args, bundle))

    print(
        f"\nMachine: {platform.processor() or platform.machine()}, {args.threads} threads, "
        f"torch {torch.__version__}; {args.images} eval images, {args.calibration} calibration "
        f"images, {args.iterations} timed batch-1 calls after {args.warmup} warm-up, "
        f"{args.throughput_iterations} timed batches of {args.batch_size}.\n"
    )
    header = (
        "| architecture | variant | size MB | p50 ms | p95 ms | img/s @32 | p50 / ort-fp32 "
        "| agreement | accuracy | build s |"
    )
    print(header)
    print("|---" * 10 + "|")
    for r in rows:
        print(
            f"| {r['architecture']} | {r['variant']} | {r['size_mb']:.1f} | {r['p50_ms']:.1f} "
            f"| {r['p95_ms']:.1f} | {r['ips_b32']:.1f} | {r['p50_vs_ort_fp32']:.2f} "
            f"| {r['agreement']:.2f} | {r['accuracy']:.2f} | {r['build_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
