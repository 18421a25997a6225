"""One MLflow run for a pipeline split into tasks: create it, then hand its id to every task.

An orchestrator (Airflow, Argo, a shell script) runs the default pipeline as several
``kedro run --nodes ...`` processes. Each ``kedro run`` would open its own MLflow run; with
``MLFLOW_RUN_ID`` set, kedro-mlflow's hook (``tracking.run.id: null`` in ``conf/base/mlflow.yml``)
calls ``mlflow.start_run(run_id=None)``, which resumes the run named by ``MLFLOW_RUN_ID`` instead.
Every task therefore logs into one parent run, and training's candidate runs nest under it.

MLflow removes ``MLFLOW_RUN_ID`` from the process environment once it has resumed the run, so
the candidate runs that training opens later in the same process are new child runs, not the
parent again. Each task ends the run (``FINISHED``, or ``FAILED`` on an error); the next task
sets it back to ``RUNNING``, so the run's final status is that of the last task.

Usage (from the project root)::

    export MLFLOW_RUN_ID=$(python -m eyecatcher.parent_run --env base)
    kedro run --nodes ingest_images,...      # task 1
    kedro run --nodes assign_classes,...     # task 2, same run
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from eyecatcher.registry.client import registry_client

logger = logging.getLogger(__name__)

#: Tag that marks a run opened for an orchestrated pipeline.
ORCHESTRATED_TAG = "eyecatcher.orchestrated"


def create_parent_run(
    project_path: Path, env: str | None = None, run_name: str = "orchestrated"
) -> str:
    """Create the parent run in the experiment and tracking store the project is configured for.

    The configuration is read exactly as ``kedro run --env <env>`` reads it (kedro-mlflow's
    hook sets the tracking URI and the experiment when the context is created), so the tasks
    that resume the run find it in the same store and experiment.

    Args:
        project_path: The Kedro project's root.
        env: The configuration environment the tasks run with (``None``: Kedro's default).
        run_name: The run's name until a task renames it.

    Returns:
        The new run's id, to export as ``MLFLOW_RUN_ID`` for every task.
    """
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_path)
    with KedroSession.create(project_path=project_path, env=env) as session:
        context = session.load_context()
        experiment_name = context.config_loader["mlflow"]["tracking"]["experiment"]["name"]
    experiment = mlflow.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise RuntimeError(f"MLflow experiment {experiment_name!r} was not created.")
    client = registry_client()
    run = client.create_run(
        experiment.experiment_id, run_name=run_name, tags={ORCHESTRATED_TAG: "true"}
    )
    logger.info(
        "Created MLflow run %s in experiment %r for an orchestrated pipeline",
        run.info.run_id,
        experiment_name,
    )
    return run.info.run_id


def main(argv: list[str] | None = None) -> int:
    """Command line: print the id of a new parent run on stdout (logs go to stderr)."""
    parser = argparse.ArgumentParser(
        prog="python -m eyecatcher.parent_run",
        description="Create the MLflow run that every task of an orchestrated pipeline resumes "
        "(export it as MLFLOW_RUN_ID).",
    )
    parser.add_argument("--env", default=None, help="Kedro configuration environment")
    parser.add_argument("--project-path", type=Path, default=Path.cwd())
    parser.add_argument("--run-name", default="orchestrated")
    args = parser.parse_args(argv)
    run_id = create_parent_run(args.project_path.resolve(), args.env, args.run_name)
    sys.stdout.write(run_id + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
