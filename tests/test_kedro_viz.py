"""`kedro viz build` produces the static pipeline site, with layers and every pipeline, and
never phones home (telemetry stays off)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("kedro_viz") is None,
    reason="kedro-viz is not installed (it is in the dev extra: pip install -e '.[dev]')",
)


def test_kedro_viz_build_produces_the_static_site(kedro_project: Path) -> None:
    kedro = shutil.which("kedro", path=str(Path(sys.executable).parent))
    assert kedro is not None
    env = {**os.environ, "KEDRO_ENV": "test", "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    result = subprocess.run(
        [kedro, "viz", "build"],
        cwd=kedro_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, output
    build = kedro_project / "build"
    assert (build / "index.html").is_file(), output
    assert (build / "index.html").stat().st_size > 0
    main = json.loads((build / "api" / "main").read_text())
    pipelines = {p["id"] for p in main["pipelines"]}
    assert {"__default__", "training", "registration", "model_card", "serving"} <= pipelines
    assert {p.name for p in (build / "api" / "pipelines").iterdir()} == pipelines
    layers = {"raw", "intermediate", "primary", "feature", "model_input", "models", "model_output"}
    assert layers | {"reporting"} <= set(main["layers"])
    tasks = {n["name"] for n in main["nodes"] if n["type"] == "task"}
    assert {"train_candidate", "explain_candidate", "render_model_card"} <= {
        name.rsplit(".", 1)[-1] for name in tasks
    }
    tags = {t["id"] for t in main["tags"]}
    assert {"training", "candidate.test_resnet", "candidate.test_vit", "model_card"} <= tags
