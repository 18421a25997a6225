"""Hostile image files: CPU seconds and peak memory per file, before and after issue #24.

Each class of file is decoded for the model (``decode_for_model``, the served model's per-row
work; a refused row never reaches a forward pass) with a real deployment's limits (the
defaults of :class:`~eyecatcher.images.DecodeLimits`: 50 Mpx, 25:1, 1,000 frames, 250 Mpx
decode budget) and a 448 px decode side (a 224 px model). Every measurement runs in a fresh
child process, so peak RSS growth (the peak resident size, reset once the file's bytes are
read, minus the resident size then) belongs to that file alone, and Pillow's global pixel limit
is whatever the code under test sets (the code before this change left Pillow's default).

"Before" is the ``images.py`` of ``--before-ref`` (the commit before this change), loaded from
git into a temporary module. Where it would run for minutes (the issue's GIF composites its
49 Mpx canvas for each of 1,000 frames while counting them), it is measured on the same canvas
with 20 frames and scaled to 1,000 (marked "x50").

A second table checks that the frame counts read from headers or indexes (APNG acTL, WebP
demux, TIFF page headers, HEIF boxes, the GIF block walk) cost nothing like decoding the frames.

Run::

    .venv/bin/python benchmarks/bench_hostile_inputs.py
    .venv/bin/python benchmarks/bench_hostile_inputs.py --before-ref 808c230~1
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.image_factory builds the files

MIN_SIDE = 448
MB = 1024 * 1024
CHILD_TIMEOUT_S = 300


def _cases() -> list[tuple[str, Callable[[], bytes], Callable[[], bytes] | None, int, int]]:
    """(name, file, file measured "before" when the real one would take minutes, scale, rows)."""
    import eyecatcher.images  # noqa: F401  (registers the HEIF plugin the builders save with)
    from tests import image_factory as f

    issue_gif = f.gif_big_canvas_many_frames
    short_gif = lambda: f.gif_big_canvas_many_frames(frames=20)  # noqa: E731
    bomb = lambda: f.encode(f.Image.new("1", (12_000, 12_000)), "PNG")  # noqa: E731
    return [
        ("GIF 7000x7000, 1,000 1x1 frames (issue)", issue_gif, short_gif, 50, 1),
        ("GIF 100x100 grown to 9000x9000 at frame 1", f.gif_growing_canvas, None, 1, 1),
        ("TIFF, page 2 20000x40 (500:1)", f.tiff_with_later_page, None, 1, 1),
        (
            "TIFF, page 2 8000x8000 (64 Mpx)",
            lambda: f.tiff_with_later_page((8000, 8000)),
            None,
            1,
            1,
        ),
        ("MPO, image 2 4000x100 (40:1)", f.mpo_with_later_image, None, 1, 1),
        ("HEIF, image 2 4000x96 (42:1)", f.heif_with_later_image, None, 1, 1),
        ("APNG 7000x7000, 1,000 frames", f.apng_big_canvas_many_frames, None, 1, 1),
        ("APNG 2x2, 1,001 frames", lambda: f.animation_many_frames("PNG"), None, 1, 1),
        ("WebP 2x2, 1,001 frames", lambda: f.animation_many_frames("WEBP"), None, 1, 1),
        ("PNG bomb 12000x12000 (144 Mpx)", bomb, None, 1, 1),
        ("GIF 7000x7000, 5 frames (within limits)", lambda: issue_gif(frames=5), None, 1, 1),
        # Before: one row measured (64 rows of minutes each would run for hours), times 64.
        ("64-row request of the issue GIF", issue_gif, short_gif, 50 * 64, 64),
    ]


# -- one measurement, in a child process --------------------------------------------------------


def _resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> None:
    """Start the peak resident size (VmHWM) afresh from now (Linux >= 4.0).

    ``ru_maxrss`` cannot be used: Linux carries it over from the parent across fork and exec,
    so every child reported the benchmark's own peak while it built the largest file.
    """
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(module_path: str, data_path: str, rows: int) -> None:
    if module_path == "new":
        from eyecatcher import images
    else:
        spec = importlib.util.spec_from_file_location("images_before", module_path)
        images = importlib.util.module_from_spec(spec)
        sys.modules["images_before"] = images  # dataclasses look their module up there
        spec.loader.exec_module(images)
    from PIL import Image

    # Every Pillow plugin (and the AVIF/HEIF libraries) is loaded before the baseline: the first
    # TIFF or MPO opened would otherwise count ~60 MB of shared libraries as the file's memory.
    Image.init()
    data = Path(data_path).read_bytes()
    baseline = _resident_bytes()
    _reset_peak()
    started = time.process_time()
    outcomes = set()
    for _ in range(rows):
        try:
            frames = images.decode_for_model(data, min_side=MIN_SIDE)
            outcomes.add(f"accepted ({len(frames)} frames)")
        except images.ImageRejectedError as exc:
            outcomes.add(exc.reason)
    cpu = time.process_time() - started
    peak = _peak_bytes() - baseline
    print(json.dumps({"cpu_s": cpu, "peak_growth": max(0, peak), "outcome": sorted(outcomes)}))


def _measure(module: str, data: bytes, rows: int, workdir: Path) -> dict:
    path = workdir / f"input-{time.monotonic_ns()}"
    path.write_bytes(data)
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--child", module, str(path), str(rows)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"cpu_s": float("inf"), "peak_growth": 0, "outcome": ["stopped"]}
    finally:
        path.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"measurement failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- frame counts from headers ------------------------------------------------------------------


def _header_counts() -> list[tuple[str, float, float, int]]:
    """(file, CPU s to count the frames as decoding does, CPU s per decoded frame, count)."""
    from PIL import Image

    from eyecatcher.images import _frame_canvases, gif_frame_canvases
    from tests import image_factory as f

    rows = []
    files = {
        "GIF 7000x7000, 1,000 frames": f.gif_big_canvas_many_frames(),
        "APNG 7000x7000, 1,000 frames": f.apng_big_canvas_many_frames(),
        "WebP 3000x3000, 9 frames": f.webp_big_canvas(side=3000, frames=9),
        "TIFF 1,000 pages 8x8": f.many_page_tiff(1000),
        "HEIF, 2 images": f.heif_with_later_image(),
    }
    Image.init()  # the first open of a format would otherwise count Pillow's plugin set-up
    for name, data in files.items():
        timings = []
        for _ in range(3):  # the best of three: one-off set-up inside a format's first open
            started = time.process_time()
            image = Image.open(io.BytesIO(data))
            count = len(
                gif_frame_canvases(data, 1000)
                if image.format == "GIF"
                else _frame_canvases(image, data, 1000)
            )
            timings.append(time.process_time() - started)
        counted = min(timings)
        # What counting by decoding would cost: the first few frames decoded, per frame.
        image = Image.open(io.BytesIO(data))
        decoded = min(count, 5)
        started = time.process_time()
        for frame in range(decoded):
            image.seek(frame)
            image.load()
        rows.append((name, counted, (time.process_time() - started) / decoded, count))
    return rows


def _cpu_model() -> str:
    """The CPU's model name (what ``lscpu`` shows), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _seconds(value: float) -> str:
    return "did not finish" if value == float("inf") else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-ref", default="808c230~1", help="git ref of the code before")
    parser.add_argument(
        "--only", choices=("files", "counts"), help="one of the two tables (default: both)"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]))
        return
    if args.only != "counts":
        _files_table(args.before_ref)
    if args.only != "files":
        _counts_table()


