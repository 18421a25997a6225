"""Which code an in-process scorer runs, shown with a model registered from an "older commit".

The model's shipped copy of ``serving_model/model.py`` carries a marker the repository's copy
lacks (as a version registered before a later change would). In this process, where
``eyecatcher`` is already imported, the scorer runs the repository's code; a fresh process,
as the scoring server is, runs the shipped copy. docs/registry.md says exactly this.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from PIL import Image

from eyecatcher.serving import in_process
from eyecatcher.serving.in_process import InProcessScorer, load_registered_model, request_frame
from eyecatcher.serving_model import DecisionThresholds, ServingConfig, packaging
from eyecatcher.serving_model.contract import ID_COLUMN, IMAGE_COLUMN
from eyecatcher.serving_model.packaging import log_served_model
from tests.image_factory import encode
from tests.pipelines.serving.tiny_champion import CLASSES, make_bundle

MARKER = "registered-from-an-older-commit"


@pytest.fixture
def experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A sqlite tracking store and registry of this test's own, and an experiment in it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield mlflow.create_experiment("in-process", artifact_location=(tmp_path / "a").as_uri())
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def tiny_config(model_name: str, version: str, **limits: int) -> ServingConfig:
    """The served config of the tiny champion, registered as ``model_name`` ``version``."""
    return ServingConfig(
        model_name=model_name,
        model_version=version,
        candidate="tiny_resnet",
        precision="fp32",
        classes=CLASSES,
        safe_class="safe",
        thresholds=DecisionThresholds(review=0.5, block=0.8),
        operating_threshold=0.5,
        **limits,
    )


@pytest.fixture
def older_version(experiment: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A registered version whose shipped model.py differs from the repository's."""
    real_stage_code = packaging.stage_code

    def stage_older_code(destination: Path) -> Path:
        shipped = real_stage_code(destination)
        with (shipped / "serving_model" / "model.py").open("a") as handle:
            handle.write(f"\nSHIPPED_MARKER = {MARKER!r}\n")
        return shipped

    monkeypatch.setattr(packaging, "stage_code", stage_older_code)
    with mlflow.start_run(experiment_id=experiment):
        info = log_served_model(
            bundle=make_bundle(), config=tiny_config("older-model", "1", max_rows=3)
        )
    version = mlflow.register_model(info.model_uri, "older-model")
    return f"models:/older-model/{version.version}"


def test_the_request_frame_uses_the_contracts_columns() -> None:
    frame = request_frame(["aGk="], ["a"])
    assert list(frame.columns) == [ID_COLUMN, IMAGE_COLUMN]
    assert list(request_frame(["aGk="]).columns) == [IMAGE_COLUMN]


def test_in_process_the_repositorys_code_runs_not_the_shipped_copy(older_version: str) -> None:
    path_before = list(sys.path)
    scorer = InProcessScorer(older_version)
    # MLflow prepends the shipped code folder; a process spawned later would import that copy.
    assert sys.path == path_before
    module = sys.modules[type(scorer.model.unwrap_python_model()).__module__]
    assert Path(module.__file__).resolve().is_relative_to(Path(in_process.__file__).parents[2])
    assert not hasattr(module, "SHIPPED_MARKER")
    # Chunks stay under the declared row limit, and every row is answered, in order.
    images = [encode(Image.new("RGB", (40, 32), (i * 30, 80, 160)), "JPEG") for i in range(7)]
    answers = scorer.score_bytes(images, [f"img{i}" for i in range(7)], chunk=16)
    assert scorer.max_rows == 3 and scorer.chunk_size(16) == 3
    assert answers[ID_COLUMN].tolist() == [f"img{i}" for i in range(7)]
    assert answers["error"].isna().all()


_FRESH = textwrap.dedent(
    """
    import json, sys
    import mlflow.pyfunc
    model = mlflow.pyfunc.load_model(sys.argv[1])
    module = sys.modules[type(model.unwrap_python_model()).__module__]
    print(json.dumps({"file": module.__file__, "marker": getattr(module, "SHIPPED_MARKER", None)}))
    """
)


def test_a_fresh_process_runs_the_shipped_copy(older_version: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", _FRESH, older_version],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["marker"] == MARKER
    assert not Path(answer["file"]).resolve().is_relative_to(Path(in_process.__file__).parents[2])


def test_two_threads_loading_two_versions_each_get_their_own(
    experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow hands a code model back through one global; concurrent loads must not share it."""
    uris = []
    path_before = list(sys.path)
    with mlflow.start_run(experiment_id=experiment):
        for number in ("1", "2"):
            config = tiny_config("two-model", number)
            info = log_served_model(bundle=make_bundle(), config=config, name=f"m{number}")
            registered = mlflow.register_model(info.model_uri, "two-model")
            uris.append(f"models:/two-model/{registered.version}")
    assert sys.path == path_before  # logging loads the model too, and puts sys.path back
    # Widen the window between "the code file set its model" and "MLflow reads it back", where
    # a second thread's load would overwrite the global the first is about to read.
    real_set_model = mlflow.models.set_model

    def slow_set_model(model):
        real_set_model(model)
        time.sleep(0.3)

    monkeypatch.setattr(mlflow.models, "set_model", slow_set_model)
    loaded: dict[str, object] = {}

    def load(model_uri: str) -> None:
        loaded[model_uri] = load_registered_model(model_uri).unwrap_python_model()

    threads = [threading.Thread(target=load, args=(u,)) for u in uris]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    first, second = (loaded[u] for u in uris)
    assert first is not second
    assert (first.config_.model_version, second.config_.model_version) == ("1", "2")
