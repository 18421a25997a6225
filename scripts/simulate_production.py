"""Simulate the moderation loop in production, day by day, with the project's real pipelines.

``python scripts/simulate_production.py --days 10 --shift-day 6 --json sim.json --plot sim.png``

The project is copied to a work folder (``--workdir``, else a temporary one) with a ``sim``
configuration environment: the ``test`` environment's tiny models (``tests/conf_test``) plus the
simulation's sources and thresholds (:data:`SIM_PARAMETERS`). Day 0 generates a training set
with the demo generator (``scripts/make_demo_data.py``) plus ``--initial-traffic`` earlier
uploads and runs ``kedro run`` (the first champion). Then, every simulated day:

1. fresh synthetic traffic is drawn with the demo generator's patterns and Rekognition answers
   (``--traffic`` images; ``--prevalence`` unsafe before ``--shift-day``, ``--shifted-prevalence``
   from it on, when the images also change appearance: darker, larger, another hue);
2. ``ingestion`` indexes it and ``batch_scoring`` scores the whole traffic folder with the
   champion, as a scheduled job scoring the upload store would;
3. ``review_queue`` exports the day's ``review`` verdicts and an audit sample as Label Studio
   tasks; simulated moderators complete ``--feedback-rate`` of them with the image's true class
   and the completed project is exported in Label Studio's JSON export format into the feedback
   folder;
4. ``retrain_check`` (report only) decides; when retraining is due, ``kedro run`` retrains and
   registration's gate decides whether the champion moves (``--reset-floor-on-retrain``: with
   the registry's accuracy floor ignored for that run, see docs/registry.md).

Each pipeline runs through a :class:`~kedro.framework.session.KedroSession` of the copied
project, so whatever the pipelines do today is what the simulation measures. ``--json`` gets one
record per day (:func:`day_record`); ``--plot`` a PNG of PSI, disagreement and prevalence. The
simulated days run back to back: every timestamp the pipelines write is the wall clock's.

Exit status: 0 when every day ran (whatever the loop decided), 1 when a pipeline failed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
# The demo generator's own drawing, encoding and answer functions: the traffic looks exactly
# like the demo the first champion is trained on until the shift.
import make_demo_data as demo  # noqa: E402

logger = logging.getLogger("simulate_production")

ENV = "sim"
MODEL_NAME = "eyecatcher-moderation"
SAFE = "safe"
UNSAFE_CLASSES = [c for c in demo.CLASS_LABELS if c != SAFE]
TRAFFIC = Path("data/01_raw/traffic")
FEEDBACK = Path("data/01_raw/demo/feedback")
REPORTS = Path("data/08_reporting")
#: Label Studio user ids of the simulated moderators.
MODERATORS = (11, 12, 13)

#: The simulation's parameters, merged over the ``test`` environment's (tests/conf_test).
SIM_PARAMETERS: dict[str, Any] = {
    "ingestion": {
        "sources": [
            {"name": "demo", "uri": "data/01_raw/demo/images", "folder_labels": False},
            {"name": "traffic", "uri": str(TRAFFIC), "folder_labels": False},
        ],
        "workers": 2,
    },
    # The whole upload store, every day: what the champion is measured on is then decided by
    # the monitoring code, not by the simulation choosing a folder for it.
    "batch_scoring": {"source": str(TRAFFIC)},
    "review_queue": {"day": "all", "audit_rate": 0.1, "seed": 0},
    "retrain_check": {
        # Report only: the simulation reads retrain_decision.json.
        "fail_on_retrain": False,
        # The volume trigger is set beyond the simulated feedback volume so that the run shows
        # the quality triggers (disagreement, drift); see docs/feedback-loop.md.
        "min_new_feedback": 100_000,
        "min_items_per_class": 5,
    },
    # One tiny candidate, trained long enough (the head on cached features is cheap) that the
    # first champion is right about most of the demo's separable classes.
    "training": {"candidates": ["test_resnet"], "epochs": 60},
}


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def setup_project(workdir: Path) -> Path:
    """Copy the project's configuration into ``workdir`` with the ``sim`` environment.

    The package itself is the installed (editable) one: Kedro only checks that ``src/`` exists.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "pyproject.toml", workdir / "pyproject.toml")
    (workdir / "src").mkdir(exist_ok=True)
    shutil.copytree(ROOT / "conf", workdir / "conf", ignore=shutil.ignore_patterns("local"))
    (workdir / "conf" / "local").mkdir(exist_ok=True)
    env = workdir / "conf" / ENV
    env.mkdir()
    # One file per top-level key: Kedro refuses a key defined twice in one environment.
    remaining = dict(SIM_PARAMETERS)
    for path in sorted((ROOT / "tests" / "conf_test").glob("*.yml")):
        params = yaml.safe_load(path.read_text()) or {}
        for key in list(params):
            if key in remaining:
                params[key] = _merge(params[key], remaining.pop(key))
        (env / path.name).write_text(yaml.safe_dump(params, sort_keys=False))
    (env / "parameters_simulation.yml").write_text(yaml.safe_dump(remaining, sort_keys=False))
    for layer in ("02_intermediate", "03_primary", "04_feature", "05_model_input", "06_models",
                  "07_model_output", "08_reporting"):  # fmt: skip
        (workdir / "data" / layer).mkdir(parents=True, exist_ok=True)
    (workdir / TRAFFIC).mkdir(parents=True, exist_ok=True)  # an ingestion source from day 0
    (workdir / "mlruns").mkdir(exist_ok=True)
    return workdir


