"""scripts/simulate_production.py, reduced: two days, tiny traffic, the shift on day 2.

The script runs the real pipelines (ingestion, batch scoring, review queue, feedback from a
Label Studio export, retrain check, and ``kedro run`` when a retrain is due) in its own copy of
the project; this checks that it runs and that its records say what happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {"day", "retrain_due", "reasons", "psi_max", "disagreement", "prevalence"}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_short_simulation_writes_one_record_per_day_and_a_plot(tmp_path: Path) -> None:
    out, png = tmp_path / "sim.json", tmp_path / "sim.png"
    command = [
        sys.executable,
        str(REPO / "scripts" / "simulate_production.py"),
        *("--days", "2", "--shift-day", "2", "--traffic", "16"),
        *("--initial-per-class", "12", "--initial-traffic", "24"),
        *("--workdir", str(tmp_path / "work"), "--json", str(out), "--plot", str(png)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=880, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    records = json.loads(out.read_text())
    assert [r["day"] for r in records] == [1, 2]
    assert [r["shifted"] for r in records] == [False, True]
    for record in records:
        assert set(record) >= REQUIRED
        assert isinstance(record["retrain_due"], bool)
        assert isinstance(record["reasons"], list)
        assert record["retrain_due"] == bool(record["reasons"])
        assert record["n_traffic"] == 16
        # The whole upload store is scored: today's uploads at least.
        assert record["n_scored"] >= 16
        assert 0 <= record["feedback_answered"] <= record["queue_tasks"]
        assert record["disagreement"] is None or 0.0 <= record["disagreement"] <= 1.0
        assert record["psi_max"] is None or record["psi_max"] >= 0.0
        assert record["champion_version"] is not None
    # Feedback accumulates: every answered task of both days is a human verdict.
    assert records[1]["feedback_images_total"] == sum(r["feedback_answered"] for r in records)
    work = tmp_path / "work"
    exports = sorted((work / "data/01_raw/demo/feedback").glob("label-studio-day-*.json"))
    assert [p.name for p in exports] == ["label-studio-day-01.json", "label-studio-day-02.json"]
    assert "2 day(s) simulated" in done.stdout
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 400
