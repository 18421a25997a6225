"""`kedro run` exit codes and MLflow run status, in a temporary project (docs/configuration.md).

A refused gate, a due retrain and a configuration error each exit with their own code, and the
MLflow run of a refusal or a due retrain is FINISHED with its ``eyecatcher.outcome`` tag, not
FAILED. The commands run as a user runs them (``python -m kedro run``), so the project's
``run`` command (eyecatcher.cli) is what Kedro picks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from eyecatcher.images import sha256_bytes
from eyecatcher.outcomes import OUTCOME_TAG, DryRunDone, GateRefused, RetrainDue, outcome_of

MODEL = "eyecatcher-moderation"


def _kedro_run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--env", "test", *args],
        cwd=project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    (project / f"kedro-run-{result.returncode}.log").write_text(result.stdout + result.stderr)
    return result


def _last_run(client: MlflowClient):
    """The latest ``kedro run``'s own run (candidate runs are its children)."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, order_by=["attributes.start_time DESC"])
    return next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_refused_gate_due_retrain_and_bad_configuration_exit_with_their_codes(
    kedro_project: Path,
) -> None:
    client = MlflowClient()

    # Train and register a champion on the demo: ok.
    first = _kedro_run(kedro_project)
    assert first.returncode == 0, first.stderr[-4000:]
    assert _last_run(client).data.tags[OUTCOME_TAG] == "ok"
    champion = client.get_model_version_by_alias(MODEL, "champion")

    # Re-gate under a bar nobody passes, with CI's setting: refused, exit 3, run FINISHED.
    refused = _kedro_run(
        kedro_project,
        "--pipelines",
        "registration",
        "--params",
        "registration.gate.min_test_accuracy=2.0,registration.gate.fail_run_on_failure=true",
    )
    assert refused.returncode == GateRefused.exit_code == 3, refused.stderr[-4000:]
    assert "gate_refused (exit code 3)" in refused.stderr
    assert "Traceback" not in refused.stderr
    run = _last_run(client)
    assert (run.info.status, run.data.tags[OUTCOME_TAG]) == ("FINISHED", "gate_refused")
    assert "FAILED" not in run.data.tags["mlflow.runName"]
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion.version

    # The champion scores a batch; one moderator verdict arrives after its registration.
    assert _kedro_run(kedro_project, "--pipelines", "batch_scoring").returncode == 0
    feedback = kedro_project / "data" / "01_raw" / "demo" / "feedback"
    feedback.mkdir(parents=True, exist_ok=True)
    image = next(iter(sorted((kedro_project / "data" / "01_raw" / "demo" / "images").rglob("*.*"))))
    stamp = pd.Timestamp.now(tz="UTC").isoformat()
    (feedback / "verdicts.csv").write_text(
        "image,verdict,reviewer,timestamp,kind,note\n"
        f"{sha256_bytes(image.read_bytes())},safe,mod-0,{stamp},review,exit-code test\n"
    )
    due = _kedro_run(
        kedro_project,
        "--pipelines",
        "retrain_check",
        "--params",
        "retrain_check.min_new_feedback=1",
    )
    assert due.returncode == RetrainDue.exit_code == 4, due.stderr[-4000:]
    assert "retrain_due (exit code 4)" in due.stderr
    run = _last_run(client)
    assert (run.info.status, run.data.tags[OUTCOME_TAG]) == ("FINISHED", "retrain_due")

    bad = _kedro_run(
        kedro_project,
        "--pipelines",
        "retrain_check",
        "--params",
        "retrain_check.min_new_feedback=0",
    )
    assert bad.returncode == 2, bad.stderr[-4000:]
    assert (
        "bad_configuration (exit code 2): retrain_check.min_new_feedback must be >= 1" in bad.stderr
    )
    run = _last_run(client)
    assert (run.info.status, run.data.tags[OUTCOME_TAG]) == ("FAILED", "bad_configuration")


def test_outcome_of_maps_exceptions_and_their_causes_to_codes() -> None:
    from kedro.config import MissingConfigException

    from eyecatcher.outcomes import ConfigurationError

    class Refusal(GateRefused):
        pass

    assert outcome_of(Refusal("no")) == ("gate_refused", 3)
    assert outcome_of(RetrainDue("due")) == ("retrain_due", 4)
    assert outcome_of(DryRunDone("estimate")) == ("dry_run", 5)
    assert outcome_of(ConfigurationError("bad")) == ("bad_configuration", 2)
    assert outcome_of(MissingConfigException("none")) == ("bad_configuration", 2)
    assert outcome_of(RuntimeError("crash")) == ("failed", 1)
    # Kedro or a dataset may wrap the node's exception: the cause decides.
    try:
        try:
            raise RetrainDue("due")
        except RetrainDue as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert outcome_of(outer) == ("retrain_due", 4)
