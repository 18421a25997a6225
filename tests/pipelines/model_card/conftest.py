"""One whole default `kedro run` (env ``test``, tiny models) shared by the model card and
reviewer-experience tests: running it once keeps the suite fast."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from eyecatcher import candidates
from tests.conftest import REPO, copy_demo

#: The test env's 2 safe test images cannot meet a 1% FPR target within the gate's tolerance;
#: these tests need a registered version, not a meaningful gate (tested in registration).
GATE_FOR_A_REGISTERED_VERSION = {"registration": {"gate": {"fpr_tolerance": 1.0}}}


@pytest.fixture(scope="package")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project copy after a default `kedro run` that registered version 1; yields its path.

    MLflow points at the copy's sqlite store for the whole package.
    """
    project = tmp_path_factory.mktemp("model_card") / "project"
    project.mkdir()
    shutil.copy2(REPO / "pyproject.toml", project / "pyproject.toml")
    (project / "src").mkdir()
    shutil.copytree(REPO / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    shutil.copytree(REPO / "tests" / "conf_test", project / "conf" / "test")
    for layer in ("02_intermediate", "03_primary", "04_feature", "05_model_input"):
        (project / "data" / layer).mkdir(parents=True)
    for layer in ("06_models", "07_model_output", "08_reporting"):
        (project / "data" / layer).mkdir(parents=True)
    copy_demo(project / "data" / "01_raw" / "demo", per_class=8)
    (project / "mlruns").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(project)
        patch.setattr(candidates, "_captured", {})
        bootstrap_project(project)
        with KedroSession.create(
            project_path=project, env="test", runtime_params=GATE_FOR_A_REGISTERED_VERSION
        ) as session:
            session.run()
        while mlflow.active_run() is not None:
            mlflow.end_run()
        yield project
