"""`mlflow models generate-dockerfile` packages the registered champion (docs/scaling.md).

Building the image needs Docker, which test machines lack: the test generates the build
context and checks that it serves the champion's model, named and versioned as registered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from mlflow import MlflowClient

from tests.pipelines.serving.tiny_champion import MODEL_NAME, tiny_registry


def test_generated_dockerfile_serves_the_registered_champion(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    with tiny_registry(tmp_path / "registry") as registry:
        champion = MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion")
        out = tmp_path / "docker"
        result = subprocess.run(
            [sys.executable, "-m", "mlflow", "models", "generate-dockerfile",
             "-m", f"models:/{MODEL_NAME}@champion", "-d", str(out)],
            cwd=registry.root,
            env={**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri},
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    dockerfile = (out / "Dockerfile").read_text()
    assert "COPY model_dir /opt/ml/model" in dockerfile
    assert "C._serve(" in dockerfile  # the image's entry point is MLflow's scoring server
    mlmodel = yaml.safe_load((out / "model_dir" / "MLmodel").read_text())
    assert "python_function" in mlmodel["flavors"]
    assert mlmodel["run_id"] == champion.run_id
    config = json.loads((out / "model_dir" / "artifacts" / "serving_config.json").read_text())
    assert (config["model_name"], config["model_version"]) == (MODEL_NAME, str(champion.version))
    requirements = (out / "model_dir" / "requirements.txt").read_text().split()
    assert any(line.startswith("torch==") for line in requirements)
