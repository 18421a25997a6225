"""Benchmark: which levers bring int8 ViT-B/16 (and ResNet50, light CNNs) near this CPU's limit.

Three measurements, each timed round-robin (every variant once per iteration, in turn, so a load
spike on this shared machine hits them all alike; compare ratios, not absolute numbers):

1. **The GEMM ceiling.** One ONNX ``MatMul`` of ViT-B/16's MLP shape (197x768 @ 768x3072) in
   fp32 and dynamically quantized to int8 (per-tensor, ``reduce_range``, u8 weights): GMAC/s
   of each and the best int8/fp32 time ratio, i.e. how much faster int8 *can* be here.
2. **Levers per model** (random weights, full size, 224x224, batch 1): multiply-accumulates per
   image (counted by ``torch.utils.flop_counter``), p50/p95/mean latency, GMAC/s, the p50 ratio
   to the pipeline's fp32 graph, and an accuracy proxy: top-1 agreement and the largest logit
   error of each variant against ONNX Runtime fp32 on ``--inputs`` synthetic images (the demo's
   abstract patterns, then seeded noise). With random weights these are proxies for an accuracy
   drop, not accuracy.
   ViT-B/16 variants: export with timm's fused attention (as the pipeline did) or plain attention
   (``fused_attn=False``: the same arithmetic, a simpler graph), ONNX Runtime's transformer
   optimizer (``model_type='vit'``), dynamic MatMul int8 (per-channel or per-tensor,
   ``reduce_range``, s8 or u8 weights), static QDQ int8, and the session's graph optimization
   level. CNN variants: fp32, static QDQ int8 (per-channel or per-tensor, ``reduce_range``),
   dynamic int8.
3. **Threads**: the fastest ViT-B/16 fp32 and int8 graphs at 1, 2 and 4 intra-op threads.

Run: ``.venv/bin/python benchmarks/bench_quantization_levers.py [--json out.json]``, or in two
parts as docs/quantization.md did (``--skip vit --inputs 64 --iterations 15``, then ``--skip
ceiling cnn --inputs 24 --iterations 12``: about 5 and 10 minutes on the loaded 2-core box;
the accuracy proxy of full-size ViT-B/16 dominates), or ``--quick`` (tiny ``test_*`` models at
64 px) for a smoke run. Models are built with random weights (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

# Variants take turns on the CPU: idle OpenMP threads must sleep, not spin (set before torch).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import onnx
import onnxruntime as ort
import timm
import torch

from eyecatcher.images import decode_image
from eyecatcher.models.onnx_runtime import export_onnx, quantize_onnx, session_options
from eyecatcher.pipelines.quantization.graph_optimization import (
    count_macs,
    optimize_transformer_graph,
    plain_attention,
)
from eyecatcher.pipelines.quantization.measure import compare_latency_ms, predict_in_batches
from eyecatcher.preprocessing import data_config_for, images_to_batch

ROOT = Path(__file__).resolve().parents[1]
DEMO_IMAGES = ROOT / "data" / "01_raw" / "demo" / "images"
N_CLASSES = 5
LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def _session(path: Path, threads: int, level: str = "all") -> Callable[[np.ndarray], np.ndarray]:
    options = session_options(threads, spinning=False)
    options.graph_optimization_level = LEVELS[level]
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def _unbatched(run: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """The GEMM graph takes a 2-D matrix; the timing helper hands it a batch of one."""
    return lambda batch: run(batch[0])


def _dynamic(src: Path, dst: Path, *, per_channel: bool, reduce_range: bool, u8: bool) -> Path:
    """Dynamic MatMul int8 without ``quantize_onnx``'s fixed weight type (for the u8 lever)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=per_channel,
        reduce_range=reduce_range,
        weight_type=QuantType.QUInt8 if u8 else QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return dst


def _inputs(n: int, size: int, data_config: dict) -> np.ndarray:
    """``n`` synthetic inputs: the demo's abstract images first, then seeded noise."""
    images = []
    for path in sorted(DEMO_IMAGES.rglob("*")):
        if len(images) >= n:
            break
        if path.is_file():
            try:
                images.append(decode_image(path.read_bytes()))
            except Exception:  # the demo keeps a few deliberately bad files
                continue
    batch = images_to_batch(images, data_config).numpy() if images else None
    extra = n - (0 if batch is None else len(batch))
    noise = np.random.default_rng(0).standard_normal((extra, 3, size, size)).astype(np.float32)
    return noise if batch is None else np.concatenate([batch, noise])[:n]


