"""The default pipeline run as separate task processes lands in one MLflow parent run.

This is what an orchestrator does: one ``kedro run --nodes ...`` process per task, each after
the one it depends on, with ``MLFLOW_RUN_ID`` from ``python -m eyecatcher.parent_run``. The
cuts go through the handoffs that used to stay in memory (the labelling nodes' results and
statistics, the quantization attempt), so each task reads what the previous one persisted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from eyecatcher.parent_run import ORCHESTRATED_TAG, main

REPO = Path(__file__).resolve().parents[2]
MODEL = "eyecatcher-moderation"

# A task starts at the first node (in Kedro's topological order) whose short name is listed.
TASK_STARTS = ("assign_classes", "benchmark_candidate")


def _run(args: list[str], project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result


def _tasks(project: Path) -> list[list[str]]:
    """The default pipeline's nodes in topological order, cut before each ``TASK_STARTS``."""
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)  # fresh pipeline registry: the candidates of the test env
    tasks: list[list[str]] = [[]]
    starts = list(TASK_STARTS)
    for node in pipelines["__default__"].nodes:
        if starts and node.name.rsplit(".", 1)[-1] == starts[0]:
            starts.pop(0)
            tasks.append([])
        tasks[-1].append(node.name)
    assert not starts, f"nodes not found: {starts}"
    return tasks


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_separate_task_processes_share_one_parent_run(
    kedro_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KEDRO_ENV", "test")
    tasks = _tasks(kedro_project)
    env = {**os.environ, "PYTHONPATH": str(REPO), "KEDRO_ENV": "test"}
    env.pop("MLFLOW_RUN_ID", None)

    assert main(["--env", "test", "--project-path", str(kedro_project)]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    env["MLFLOW_RUN_ID"] = run_id
    for nodes in tasks:
        _run(["kedro", "run", "--env", "test", "--nodes", ",".join(nodes)], kedro_project, env)

    data = kedro_project / "data"
    assert (data / "02_intermediate" / "rekognition_results.parquet").is_file()
    assert (data / "08_reporting" / "test_resnet" / "quantization_attempt.json").is_file()

    client = MlflowClient()
    experiment = mlflow.get_experiment_by_name("eyecatcher")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [run_id]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[ORCHESTRATED_TAG] == "true"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run_id]
    assert sorted(r.data.tags["candidate"] for r in children) == ["test_resnet", "test_vit"]
    # Every task logged into the same run: ingestion's, labelling's and quantization's
    # metrics, the registration report.
    metrics = parent.data.metrics
    assert any(name.startswith("ingestion.") for name in metrics)
    assert any(name.startswith("labelling.") for name in metrics)
    assert any(name.startswith("quantization.") for name in metrics)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"registration", "quantization", "labelling", "splitting"} <= artifacts

    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id == run_id
