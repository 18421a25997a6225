"""Shadow scoring in batch scoring: a second registered version scored beside the champion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from eyecatcher.datasets.skippable_dataset import Skipped
from eyecatcher.pipelines.batch_scoring.nodes import list_images_to_score, score_images
from eyecatcher.pipelines.batch_scoring.scoring import VERDICT_COLUMNS
from eyecatcher.pipelines.batch_scoring.shadow import resolve_shadow, score_shadow
from eyecatcher.registry.resolve import ChampionNotFoundError, resolve_champion
from eyecatcher.serving_model import DecisionThresholds, ServingConfig
from eyecatcher.serving_model.packaging import log_served_model
from tests.image_factory import good_images
from tests.pipelines.serving.tiny_champion import (
    CLASSES,
    MODEL_NAME,
    TinyRegistry,
    make_bundle,
    tiny_registry,
)

PARAMS = {
    "model_name": MODEL_NAME,
    "alias": "champion",
    "recursive": True,
    "extensions": [".jpg", ".png", ".webp"],
    "batch_size": 2,
    "storage_options": {},
    # The block's own (no default in code); _run scores a folder of its own.
    "source": "incoming",
}
SHADOW_COLUMNS = [
    "shadow_class",
    "shadow_unsafe_score",
    "shadow_decision",
    "shadow_model_version",
    "shadow_error",
]


def register_challenger() -> str:
    """Register a differently initialised version of the tiny champion as ``challenger``.

    Uses the current MLflow registry (a :func:`tiny_registry`); returns the new version.
    """
    client = MlflowClient()
    experiment = client.get_run(client.get_model_version(MODEL_NAME, "1").run_id)
    config = ServingConfig(
        model_name=MODEL_NAME,
        model_version="2",
        candidate="tiny_resnet",
        precision="fp32",
        classes=CLASSES,
        safe_class="safe",
        # Low thresholds so that the challenger's decisions differ from the champion's.
        thresholds=DecisionThresholds(review=0.05, block=0.1),
        operating_threshold=0.05,
        max_pixels=4_000_000,
        max_image_bytes=300_000,
        batch_size=8,
    )
    with mlflow.start_run(experiment_id=experiment.info.experiment_id):
        info = log_served_model(bundle=make_bundle(seed=7), config=config)
    version = mlflow.register_model(info.model_uri, MODEL_NAME)
    client.set_registered_model_alias(MODEL_NAME, "challenger", version.version)
    return str(version.version)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyRegistry]:
    """The tiny champion (v1) and a differently initialised challenger (v2)."""
    with tiny_registry(tmp_path_factory.mktemp("shadow-registry")) as created:
        register_challenger()
        yield created


@pytest.fixture
def images(tmp_path: Path) -> pd.DataFrame:
    """Three good images and a truncated one (an error for both models)."""
    made = good_images(seed=11)
    for name in ("rgb.jpg", "rgba.png", "rgb.webp"):
        (tmp_path / name).write_bytes(made[name])
    (tmp_path / "cut.jpg").write_bytes(made["rgb.jpg"][:200])
    return list_images_to_score({**PARAMS, "source": str(tmp_path)})


def _run(images: pd.DataFrame, shadow_model: str | None) -> tuple:
    params = {**PARAMS, "source": "incoming", "shadow_model": shadow_model}
    champion = resolve_champion(params)
    champion_verdicts, _ = score_images(images, champion, params)
    return score_shadow(images, champion_verdicts, champion, resolve_shadow(params), params)


def test_no_shadow_model_changes_nothing_and_writes_nothing(
    registry: TinyRegistry, images: pd.DataFrame
) -> None:
    assert resolve_shadow({**PARAMS, "shadow_model": None}) == {}
    verdicts, report, metrics, sheet = _run(images, None)
    assert list(verdicts.columns) == [*VERDICT_COLUMNS, "scored_at"]
    assert all(isinstance(out, Skipped) for out in (report, metrics, sheet))


def test_the_champion_as_its_own_shadow_agrees_everywhere(
    registry: TinyRegistry, images: pd.DataFrame
) -> None:
    verdicts, report, metrics, sheet = _run(images, "champion")
    assert list(verdicts.columns) == [*VERDICT_COLUMNS, "scored_at", *SHADOW_COLUMNS]
    for column in ("class", "unsafe_score", "decision", "model_version", "error"):
        pd.testing.assert_series_equal(
            verdicts[column], verdicts[f"shadow_{column}"], check_names=False
        )
    assert report["champion_model_version"] == report["shadow_model_version"] == "1"
    assert report["compared"] == 3 and report["errors"] == 1
    assert report["decision_agreement_rate"] == report["class_agreement_rate"] == 1.0
    assert report["n_disagreements"] == 0 and report["disagreements"] == []
    assert sum(n for row in report["confusion"].values() for n in row.values()) == 3
    json.dumps(report)  # the catalog writes it as JSON
    assert metrics["decision_agreement_rate"] == {"value": 1.0, "step": 0}
    assert metrics["compared"]["value"] == 3.0 and metrics["errors"]["value"] == 1.0
    assert sheet.size[0] > 0  # a card saying nothing disagrees


def test_a_different_version_is_compared_and_its_disagreements_listed(
    registry: TinyRegistry, images: pd.DataFrame
) -> None:
    by_alias = resolve_shadow({**PARAMS, "shadow_model": "challenger"})
    by_number = resolve_shadow({**PARAMS, "shadow_model": 2})
    assert by_alias["model_uri"] == by_number["model_uri"] == f"models:/{MODEL_NAME}/2"
    verdicts, report, metrics, sheet = _run(images, "2")
    assert (verdicts["model_version"] == "1").all()
    assert (verdicts["shadow_model_version"] == "2").all()
    assert report["shadow_model_version"] == "2" and report["champion_model_version"] == "1"
    differing = verdicts["error"].isna() & (
        (verdicts["class"] != verdicts["shadow_class"])
        | (verdicts["decision"] != verdicts["shadow_decision"])
    )
    assert report["n_disagreements"] == int(differing.sum()) > 0
    assert report["decision_agreement_rate"] < 1.0
    assert {row["path"] for row in report["disagreements"]} == set(verdicts["path"][differing])
    assert metrics["disagreements"]["value"] == float(differing.sum())
    assert sheet.width == 6 * 128  # the contact sheet of the disagreements


def test_an_unknown_shadow_is_refused_with_its_name(registry: TinyRegistry) -> None:
    with pytest.raises(ChampionNotFoundError, match="no version 9"):
        resolve_shadow({**PARAMS, "shadow_model": "9"})
    with pytest.raises(ChampionNotFoundError, match="nightly"):
        resolve_shadow({**PARAMS, "shadow_model": "nightly"})


def test_kedro_run_with_the_champion_as_shadow_writes_columns_report_and_mlflow(
    registry: TinyRegistry, kedro_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kedro.framework.session import KedroSession

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    runtime = {
        "batch_scoring": {
            "model_name": MODEL_NAME,
            "source": "data/01_raw/demo/images",
            "shadow_model": "champion",
        }
    }
    with KedroSession.create(
        project_path=kedro_project, env="test", runtime_params=runtime
    ) as session:
        session.run(pipeline_names=["batch_scoring"])
    table = pd.read_parquet(kedro_project / "data/07_model_output/batch_verdicts")
    # The verdict table adds the partition column, the UTC day of scored_at.
    assert list(table.columns) == [*VERDICT_COLUMNS, "scored_at", *SHADOW_COLUMNS, "scored_day"]
    assert (table["decision"] == table["shadow_decision"]).all()
    report = json.loads((kedro_project / "data/08_reporting/shadow_report.json").read_text())
    assert report["shadow_model_version"] == report["champion_model_version"] == "1"
    assert report["decision_agreement_rate"] == 1.0 and report["compared"] == len(table)
    assert (kedro_project / "data/08_reporting/shadow_disagreements.png").exists()
    monitoring = json.loads(
        (kedro_project / "data/08_reporting/batch_scoring_monitoring.json").read_text()
    )
    assert monitoring["model_version"] == "1" and monitoring["scored_at"] is not None
    assert monitoring["metrics"]["items"] == len(table)
    assert monitoring["metrics"]["error_rate"] == 0.0
    client = MlflowClient(tracking_uri=registry.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, "metrics.`shadow.compared` >= 0")
    assert run.data.metrics["shadow.decision_agreement_rate"] == 1.0
    assert run.data.metrics["monitoring.items"] == len(table)
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "shadow")}
    assert logged == {"shadow/shadow_report.json", "shadow/shadow_disagreements.png"}