def gemm_ceiling(args: argparse.Namespace, scratch: Path) -> list[dict]:
    """fp32 vs int8 time of one MatMul of ViT-B/16's MLP shape (the kernels' ceiling here)."""
    m, k, n = (197, 768, 3072) if not args.quick else (50, 64, 256)
    rng = np.random.default_rng(0)
    weight = onnx.numpy_helper.from_array(
        (rng.standard_normal((k, n)) * 0.02).astype(np.float32), "w"
    )
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])],
        "gemm",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [m, k])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [m, n])],
        [weight],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    fp32 = scratch / "gemm_fp32.onnx"
    onnx.save(model, str(fp32))
    paths = {"fp32": fp32}
    for name, rr, u8 in (("int8-s8", False, False), ("int8-s8-rr", True, False)):
        paths[name] = _dynamic(
            fp32, scratch / f"gemm_{name}.onnx", per_channel=False, reduce_range=rr, u8=u8
        )
    paths["int8-u8"] = _dynamic(
        fp32, scratch / "gemm_int8-u8.onnx", per_channel=False, reduce_range=False, u8=True
    )
    x = rng.standard_normal((1, m, k)).astype(np.float32)
    rows = []
    for threads in args.ceiling_threads:
        runs = {name: _session(p, threads) for name, p in paths.items()}
        latency = compare_latency_ms(
            {name: _unbatched(run) for name, run in runs.items()},
            x,
            iterations=args.iterations * 5,
            warmup=args.warmup,
        )
        for name, timing in latency.items():
            rows.append(
                {
                    "threads": threads,
                    "variant": name,
                    "shape": f"{m}x{k} @ {k}x{n}",
                    "p50_ms": timing["p50"],
                    "gmac_per_s": m * k * n / (timing["p50"] / 1000) / 1e9,
                    "p50_vs_fp32": timing["p50"] / latency["fp32"]["p50"],
                }
            )
    return rows