class Project:
    """Runs the copied project's pipelines in this process, one Kedro session per run."""

    def __init__(self, path: Path) -> None:
        from kedro.framework.startup import bootstrap_project

        self.path = path
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{path / 'mlruns' / 'mlflow.db'}"
        os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
        os.environ.setdefault("DO_NOT_TRACK", "1")
        os.chdir(path)
        bootstrap_project(path)
        self.seconds: dict[str, float] = {}

    def run(self, pipelines: list[str] | None = None, params: dict | None = None) -> float:
        """Run pipelines (``None``: the default ``kedro run``); returns the seconds it took."""
        import mlflow
        from kedro.framework.session import KedroSession

        start = time.perf_counter()
        try:
            with KedroSession.create(
                project_path=self.path, env=ENV, runtime_params=params or {}
            ) as session:
                session.run(pipeline_names=pipelines)
        finally:
            # kedro-mlflow leaves its run active in this process; the next session needs its own.
            while mlflow.active_run():
                mlflow.end_run()
        seconds = time.perf_counter() - start
        name = "+".join(pipelines or ["__default__"])
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        return seconds

    def load(self, name: str) -> Any:
        """A catalog entry as the pipelines see it (the verdict history, the feedback, ...)."""
        from kedro.framework.session import KedroSession

        with KedroSession.create(project_path=self.path, env=ENV) as session:
            return session.load_context().catalog.load(name)

    def report(self, name: str) -> dict[str, Any]:
        return json.loads((self.path / REPORTS / name).read_text())

    def champion_version(self) -> str | None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            return str(MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion").version)
        except MlflowException:
            return None


def _shift(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The new appearance from the shift day on: a darker, warmer, larger picture."""
    image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.45, 0.6)))
    r, g, b = image.split()
    image = Image.merge("RGB", (r, b, g))  # another hue: the classes' colours move
    side = int(demo.SIZE * 1.5)
    return image.resize((side, side), Image.Resampling.BILINEAR)


def write_traffic(
    project: Path, day: int, *, n_images: int, prevalence: float, shifted: bool, seed: int
) -> pd.DataFrame:
    """Draw one day of uploads, with their (synthetic) Rekognition answers in the seed cache.

    Returns:
        One row per image: ``path``, ``sha256``, ``true_class``.
    """
    rng = np.random.default_rng([seed, day])
    folder = project / TRAFFIC / f"day_{day:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    formats = ["JPEG"] * 7 + ["PNG", "WEBP"]
    rows, answers = [], []
    for i in range(n_images):
        unsafe = rng.random() < prevalence
        cls = str(rng.choice(UNSAFE_CLASSES)) if unsafe else SAFE
        image = demo._pattern(cls, rng)
        if shifted:
            image = _shift(image, rng)
        fmt = formats[int(rng.integers(0, len(formats)))]
        data = demo._encode(image, fmt)
        suffix = {"JPEG": ".jpg", "WEBP": ".webp"}.get(fmt, ".png")
        path = folder / f"upload_{day:02d}_{i:04d}{suffix}"
        path.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        number = 100_000 * day + i
        answers.append(
            {
                "sha256": sha,
                "min_confidence": demo.MIN_CONFIDENCE,
                "synthetic": True,
                "demo_class": cls,
                "source": "simulated-traffic",
                "received_at": pd.Timestamp.now(tz="UTC").isoformat(),
                "demo_expected_class": demo._expected_class(cls, i),
                "response": demo._response(cls, rng, i, seed, number),
            }
        )
        rows.append({"path": str(path), "sha256": sha, "true_class": cls})
    # The offline labelling reads this seed cache: traffic gets answers as a live call would.
    with (project / "data/01_raw/demo/rekognition_responses.jsonl").open("a") as handle:
        for answer in answers:
            handle.write(json.dumps(answer, sort_keys=True) + "\n")
    return pd.DataFrame(rows)


def complete_tasks(
    tasks: list[dict[str, Any]], truth: Mapping[str, str], rate: float, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Label Studio's JSON export of a project where moderators answered ``rate`` of the tasks.

    Each answered task gets one annotation choosing the image's true class, by one of
    :data:`MODERATORS`, stamped with the wall clock; the others are exported unannotated.
    """
    exported = []
    now = pd.Timestamp.now(tz="UTC")
    for task_id, task in enumerate(tasks, start=1):
        annotations = []
        if rng.random() < rate:
            stamp = (now - pd.Timedelta(seconds=len(tasks) - task_id)).isoformat()
            annotations.append(
                {
                    "id": 10_000 + task_id,
                    "completed_by": int(rng.choice(MODERATORS)),
                    "result": [
                        {
                            "id": f"r{task_id}",
                            "type": "choices",
                            "from_name": "verdict",
                            "to_name": "image",
                            "origin": "manual",
                            "value": {"choices": [truth[task["data"]["sha256"]]]},
                        }
                    ],
                    "was_cancelled": False,
                    "ground_truth": False,
                    "created_at": stamp,
                    "updated_at": stamp,
                    "lead_time": float(rng.uniform(3, 30)),
                    "task": task_id,
                }
            )
        exported.append(
            {
                "id": task_id,
                "data": task["data"],
                "annotations": annotations,
                "predictions": task["predictions"],
                "project": 1,
            }
        )
    return exported


def _psi(drift: Mapping[str, Any]) -> tuple[float | None, dict[str, float]]:
    columns = {
        name: float(column["psi"])
        for name, column in (drift.get("columns") or {}).items()
        if isinstance(column, Mapping) and column.get("psi") is not None
    }
    return (max(columns.values()) if columns else None), columns


def _disagreement(decision: Mapping[str, Any]) -> tuple[float | None, int]:
    per_class = decision.get("disagreement_per_class") or {}
    items = sum(int(row["items"]) for row in per_class.values())
    wrong = sum(int(row["disagreements"]) for row in per_class.values())
    return (wrong / items if items else None), items


def _excluded_seen(decision: Mapping[str, Any]) -> tuple[int | None, dict[str, Any] | None]:
    """What the retrain check says it left out of disagreement as the champion's training images.

    ``None`` when the decision file does not say (a retrain check that excludes nothing).
    """
    excluded = decision.get("disagreement_excluded_verdicts")
    if not isinstance(excluded, Mapping):
        return None, None
    return sum(int(v) for v in excluded.values() if isinstance(v, int | float)), dict(excluded)


def seen_by_champion(manifest: pd.DataFrame | None) -> set[str]:
    """The images the champion trained (or was calibrated) on: its train + validation split."""
    if manifest is None:
        return set()
    return set(manifest.loc[manifest["split"].isin(["train", "validation"]), "sha256"])


def day_record(
    day: int,
    *,
    shifted: bool,
    traffic: pd.DataFrame,
    project: Project,
    queue_report: Mapping[str, Any],
    answered: int,
    seen: set[str],
) -> dict[str, Any]:
    """The simulation's record of one day, from the reports the pipelines wrote."""
    decision = project.report("retrain_decision.json")
    drift = project.report("drift_report.json")
    online = project.report("monitoring_online_metrics.json")
    summary = project.report("batch_scoring_summary.json")
    psi_max, psi = _psi(drift)
    excluded, excluded_detail = _excluded_seen(decision)
    disagreement, items = _disagreement(decision)
    feedback = project.load("feedback_verdicts")
    verdicts = project.load("batch_verdicts")
    champion = decision.get("champion_version")
    own = verdicts[verdicts["model_version"].astype(str) == str(champion)]
    if "sha256" in own.columns:
        scored_shas = set(own["sha256"].dropna())
    else:  # verdict tables before the history kept paths only
        index = project.load("image_index")
        locations = index["uri"].map(os.path.abspath)
        scored_shas = set(index.loc[locations.isin(set(own["path"])), "sha256"])
    measured = set(feedback["sha256"]) & scored_shas
    overall = online.get("overall", online)
    return {
        "day": day,
        "shifted": shifted,
        "champion_version": champion,
        "retrain_due": bool(decision["retrain"]),
        "reasons": decision["reasons"],
        "psi_max": psi_max,
        "psi": psi,
        "drift_alerts": decision.get("drift_alerts", []),
        "disagreement": disagreement,
        "disagreement_items": items,
        "disagreement_per_class": decision.get("disagreement_per_class"),
        "prevalence": overall.get("prevalence") if isinstance(overall, Mapping) else None,
        "true_unsafe_share": float((traffic["true_class"] != SAFE).mean()),
        "n_traffic": len(traffic),
        # Scored in today's run; images this version scored before are skipped (incremental).
        "n_scored": int(summary["n_images"]),
        "n_already_scored": summary.get("n_already_scored"),
        "verdict_rows_total": len(verdicts),
        "queue_tasks": int(queue_report["tasks"]),
        "queue_review": int(queue_report["review"]),
        "feedback_answered": answered,
        "feedback_images_total": len(feedback),
        # Human-verdict images the champion scored that are in its own train/validation split:
        # measured on them, disagreement reads low after a retrain on their labels.
        "feedback_scored_on_training_images": len(measured & seen),
        # What the retrain check itself says it excluded, when it says so.
        "n_excluded_seen": excluded,
        "excluded_seen": excluded_detail,
        "notes": decision.get("notes", []),
    }


@contextlib.contextmanager
def _quiet_logs(verbose: bool) -> Iterator[None]:
    if verbose:
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def simulate(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the simulation; returns the day records (also written to ``args.json``)."""
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="eyecatcher-sim-")).resolve()
    if workdir.exists() and any(workdir.iterdir()):
        raise SystemExit(f"--workdir {workdir} is not empty: give a new or empty folder")
    setup_project(workdir)
    demo.generate(workdir / "data/01_raw/demo", per_class=args.initial_per_class, seed=args.seed)
    # The first champion also learns from earlier uploads (day 0), as a model trained on the
    # service's own history would: mostly safe, like the traffic. Its test split is then large
    # and traffic-like enough to be a drift reference whose re-weighted safe share is not a
    # handful of images.
    write_traffic(
        workdir,
        0,
        n_images=args.initial_traffic,
        prevalence=args.prevalence,
        shifted=False,
        seed=args.seed,
    )
    project = Project(workdir)
    print(f"workdir {workdir}", flush=True)
    with _quiet_logs(args.verbose):
        seconds = project.run()  # day 0: the first champion
    accuracy = project.report("registration_report.json")["gate"]["checks"]["test_accuracy"]
    print(
        f"day 0: first champion v{project.champion_version()}, test accuracy {accuracy:.2f} "
        f"({seconds:.0f} s)",
        flush=True,
    )
    manifest = pd.read_parquet(workdir / "data/05_model_input/split_manifest.parquet")
    seen = seen_by_champion(manifest)
    truth: dict[str, str] = {}
    rng = np.random.default_rng([args.seed, 1])
    records: list[dict[str, Any]] = []
    for day in range(1, args.days + 1):
        start = time.perf_counter()
        shifted = day >= args.shift_day
        prevalence = args.shifted_prevalence if shifted else args.prevalence
        traffic = write_traffic(
            workdir,
            day,
            n_images=args.traffic,
            prevalence=prevalence,
            shifted=shifted,
            seed=args.seed,
        )
        truth.update(zip(traffic["sha256"], traffic["true_class"], strict=True))
        with _quiet_logs(args.verbose):
            project.run(["ingestion"])
            project.run(["batch_scoring"])
            today = str((workdir / TRAFFIC / f"day_{day:02d}").resolve())
            project.run(["review_queue"])
        tasks = json.loads(
            (workdir / "data/07_model_output/review_queue/label_studio_tasks.json").read_text()
        )
        # The queue covers the whole scored store; moderators work on today's uploads.
        tasks = [t for t in tasks if str(t["data"]["path"]).startswith(today)]
        export = complete_tasks(tasks, truth, args.feedback_rate, rng)
        (workdir / FEEDBACK).mkdir(parents=True, exist_ok=True)
        (workdir / FEEDBACK / f"label-studio-day-{day:02d}.json").write_text(json.dumps(export))
        answered = sum(bool(t["annotations"]) for t in export)
        with _quiet_logs(args.verbose):
            project.run(["retrain_check"])
        queue_report = {
            "tasks": len(tasks),
            "review": sum(t["data"]["queue"] == "review" for t in tasks),
        }
        record = day_record(
            day,
            shifted=shifted,
            traffic=traffic,
            project=project,
            queue_report=queue_report,
            answered=answered,
            seen=seen,
        )
        record["retrained"] = False
        if record["retrain_due"]:
            before = project.champion_version()
            # After a known shift the new test split is harder than the one the registry's
            # accuracy floor came from; resetting the floor for one run is the operator's call
            # (docs/registry.md), made here only when asked for.
            gate = {"registration": {"gate": {"reset_floor": True}}}
            with _quiet_logs(args.verbose):
                project.run(params=gate if args.reset_floor_on_retrain else None)
            registration = project.report("registration_report.json")
            after = project.champion_version()
            record.update(
                retrained=True,
                registration_outcome=registration.get("outcome"),
                registration_gate=registration.get("gate", {}).get("summary"),
                champion_after=after,
            )
            if after != before:
                manifest = pd.read_parquet(workdir / "data/05_model_input/split_manifest.parquet")
                seen = seen_by_champion(manifest)
        record["seconds"] = round(time.perf_counter() - start, 1)
        records.append(record)
        print(
            f"day {day}{' (shifted)' if shifted else ''}: champion v{record['champion_version']}"
            f", retrain_due={record['retrain_due']}, psi_max={record['psi_max']}, "
            f"disagreement={record['disagreement']}, prevalence={record['prevalence']}, "
            f"{record['seconds']:.0f} s; reasons: {record['reasons']}",
            flush=True,
        )
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=2, default=str))
    return records


def plot(records: list[dict[str, Any]], shift_day: int, out: Path, caption: str) -> None:
    """PSI, disagreement and prevalence per day, the shift and the retrains marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [r["day"] for r in records]

    def series(key: str) -> list[float]:
        return [np.nan if r[key] is None else float(r[key]) for r in records]

    fig, axes = plt.subplots(3, 1, figsize=(8, 7.5), sharex=True)
    panels = [
        ("psi_max", "PSI (max over columns)", 0.25, "alert at 0.25"),
        ("disagreement", "disagreement with humans", 0.2, "max_disagreement_rate"),
        ("prevalence", "prevalence (online metric)", None, None),
    ]
    for ax, (key, label, line, line_label) in zip(axes, panels, strict=True):
        ax.plot(days, series(key), marker="o", label=label)
        if key == "prevalence":
            ax.plot(
                days, series("true_unsafe_share"), marker="s", ls="--", label="true unsafe share"
            )
        if line is not None:
            ax.axhline(line, color="grey", ls=":", label=line_label)
        ax.axvline(shift_day - 0.5, color="tab:red", ls="--", lw=1)
        for r in records:
            if r["retrain_due"]:
                ax.axvspan(r["day"] - 0.4, r["day"] + 0.4, color="tab:orange", alpha=0.15)
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("day (red: shift starts; orange: retrain due)")
    axes[-1].set_xticks(days)
    fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--shift-day", type=int, default=6, help="first day of the shift")
    parser.add_argument("--json", type=Path, help="write the day records here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the run here")
    parser.add_argument("--workdir", type=Path, help="empty folder for the copied project")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--traffic", type=int, default=100, help="uploads per day")
    parser.add_argument("--initial-per-class", type=int, default=40, help="demo set, day 0")
    parser.add_argument("--initial-traffic", type=int, default=400, help="uploads of day 0")
    parser.add_argument("--prevalence", type=float, default=0.15, help="unsafe share before")
    parser.add_argument("--shifted-prevalence", type=float, default=0.4, help="from the shift")
    parser.add_argument("--feedback-rate", type=float, default=0.8, help="tasks answered")
    parser.add_argument(
        "--reset-floor-on-retrain",
        action="store_true",
        help="retrain with registration.gate.reset_floor=true (the floor ignored for that run)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the pipelines' logs")
    args = parser.parse_args(argv)
    if args.days < 1 or args.shift_day < 1:
        parser.error("--days and --shift-day must be >= 1")
    # Resolved before the simulation changes into the work folder.
    for name in ("json", "plot", "workdir"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    if not args.verbose:
        os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars: one per node and run
    started = time.perf_counter()
    try:
        records = simulate(args)
    except Exception as exc:  # a pipeline failed: say which day and why, exit 1
        logger.exception("simulation failed: %s", exc)
        return 1
    total = time.perf_counter() - started
    print(f"{len(records)} day(s) simulated in {total:.0f} s", flush=True)
    if args.plot:
        caption = (
            f"simulate_production.py --days {args.days} --shift-day {args.shift_day} "
            f"--seed {args.seed} --traffic {args.traffic} ({pd.Timestamp.now(tz='UTC'):%Y-%m-%d})"
        )
        plot(records, args.shift_day, args.plot, caption)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
