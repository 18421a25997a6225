"""Airflow itself runs the generated DAG (``airflow dags test``) on the demo slice.

Airflow lives in its own virtual environment, never in the project's constraints: the DAG's
tasks run Kedro in child processes of the project's Python (``EYECATCHER_PYTHON``), so the two
never share dependencies. ``.ci/run`` creates that environment before ``make test``; elsewhere
create it the same way or point ``EYECATCHER_AIRFLOW_VENV`` at one, or the test is skipped::

    python3 -m venv ~/.cache/eyecatcher-airflow
    ~/.cache/eyecatcher-airflow/bin/pip install "apache-airflow==3.3.*"
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_VENV = Path(
    os.environ.get("EYECATCHER_AIRFLOW_VENV", Path.home() / ".cache" / "eyecatcher-airflow")
)
AIRFLOW = AIRFLOW_VENV / "bin" / "airflow"
MODEL = "eyecatcher-moderation"

pytestmark = pytest.mark.skipif(
    not AIRFLOW.exists(),
    reason=(
        f"no Airflow virtualenv at {AIRFLOW_VENV} (.ci/run creates it: python3 -m venv "
        f"{AIRFLOW_VENV} && {AIRFLOW_VENV}/bin/pip install 'apache-airflow==3.3.*'; or set "
        "EYECATCHER_AIRFLOW_VENV)"
    ),
)


def _airflow(args: list[str], env: dict[str, str], timeout: int, log: Path) -> None:
    """Run the Airflow CLI; its output goes to ``log``, whose end a failure shows."""
    with log.open("w") as handle:
        try:
            done = subprocess.run(
                [str(AIRFLOW), *args],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"airflow {args[:2]} ran over {timeout} s: {log.read_text()[-6000:]}")
    assert done.returncode == 0, log.read_text()[-8000:]


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_airflow_dags_test_runs_the_pipeline_in_dependency_order_in_one_mlflow_run(
    kedro_project: Path, tmp_path: Path
) -> None:
    shutil.copytree(REPO / "deploy", kedro_project / "deploy")
    # kedro-airflow's template settings for this environment: a failed task is retried once at
    # once (the template's default waits 5 minutes, longer than a test should).
    (kedro_project / "conf" / "test" / "airflow.yml").write_text(
        "default:\n  retries: 1\n  retry_delay: 0\n"
    )
    kedro = shutil.which("kedro", path=str(Path(sys.executable).parent))
    assert kedro is not None
    project_env = {
        **os.environ,
        "KEDRO": kedro,
        "PYTHONPATH": str(REPO),
        "KEDRO_DISABLE_TELEMETRY": "1",
    }
    project_env.pop("MLFLOW_RUN_ID", None)
    dags = tmp_path / "dags"
    generated = subprocess.run(
        ["bash", str(kedro_project / "deploy/airflow/generate_dag.sh"), "test", str(dags)],
        cwd=kedro_project,
        env=project_env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert generated.returncode == 0, generated.stderr[-3000:]
    source = (dags / "eyecatcher_test_dag.py").read_text()
    dag_id = re.search(r'dag_id="([^"]+)"', source).group(1)
    edges = re.findall(r'tasks\["([^"]+)"\] >> tasks\["([^"]+)"\]', source)
    assert edges, "the generated DAG has no dependencies: nothing to check"

    home = tmp_path / "airflow"
    env = {
        # Airflow's own environment: its venv first on PATH, none of the project's.
        "PATH": f"{AIRFLOW_VENV / 'bin'}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        # What the tasks need: the project, its Python, its registry.
        "EYECATCHER_PROJECT": str(kedro_project),
        "EYECATCHER_PYTHON": sys.executable,
        "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "KEDRO_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
    }
    _airflow(["db", "migrate"], env, timeout=600, log=tmp_path / "airflow-db-migrate.log")
    _airflow(["dags", "test", dag_id, "2026-12-07"], env, 2400, tmp_path / "airflow-dags-test.log")

    # Every task succeeded, each after the tasks it depends on.
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, state, start_date, end_date FROM task_instance WHERE dag_id = ?",
            (dag_id,),
        ).fetchall()
    tasks = {task_id: (state, start, end) for task_id, state, start, end in rows}
    assert {state for state, _, _ in tasks.values()} == {"success"}, tasks
    for upstream, downstream in edges:
        assert tasks[upstream][2] <= tasks[downstream][1], (upstream, downstream)
    assert {"create-mlflow-run", "test-resnet", "test-vit", "register-model"} <= set(tasks)

    # One MLflow run for the DAG run, and the champion registered from it.
    client = MlflowClient()
    experiment = mlflow.get_experiment_by_name("eyecatcher")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    run_id = parents[0].info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run_id]
    assert sorted(r.data.tags["candidate"] for r in children) == ["test_resnet", "test_vit"]
    assert client.get_model_version_by_alias(MODEL, "champion").run_id == run_id