def _model(architecture: str, image_size: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    kwargs = {"zero_init_last": False} if "resnet" in architecture else {}
    if architecture.startswith("test_vit"):
        kwargs["img_size"] = image_size
    model = timm.create_model(architecture, pretrained=False, num_classes=N_CLASSES, **kwargs)
    return model.eval(), data_config_for(model, image_size)


def vit_variants(args, architecture: str, scratch: Path, calibration: np.ndarray) -> dict:
    """Build every ViT graph; returns ``{name: (path, level, build_s)}``."""
    model, config = _model(architecture, args.image_size)
    built: dict[str, tuple[Path, str, float]] = {}

    def timed(name: str, level: str, build: Callable[[], Path]) -> None:
        start = time.perf_counter()
        try:
            path = build()
        except Exception as exc:
            print(f"  {name}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr)
            return
        built[name] = (path, level, time.perf_counter() - start)

    size = config["input_size"]
    timed("fp32", "all", lambda: export_onnx(model, size, scratch / "fused.onnx"))

    def export_plain() -> Path:
        with plain_attention(model):
            return export_onnx(model, size, scratch / "p.onnx")

    timed("fp32-plain", "all", export_plain)
    plain = scratch / "p.onnx"
    timed(
        "fp32-plain-opt",
        "all",
        lambda: optimize_transformer_graph(plain, scratch / "po.onnx") and scratch / "po.onnx",
    )
    fused, opt = scratch / "fused.onnx", scratch / "po.onnx"
    q = quantize_onnx
    timed("int8-dyn", "all", lambda: q(fused, scratch / "d.onnx", method="dynamic"))
    timed("int8-dyn-plain", "all", lambda: q(plain, scratch / "dp.onnx", method="dynamic"))
    for name, pc, rr, u8 in (
        ("int8-dyn-plain-opt", True, False, False),
        ("int8-dyn-plain-opt-pt", False, False, False),
        ("int8-dyn-plain-opt-rr", True, True, False),
        ("int8-dyn-plain-opt-u8", False, False, True),
    ):
        timed(
            name,
            "all",
            lambda pc=pc, rr=rr, u8=u8, name=name: _dynamic(
                opt, scratch / f"{name}.onnx", per_channel=pc, reduce_range=rr, u8=u8
            ),
        )
    if "int8-dyn-plain-opt" in built:
        path = built["int8-dyn-plain-opt"][0]
        built["int8-dyn-plain-opt@extended"] = (path, "extended", 0.0)
        built["int8-dyn-plain-opt@basic"] = (path, "basic", 0.0)
    if args.static:
        timed(
            "int8-static-plain",
            "all",
            lambda: q(plain, scratch / "sp.onnx", method="static", calibration=calibration),
        )
    return built, model, config


def cnn_variants(args, architecture: str, scratch: Path, calibration: np.ndarray) -> dict:
    """Build every CNN graph; returns ``{name: (path, level, build_s)}``."""
    model, config = _model(architecture, args.image_size)
    built: dict[str, tuple[Path, str, float]] = {}
    fp32 = scratch / f"{architecture}.onnx"
    start = time.perf_counter()
    export_onnx(model, config["input_size"], fp32)
    built[f"{architecture}/fp32"] = (fp32, "all", time.perf_counter() - start)
    specs = {"int8-static": ("static", True, False), "int8-dyn": ("dynamic", True, False)}
    if architecture == args.cnns[0]:
        specs["int8-static-pt"] = ("static", False, False)
        specs["int8-static-rr"] = ("static", True, True)
    for name, (method, pc, rr) in specs.items():
        path = scratch / f"{architecture}_{name}.onnx"
        start = time.perf_counter()
        try:
            quantize_onnx(
                fp32, path, method=method, calibration=calibration, per_channel=pc, reduce_range=rr
            )
        except Exception as exc:
            print(f"  {architecture}/{name}: FAILED {exc}", file=sys.stderr)
            continue
        built[f"{architecture}/{name}"] = (path, "all", time.perf_counter() - start)
    return built, model, config


def measure_group(
    args, built: dict, inputs: np.ndarray, macs: dict[str, float], baseline: Callable[[str], str]
) -> list[dict]:
    """Time every built graph round-robin and score it against its fp32 baseline."""
    runs = {name: _session(path, args.threads, level) for name, (path, level, _) in built.items()}
    print(f"  timing {len(runs)} variants round-robin ...", file=sys.stderr, flush=True)
    latency = compare_latency_ms(runs, inputs, iterations=args.iterations, warmup=args.warmup)
    # The same file at another optimization level computes the same function: score it once.
    outputs: dict[str, np.ndarray] = {}
    by_file: dict[Path, np.ndarray] = {}
    for name, run in runs.items():
        path = built[name][0]
        if path not in by_file:
            by_file[path] = predict_in_batches(run, inputs, 16)
        outputs[name] = by_file[path]
    rows = []
    for name, (path, level, build_s) in built.items():
        base = baseline(name)
        ref, out = outputs[base], outputs[name]
        scale = float(np.abs(ref).max()) or 1.0
        model_macs = macs[name.split("/")[0] if "/" in name else "vit"]
        rows.append(
            {
                "variant": name,
                "graph_optimization": level,
                "size_mb": path.stat().st_size / 1e6,
                "build_s": build_s,
                "p50_ms": latency[name]["p50"],
                "p95_ms": latency[name]["p95"],
                "mean_ms": latency[name]["mean"],
                "gmac_per_s": model_macs / (latency[name]["p50"] / 1000) / 1e9,
                "baseline": base,
                "p50_vs_baseline": latency[name]["p50"] / latency[base]["p50"],
                "top1_agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
                "max_logit_error_rel": float(np.abs(out - ref).max() / scale),
            }
        )
    return rows


def thread_sweep(args, built: dict, inputs: np.ndarray, names: list[str]) -> list[dict]:
    """The chosen graphs at several intra-op thread counts, all in one round-robin."""
    runs = {
        f"{name}@{t}t": _session(built[name][0], t, built[name][1])
        for name in names
        if name in built
        for t in args.sweep_threads
    }
    latency = compare_latency_ms(runs, inputs, iterations=args.iterations, warmup=args.warmup)
    return [
        {"variant": key, "p50_ms": v["p50"], "p95_ms": v["p95"], "mean_ms": v["mean"]}
        for key, v in latency.items()
    ]


def _print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [
            f"{row[c]:.3g}"
            if isinstance(row[c], float) and abs(row[c]) < 10
            else (f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]))
            for c in columns
        ]
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the three measurements, print Markdown tables (and JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny test_* models at 64 px")
    parser.add_argument("--vit", default=None)
    parser.add_argument("--cnns", nargs="*", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ceiling-threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sweep-threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--iterations", type=int, default=20, help="timed batch-1 calls")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--inputs", type=int, default=32, help="inputs for the accuracy proxy")
    parser.add_argument("--calibration", type=int, default=8, help="static calibration images")
    parser.add_argument("--no-static-vit", dest="static", action="store_false")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ceiling", "vit", "cnn"])
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    args.vit = args.vit or ("test_vit" if args.quick else "vit_base_patch16_224")
    if args.cnns is None:
        args.cnns = (
            ["test_resnet", "test_efficientnet"]
            if args.quick
            else ["resnet50", "mobilenetv3_large_100", "efficientnet_b0"]
        )
    args.image_size = args.image_size or (64 if args.quick else 224)
    torch.set_num_threads(args.threads)
    result: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="bench-levers-") as tmp:
        scratch = Path(tmp)
        if "ceiling" not in args.skip:
            print("GEMM ceiling ...", file=sys.stderr, flush=True)
            result["gemm_ceiling"] = gemm_ceiling(args, scratch)
        if "vit" not in args.skip:
            print(f"{args.vit} ...", file=sys.stderr, flush=True)
            model, config = _model(args.vit, args.image_size)
            inputs = _inputs(args.inputs, args.image_size, config)
            calibration = _inputs(args.calibration, args.image_size, config)[::-1].copy()
            built, model, config = vit_variants(args, args.vit, scratch, calibration)
            macs = {"vit": count_macs(model, config["input_size"])}
            result["macs"] = {args.vit: macs["vit"]}
            result["vit"] = measure_group(
                args, built, inputs, macs, lambda name: "fp32-plain" if "opt" in name else "fp32"
            )
            best = min(
                (r for r in result["vit"] if r["variant"].startswith("int8")),
                key=lambda r: r["p50_ms"],
            )["variant"]
            fp32_best = min(
                (r for r in result["vit"] if r["variant"].startswith("fp32")),
                key=lambda r: r["p50_ms"],
            )["variant"]
            result["threads"] = thread_sweep(args, built, inputs[:8], [fp32_best, best])
        if "cnn" not in args.skip:
            built, macs = {}, {}
            config = None
            for architecture in args.cnns:
                print(f"{architecture} ...", file=sys.stderr, flush=True)
                model, config = _model(architecture, args.image_size)
                calibration = _inputs(args.calibration, args.image_size, config)[::-1].copy()
                more, model, config = cnn_variants(args, architecture, scratch, calibration)
                built.update(more)
                macs[architecture] = count_macs(model, config["input_size"])
            result["macs"] = {**result.get("macs", {}), **macs}
            inputs = _inputs(args.inputs, args.image_size, config)
            result["cnn"] = measure_group(
                args, built, inputs, macs, lambda name: name.split("/")[0] + "/fp32"
            )
            ref = next(
                (r for r in result["cnn"] if r["variant"] == f"{args.cnns[0]}/int8-static"), None
            )
            for row in result["cnn"]:
                row["p50_vs_first_cnn_int8_static"] = row["p50_ms"] / ref["p50_ms"] if ref else None

    print(
        f"\n{result['date']}, {result['machine']['processor']}, {os.cpu_count()} CPUs, load "
        f"average at start {result['machine']['load_average_at_start']}, onnxruntime "
        f"{ort.__version__}; {args.threads} threads unless stated, batch 1, "
        f"{args.iterations} timed calls after {args.warmup} warm-up, round-robin."
    )
    if "macs" in result:
        print(
            "\nMACs per image: "
            + ", ".join(f"{k} {v / 1e9:.2f} G" for k, v in result["macs"].items())
        )
    if "gemm_ceiling" in result:
        _print_table(
            "GEMM ceiling (one MatMul, dynamic int8 vs fp32)",
            result["gemm_ceiling"],
            ["threads", "variant", "shape", "p50_ms", "gmac_per_s", "p50_vs_fp32"],
        )
    columns = [
        "variant",
        "graph_optimization",
        "size_mb",
        "build_s",
        "p50_ms",
        "p95_ms",
        "mean_ms",
        "gmac_per_s",
        "baseline",
        "p50_vs_baseline",
        "top1_agreement",
        "max_logit_error_rel",
    ]
    if "vit" in result:
        _print_table(f"{args.vit} levers", result["vit"], columns)
        _print_table("threads", result["threads"], ["variant", "p50_ms", "p95_ms", "mean_ms"])
    if "cnn" in result:
        _print_table("CNNs", result["cnn"], [*columns, "p50_vs_first_cnn_int8_static"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
