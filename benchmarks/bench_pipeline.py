"""Whole-pipeline benchmark: wall time and peak memory of the default `kedro run`, per node.

Runs the default pipeline (or the ones named with ``--pipelines``) on a throw-away copy of the
project with the full embedded demo, so the user's own ``data/`` and ``mlruns/`` are untouched,
and prints one row per node: wall time, share of the total, and the peak resident memory of the
process while the node ran (sampled every 20 ms, child processes included).

    .venv/bin/python benchmarks/bench_pipeline.py [--env base] [--pipelines a,b] [--workdir DIR]
        [--params training.features.runtime=torch] [--json rows.json]

``--params`` takes ``kedro run --params`` style overrides (comma-separated ``dotted.key=value``),
so that a before/after pair differs in one setting only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import PeakRss, process_tree_rss
from kedro.framework.hooks import hook_impl

REPO = Path(__file__).resolve().parents[1]


class NodeProfiler:
    """A Kedro hook recording wall time and peak memory of every node."""

    def __init__(self) -> None:
        self.rows_: list[tuple[str, float, int]] = []
        self._sampler = PeakRss(process_tree_rss).start()
        self._started = 0.0

    @hook_impl
    def before_node_run(self, node) -> None:
        self._sampler.reset()
        self._started = time.perf_counter()

    @hook_impl
    def after_node_run(self, node) -> None:
        self.rows_.append((node.name, time.perf_counter() - self._started, self._sampler.peak_))


def _copy_project(dest: Path) -> Path:
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")
    shutil.copytree(REPO / "conf", dest / "conf", ignore=shutil.ignore_patterns("credentials.yml"))
    (dest / "src").mkdir()
    shutil.copytree(REPO / "data" / "01_raw", dest / "data" / "01_raw")
    for layer in ("02_intermediate", "03_primary", "04_feature", "05_model_input",
                  "06_models", "07_model_output", "08_reporting"):  # fmt: skip
        (dest / "data" / layer).mkdir(parents=True, exist_ok=True)
    (dest / "mlruns").mkdir()
    return dest


def _runtime_params(text: str) -> dict:
    """``a.b=1,c=x`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML scalars)."""
    params: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        *parents, leaf = key.strip().split(".")
        node = params
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = yaml.safe_load(value)
    return params


def main() -> None:
    """Run the pipeline once with the profiler and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="base")
    parser.add_argument("--pipelines", default="__default__")
    parser.add_argument("--workdir", type=Path, help="run in this folder (default: a temp dir)")
    parser.add_argument("--params", default="", help="overrides, e.g. training.epochs=5,a.b=c")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="eyecatcher-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    project = _copy_project(workdir)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    os.chdir(project)
    bootstrap_project(project)
    profiler = NodeProfiler()
    started = time.perf_counter()
    overrides = _runtime_params(args.params)
    with KedroSession.create(
        project_path=project, env=args.env, runtime_params=overrides or None
    ) as session:
        # No public API adds a hook to one session; the benchmark reaches for the manager.
        session._hook_manager.register(profiler)
        session.run(pipeline_names=args.pipelines.split(","))
    total = time.perf_counter() - started
    profiler._sampler.stop()
    import mlflow

    while mlflow.active_run() is not None:  # MLflow's run stack may still hold the run
        mlflow.end_run()

    print(
        f"\nWhole pipeline ({args.pipelines}, env {args.env}) on {platform.processor() or 'cpu'}"
        f", {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    )
    print(f"{'node':<58} {'wall s':>8} {'share':>6} {'peak RSS MiB':>13}")
    for name, seconds, peak in profiler.rows_:
        print(f"{name:<58} {seconds:>8.1f} {seconds / total:>6.1%} {peak / 2**20:>13.0f}")
    overall_peak = max(peak for _, _, peak in profiler.rows_)
    label = "total (session, incl. start-up)"
    print(f"{label:<58} {total:>8.1f} {'':>6} {overall_peak / 2**20:>13.0f}")
    print(f"outputs and MLflow store: {workdir}")
    if args.json:
        rows = [
            {"node": name, "wall_s": seconds, "peak_rss_mib": peak / 2**20}
            for name, seconds, peak in profiler.rows_
        ]
        record = {"benchmark": "pipeline", "env": args.env, "params": overrides, "rows": rows}
        args.json.write_text(json.dumps({**record, "total_s": total}, indent=2))


if __name__ == "__main__":
    main()
