"""deploy/airflow/generate_dag.sh turns the default pipeline into an Airflow DAG (kedro-airflow)
in which every task resumes one MLflow run. Checked here as Python source; test_airflow_run.py
has Airflow run it."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("kedro_airflow") is None,
    reason="kedro-airflow is not installed (it is in the dev extra: pip install -e '.[dev]')",
)


def test_generated_dag_runs_each_candidate_as_a_task_in_one_mlflow_run(
    kedro_project: Path, tmp_path: Path
) -> None:
    shutil.copytree(REPO / "deploy", kedro_project / "deploy")
    kedro = shutil.which("kedro", path=str(Path(sys.executable).parent))
    assert kedro is not None
    env = {**os.environ, "KEDRO": kedro, "PYTHONPATH": str(REPO)}
    dags = tmp_path / "dags"
    result = subprocess.run(
        ["bash", str(kedro_project / "deploy" / "airflow" / "generate_dag.sh"), "test", str(dags)],
        cwd=kedro_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    source = (dags / "eyecatcher_test_dag.py").read_text()
    tree = ast.parse(source)  # valid Python, whatever Airflow version runs it
    task_ids = {
        call.args[0].value if call.args else call.keywords[0].value.value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and getattr(call.func, "id", None) == "task"
        and (call.args or call.keywords)
    }
    # One task per candidate namespace, one per other node, and the run-creating task first.
    assert {"create-mlflow-run", "test-resnet", "test-vit", "register-model"} <= task_ids
    assert "train-candidate" not in task_ids
    assert 'child_env["MLFLOW_RUN_ID"] = mlflow_run_id' in source
    # Tasks run Kedro in the project's own Python: the DAG file imports nothing of the project,
    # so Airflow's environment needs none of its dependencies.
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "os", "subprocess", "sys", "datetime", "pathlib", "airflow"}
    assert 'tasks["split-dataset"] >> tasks["test-resnet"]' in source
    assert 'env = "test"' in source