def _files_table(before_ref: str) -> None:
    """Outcome, CPU seconds and peak RSS growth per file, before and after."""
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        workdir = Path(tmp)
        before = workdir / "images_before.py"
        before.write_text(
            subprocess.run(
                ["git", "show", f"{before_ref}:src/eyecatcher/images.py"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        print(
            f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · "
            f"{_cpu_model()}, {os.cpu_count()} CPUs · load "
            f"{os.getloadavg()[0]:.1f} · before = {before_ref}\n"
        )
        print(
            "| file | before: outcome | before: CPU s | before: peak RSS growth | "
            "after: outcome | after: CPU s | after: peak RSS growth |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, make, make_before, scale, rows in _cases():
            data = make()
            old_rows = 1 if make_before else rows
            old = _measure(str(before), make_before() if make_before else data, old_rows, workdir)
            new = _measure("new", data, rows, workdir)
            old_cpu = _seconds(old["cpu_s"])
            if scale != 1 and old["cpu_s"] != float("inf"):
                old_cpu = f"~{old['cpu_s'] * scale:,.0f} (20 frames x{scale})"
            print(
                f"| {name} ({len(data):,} B) | {', '.join(old['outcome'])} | {old_cpu} | "
                f"{old['peak_growth'] / MB:+.0f} MB | {', '.join(new['outcome'])} | "
                f"{_seconds(new['cpu_s'])} | {new['peak_growth'] / MB:+.0f} MB |"
            )


def _counts_table() -> None:
    """What counting the frames costs, against decoding one of them."""
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {_cpu_model()} · load "
        f"{os.getloadavg()[0]:.1f}\nFrame counts without decoding (CPU seconds):\n"
    )
    print("| file | frames | counting them (as decode_for_model does) | decoding one frame |")
    print("|---|---|---|---|")
    for name, counted, per_frame, count in _header_counts():
        print(f"| {name} | {count} | {counted:.4f} | {per_frame:.4f} |")


if __name__ == "__main__":
    main()
