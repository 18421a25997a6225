"""Hostile feedback files and answer-cache lines: rows accounted for, CPU and memory, before/after.

Each case builds one hostile input (a CSV field over the csv module's limit, a JSONL line with
a 5,000-digit integer or 100,000 levels of nesting, a feedback file over the 50 MB cap, a cache
line with ``"min_confidence": "fifty"``) among 10,000 good rows, and reads it with the code of
``--before-ref`` (loaded from git into a temporary module) and with the working tree's code.
Feedback files are parsed (``parse_feedback_files``: rows out, and rows the parser rejected),
not validated; the cache is loaded (``ResponseCache`` on the file as a seed: records kept,
lines skipped). Every measurement runs in a fresh child process: CPU seconds (user + system),
peak RSS growth (``ru_maxrss`` minus the resident size before reading) and what came out: rows
read, accepted and rejected, or the exception that stopped the read.

Run::

    .venv/bin/python benchmarks/bench_hostile_files.py
    .venv/bin/python benchmarks/bench_hostile_files.py --before-ref 4ce301e~1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ROWS = 10_000
SHA = "a" * 64
CSV_HEADER = "image,verdict,reviewer,timestamp,kind,note\n"


def _csv_row(i: int, note: str = "") -> str:
    return f"{SHA},safe,mod-{i},2026-11-25T10:00Z,review,{note}\n"


def _json_row(i: int) -> str:
    return (
        json.dumps(
            {
                "image": SHA,
                "verdict": "safe",
                "reviewer": f"mod-{i}",
                "timestamp": "2026-11-25T10:00:00Z",
                "kind": "review",
            }
        )
        + "\n"
    )


def _cache_line(i: int) -> str:
    return (
        json.dumps(
            {
                "sha256": f"{i:064x}",
                "min_confidence": 50.0,
                "source": "rekognition",
                "received_at": "2026-11-22T00:00:00+00:00",
                "request": {"image": "bytes", "prepared": "as_is", "format_checked": True},
                "response": {
                    "ModerationLabels": [
                        {
                            "Name": "Alcohol",
                            "ParentName": "",
                            "Confidence": 84.7,
                            "TaxonomyLevel": 1,
                        }
                    ],
                    "ModerationModelVersion": "7.0",
                    "ContentTypes": [],
                },
            }
        )
        + "\n"
    )


def build_case(name: str, folder: Path) -> tuple[Path, int]:
    """Write the case's file; return it and the number of rows (or lines) it holds."""
    middle = ROWS // 2
    if name == "csv_huge_field":
        rows = [_csv_row(i, "x" * 200_000 if i == middle else "") for i in range(ROWS)]
        path = folder / "f.csv"
        path.write_text(CSV_HEADER + "".join(rows))
        return path, ROWS
    if name in ("jsonl_huge_integer", "jsonl_deep_nesting"):
        bad = (
            '{"image": "' + SHA + '", "n": ' + "9" * 5000 + "}\n"
            if name == "jsonl_huge_integer"
            else '{"image": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
        )
        rows = [bad if i == middle else _json_row(i) for i in range(ROWS)]
        path = folder / "f.jsonl"
        path.write_text("".join(rows))
        return path, ROWS
    if name == "csv_over_size_cap":
        row = _csv_row(0, "n" * 500)
        count = 60_000_000 // len(row) + 1  # 60 MB, over the 50 MB default cap
        path = folder / "big.csv"
        with path.open("w") as handle:
            handle.write(CSV_HEADER)
            for _ in range(count):
                handle.write(row)
        return path, count
    if name == "cache_wrong_type":
        lines = [_cache_line(i) for i in range(ROWS)]
        lines[middle] = lines[middle].replace('"min_confidence": 50.0', '"min_confidence": "fifty"')
        path = folder / "cache.jsonl"
        path.write_text("".join(lines))
        return path, ROWS
    if name == "cache_clean":
        path = folder / "cache.jsonl"
        path.write_text("".join(_cache_line(i) for i in range(ROWS)))
        return path, ROWS
    raise ValueError(name)


CASES = (
    "csv_huge_field",
    "jsonl_huge_integer",
    "jsonl_deep_nesting",
    "csv_over_size_cap",
    "cache_wrong_type",
    "cache_clean",
)


def _module_from_git(ref: str, path: str, name: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{ref}:{path}"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    target = Path(tempfile.mkdtemp()) / f"{name}.py"
    target.write_text(source)
    spec = importlib.util.spec_from_file_location(name, target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _rss_kb() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_child(case: str, variant: str, path: Path, ref: str) -> dict[str, Any]:
    """In the child: read the case's file with one variant's code and measure it."""
    is_cache = case.startswith("cache")
    if is_cache:
        if variant == "before":
            cache_module = _module_from_git(ref, "src/eyecatcher/rekognition/cache.py", "old_cache")
        else:
            from eyecatcher.rekognition import cache as cache_module
    elif variant == "before":
        files_module = _module_from_git(
            ref, "src/eyecatcher/pipelines/feedback/files.py", "old_feedback_files"
        )
    else:
        from eyecatcher.pipelines.feedback import files as files_module

    rss_before = _rss_kb()
    cpu_before = time.process_time()
    outcome: dict[str, Any] = {}
    try:
        if is_cache:
            cache = cache_module.ResponseCache(None, seed_paths=[path])
            outcome = {"read": cache.n_records + cache.n_skipped_lines}
            outcome.update(accepted=cache.n_records, rejected=cache.n_skipped_lines)
        else:
            if variant == "before":
                records = files_module.parse_feedback_files({path.name: path.read_bytes()})
            else:
                from eyecatcher.datasets.feedback_files_dataset import FeedbackFilesDataset

                # Listed first: the size cap is checked before the file is read.
                listed = FeedbackFilesDataset(str(path.parent)).load()
                records = files_module.parse_feedback_files(listed)
            problems = sum("_problem" in r for r in records)
            outcome = {"read": len(records), "accepted": len(records) - problems}
            outcome["rejected"] = problems
    except BaseException as exc:  # the "before" code crashing is the finding
        outcome = {"error": f"{type(exc).__name__}: {str(exc)[:40]}"}
    cpu = time.process_time() - cpu_before
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {**outcome, "cpu_s": cpu, "rss_growth_mb": max(0, peak_kb - rss_before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-ref", default="4ce301e~1", help="git ref of the code before")
    parser.add_argument("--child", nargs=3, metavar=("CASE", "VARIANT", "PATH"))
    args = parser.parse_args()
    if args.child:
        case, variant, path = args.child
        print(json.dumps(run_child(case, variant, Path(path), args.before_ref)))
        return
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"# before = {args.before_ref}; {ROWS:,} rows per file unless said otherwise")
    header = "| case | rows in file | code | read | accepted | rejected | CPU s | peak RSS growth |"
    print(header)
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            path, n_rows = build_case(case, Path(tmp))
            for variant in ("before", "after"):
                child = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--before-ref",
                        args.before_ref,
                        "--child",
                        case,
                        variant,
                        str(path),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                    cwd=REPO,
                )
                if child.returncode != 0:
                    raise RuntimeError(f"{case} {variant} failed:\n{child.stderr[-3000:]}")
                result = json.loads(child.stdout.strip().splitlines()[-1])
                if "error" in result:
                    counts = f"**crash**: {result['error']} | - | -"
                else:
                    counts = f"{result['read']:,} | {result['accepted']:,} | {result['rejected']:,}"
                print(
                    f"| {case} | {n_rows:,} | {variant} | {counts} | {result['cpu_s']:.2f} | "
                    f"+{result['rss_growth_mb']:.0f} MB |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
