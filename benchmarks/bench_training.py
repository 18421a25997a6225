"""Benchmark: cached-feature training vs the reference loop, same candidate, data and epochs.

Both sides run the project's own node (``eyecatcher.pipelines.training.nodes.train_candidate``)
with the same settings except ``features.cache`` (and ``features.runtime``):

* **reference** -- the frozen backbone runs on freshly augmented training images and on the
  validation images every epoch;
* **cached, cold** -- an empty feature cache: the backbone runs once per image and view
  (``--views``), then the head trains on the cached features; once per ``--runtimes``
  (``torch``: eager PyTorch; ``onnxruntime``: the backbone's exported, checked ONNX graph,
  its export included in the time), with ``features_vs_torch`` the ratio of the
  feature-extraction times;
* **cached, warm** -- the same again with the cache the cold run left (a re-run, or a new
  head configuration on the same data).

Every row is measured in the same process, one after the other, so the ratios compare like with
like on a noisy machine; the table also gives the process CPU-time ratio (less sensitive to other
processes on a shared machine) and the number of backbone passes each side made (the work
ratio, which does not depend on the machine at all). Run from the repository root::

    .venv/bin/python benchmarks/bench_training.py                       # resnet50, 224 px
    .venv/bin/python benchmarks/bench_training.py --architecture vit_base_patch16_224
    .venv/bin/python benchmarks/bench_training.py --architecture test_vit --image-size 64

The data is the embedded demo (``data/01_raw/demo``), split 80/10/10 per class by sha256, or
``--manifest`` (a ``split_manifest`` parquet file).

``--heatmaps N`` instead measures what ``explain_candidate`` costs: for each architecture, the
forward pass and the Grad-CAM heatmap (forward + backward through the backbone) of N demo
images, one at a time, in the same process (the ratio is what to read)::

    .venv/bin/python benchmarks/bench_training.py --heatmaps 6 \
        --architecture resnet50 vit_base_patch16_224
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from eyecatcher.features.cache import FeatureCache
from eyecatcher.features.runtimes import FEATURE_RUNTIMES
from eyecatcher.images import sha256_bytes
from eyecatcher.pipelines.training.nodes import train_candidate

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "01_raw" / "demo"


def demo_manifest(folder: Path = DEMO, per_class: int | None = None) -> pd.DataFrame:
    """Split the demo 80/10/10 per class (classes from the recorded Rekognition answers).

    Args:
        folder: A demo folder with ``images/`` and ``rekognition_responses.jsonl``.
        per_class: Keep only the first images (by sha256) of each class, or all.

    Returns:
        A split manifest (``sha256, uri, class, split, group``), one row per distinct image.
    """
    classes = {
        record["sha256"]: record["demo_class"]
        for record in map(json.loads, (folder / "rekognition_responses.jsonl").open())
    }
    rows: dict[str, dict[str, str]] = {}
    for path in sorted((folder / "images").rglob("*")):
        if path.is_file():
            sha = sha256_bytes(path.read_bytes())
            if sha in classes:
                rows.setdefault(sha, {"sha256": sha, "uri": str(path), "class": classes[sha]})
    frame = pd.DataFrame(list(rows.values())).sort_values("sha256").reset_index(drop=True)
    if per_class is not None:
        frame = frame[frame.groupby("class").cumcount() < per_class].reset_index(drop=True)
    rank = frame.groupby("class").cumcount()
    size = frame.groupby("class")["sha256"].transform("count")
    frame["split"] = [
        "train" if r < 0.8 * n else "validation" if r < 0.9 * n else "test"
        for r, n in zip(rank, size, strict=True)
    ]
    frame["group"] = frame["sha256"]
    return frame


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of equal keys as a markdown table (floats with two decimals)."""
    header = list(rows[0])
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(lines)


def _settings(
    args: argparse.Namespace, epochs: int, cache: bool, runtime: str = "torch"
) -> dict[str, Any]:
    base = yaml.safe_load((ROOT / "conf" / "base" / "parameters_training.yml").read_text())
    training = copy.deepcopy(base["training"])
    training["candidates"] = ["bench"]
    training["storage_options"] = {}  # local images; the YAML holds ${globals:...} unresolved
    training["candidate_overrides"] = {"bench": {"architecture": args.architecture}}
    training["image_size"] = args.image_size
    training["epochs"] = epochs
    training["device"] = args.device
    training["num_threads"] = args.threads
    training["features"]["views"] = args.views
    training["features"]["cache"] = cache
    training["features"]["runtime"] = runtime
    return training


def _timed(
    manifest: pd.DataFrame, cache_dir: Path, training: dict[str, Any]
) -> tuple[float, float, Any]:
    start, cpu_start = time.perf_counter(), time.process_time()
    _, report = train_candidate(manifest, FeatureCache(cache_dir), training, candidate="bench")
    return time.perf_counter() - start, time.process_time() - cpu_start, report


def heatmap_costs(
    architectures: list[str], image_size: int, n_images: int, repeats: int
) -> list[dict[str, Any]]:
    """Per architecture: median ms per image of a forward pass and of a Grad-CAM heatmap."""
    from eyecatcher.explain import explainer_for
    from eyecatcher.features.views import read_image
    from eyecatcher.models.factory import create_classifier, model_kwargs_for_size
    from eyecatcher.preprocessing import data_config_for, eval_transform

    rows_of_manifest = demo_manifest().head(n_images).to_dict("records")
    rows = []
    for architecture in architectures:
        torch.manual_seed(0)
        model, _ = create_classifier(
            architecture, 5, "random", **model_kwargs_for_size(architecture, image_size)
        )
        model.eval()
        transform = eval_transform(data_config_for(model, image_size))
        batches = [
            transform(read_image(r["uri"], r["sha256"])).unsqueeze(0) for r in rows_of_manifest
        ]
        explainer = explainer_for(model)
        with torch.no_grad():  # warm-up: first calls pay for allocation and kernel selection
            model(batches[0])
        explainer.heatmaps(batches[0], [0])
        forward, heatmap = [], []
        for _ in range(repeats):
            for batch in batches:
                start = time.perf_counter()
                with torch.no_grad():
                    target = int(model(batch).argmax())
                forward.append(time.perf_counter() - start)
                start = time.perf_counter()
                explainer.heatmaps(batch, [target])
                heatmap.append(time.perf_counter() - start)
        forward_ms = 1000 * float(pd.Series(forward).median())
        heatmap_ms = 1000 * float(pd.Series(heatmap).median())
        rows.append(
            {
                "architecture": architecture,
                "method": explainer.method,
                "forward_ms": forward_ms,
                "heatmap_ms": heatmap_ms,
                "heatmap/forward": heatmap_ms / forward_ms,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", nargs="+", default=["resnet50"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--manifest", type=Path, default=None)
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per side; the minimum is reported"
    )
    parser.add_argument(
        "--per-class", type=int, default=None, help="demo images per class (default: all 40)"
    )
    parser.add_argument(
        "--heatmaps", type=int, default=0, help="measure heatmap cost on this many images"
    )
    parser.add_argument(
        "--runtimes",
        nargs="+",
        default=["torch", "onnxruntime"],
        choices=list(FEATURE_RUNTIMES),
        help="features.runtime of the cached sides (torch first: the others are compared to it)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.heatmaps:
        rows = heatmap_costs(args.architecture, args.image_size, args.heatmaps, args.repeats)
        print(
            f"# Heatmap cost at {args.image_size} px, batch 1, random weights; median of "
            f"{args.heatmaps} images x {args.repeats} repeats; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
        )
        print()
        print(markdown_table(rows))
        return
    if len(args.architecture) != 1:
        parser.error("the training benchmark takes one --architecture")
    args.architecture = args.architecture[0]
    if args.per_class is not None and args.per_class < 10:
        parser.error("--per-class must be at least 10 (an 80/10/10 split needs validation images)")
    logging.basicConfig(level=logging.ERROR)  # the random-weights warning is said once, below

    manifest = (
        pd.read_parquet(args.manifest) if args.manifest else demo_manifest(per_class=args.per_class)
    )
    counts = manifest["split"].value_counts().to_dict()
    print(
        f"# Training benchmark: {args.architecture} at {args.image_size} px, random weights, "
        f"{args.views} view(s) per training image"
    )
    print(
        f"data: {counts.get('train', 0)} train / {counts.get('validation', 0)} validation "
        f"images; machine: {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, "
        f"device {args.device}; minimum of {args.repeats} run(s) per cell"
    )
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="bench_training_"))
    try:
        for epochs in args.epochs:
            # Minimum over repeats: interference from other processes only ever adds time.
            # The sides take turns within each repeat, so slow phases of the machine hit all.
            reference_runs: list[tuple[float, float, Any]] = []
            cold_runs: dict[str, list[tuple[float, float, Any]]] = {r: [] for r in args.runtimes}
            for _ in range(args.repeats):
                reference_runs.append(
                    _timed(manifest, scratch / "unused", _settings(args, epochs, cache=False))
                )
                for runtime in args.runtimes:
                    cold_dir = scratch / f"cache_{epochs}_{runtime}"
                    shutil.rmtree(cold_dir, ignore_errors=True)
                    settings = _settings(args, epochs, cache=True, runtime=runtime)
                    cold_runs[runtime].append(_timed(manifest, cold_dir, settings))
            reference_s = min(run[0] for run in reference_runs)
            reference_cpu = min(run[1] for run in reference_runs)
            reference = reference_runs[0][2]
            n_train, n_val = reference["n_train"], reference["n_validation"]
            reference_passes = epochs * (n_train + n_val)
            torch_features_s = None
            for runtime in args.runtimes:
                cold_dir = scratch / f"cache_{epochs}_{runtime}"
                runs = cold_runs[runtime]
                cold_s = min(run[0] for run in runs)
                cold_cpu = min(run[1] for run in runs)
                features_s = min(run[2]["timings_s"]["features"] for run in runs)
                if runtime == "torch":
                    torch_features_s = features_s
                cold = runs[0][2]
                settings = _settings(args, epochs, cache=True, runtime=runtime)
                warm_s, _, warm = _timed(manifest, cold_dir, settings)
                shutil.rmtree(cold_dir, ignore_errors=True)
                rows.append(
                    {
                        "epochs": epochs,
                        "feature_runtime": runtime,
                        "reference_s": reference_s,
                        "cached_cold_s": cold_s,
                        "cold_features_s": features_s,
                        "cached_warm_s": warm_s,
                        "speed-up_cold": reference_s / cold_s,
                        "speed-up_warm": reference_s / warm_s,
                        "cpu_speed-up_cold": reference_cpu / cold_cpu,
                        "features_vs_torch": (
                            torch_features_s / features_s if torch_features_s else float("nan")
                        ),
                        "backbone_passes_ref/cold": (
                            f"{reference_passes}/{cold['cache']['misses']}"
                        ),
                        "warm_misses": warm["cache"]["misses"],
                        "val_acc_ref": reference["history"][-1]["val_accuracy"],
                        "val_acc_cached": cold["history"][-1]["val_accuracy"],
                    }
                )
                print(
                    f"  {epochs:>2} epochs, {runtime}: reference {reference_s:7.1f} s, cached "
                    f"cold {cold_s:6.1f} s (features {features_s:5.1f} s), warm {warm_s:5.1f} s",
                    file=sys.stderr,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "training", "rows": rows}, indent=2))
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
