"""Batch scoring with the registered champion: folders, S3 prefixes, bad files, a Kedro run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from eyecatcher.pipelines.batch_scoring.nodes import list_images_to_score, score_images
from eyecatcher.pipelines.batch_scoring.scoring import VERDICT_COLUMNS, predict_batch
from eyecatcher.pipelines.batch_scoring.settings import BatchScoringSettings
from eyecatcher.preprocessing import bytes_to_batch
from eyecatcher.registry.resolve import resolve_champion
from tests.image_factory import good_images
from tests.pipelines.serving.tiny_champion import (
    CLASSES,
    MODEL_NAME,
    TinyRegistry,
    tiny_registry,
)

PARAMS = {
    "model_name": MODEL_NAME,
    "alias": "champion",
    "recursive": True,
    "extensions": [".jpg", ".png", ".webp"],
    "batch_size": 2,
    "storage_options": {},
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyRegistry]:
    with tiny_registry(tmp_path_factory.mktemp("batch-registry")) as created:
        yield created


@pytest.fixture(scope="module")
def champion(registry: TinyRegistry) -> dict:
    return resolve_champion(PARAMS)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three good images in two sub-folders, a truncated JPEG, a text file named .png, a .txt."""
    images = good_images(seed=5)
    root = tmp_path / "incoming"
    (root / "day1").mkdir(parents=True)
    (root / "day2").mkdir()
    (root / "day1" / "a.jpg").write_bytes(images["rgb.jpg"])
    (root / "day1" / "b.PNG").write_bytes(images["rgba.png"])
    (root / "day2" / "c.webp").write_bytes(images["rgb.webp"])
    (root / "day2" / "cut.jpg").write_bytes(images["rgb.jpg"][: len(images["rgb.jpg"]) // 2])
    (root / "day2" / "notes.png").write_bytes(b"not an image at all")
    (root / "day2" / "readme.txt").write_text("skipped by the extension filter")
    return root


def reference(bundle, files: list[bytes]) -> np.ndarray:
    """Training's in-process probabilities for ``files``."""
    with torch.inference_mode():
        logits = bundle.build_model()(bytes_to_batch(files, bundle.data_config))
    return torch.softmax(logits.double(), dim=1).numpy()


def test_listing_filters_extensions_case_insensitively(folder: Path) -> None:
    listed = list_images_to_score({**PARAMS, "source": str(folder)})
    names = [Path(p).name for p in listed["path"]]
    assert names == ["a.jpg", "b.PNG", "c.webp", "cut.jpg", "notes.png"]
    flat = list_images_to_score({**PARAMS, "source": str(folder / "day1"), "recursive": False})
    assert [Path(p).name for p in flat["path"]] == ["a.jpg", "b.PNG"]
    everything = list_images_to_score({**PARAMS, "source": str(folder), "extensions": []})
    assert len(everything) == 6


def test_listing_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images_to_score({**PARAMS, "source": str(tmp_path / "nowhere")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        list_images_to_score({**PARAMS, "source": str(tmp_path / "empty")})


def test_folder_is_scored_with_a_row_per_file(
    folder: Path, champion: dict, registry: TinyRegistry
) -> None:
    listed = list_images_to_score({**PARAMS, "source": str(folder)})
    table, summary = score_images(listed, champion, {**PARAMS, "source": str(folder)})
    assert list(table.columns) == [*VERDICT_COLUMNS, "scored_at"]
    assert table["scored_at"].nunique() == 1 and str(table["scored_at"].dt.tz) == "UTC"
    assert table["path"].tolist() == listed["path"].tolist()
    by_name = table.set_index(table["path"].map(lambda p: Path(p).name))
    assert by_name.loc["cut.jpg", "error"].startswith("truncated:")
    assert by_name.loc["notes.png", "error"].startswith("not_an_image:")
    good = by_name.loc[["a.jpg", "b.PNG", "c.webp"]]
    assert good["error"].isna().all()
    assert set(good["decision"]) <= {"allow", "review", "block"}
    assert (table["model_version"] == "1").all() and (table["model_name"] == MODEL_NAME).all()
    # The key of the verdict history: the sha256 of the bytes, for bad files too.
    for name, path in (("a.jpg", "day1/a.jpg"), ("cut.jpg", "day2/cut.jpg")):
        expected_sha = hashlib.sha256((folder / path).read_bytes()).hexdigest()
        assert by_name.loc[name, "sha256"] == expected_sha
    # The verdicts are the trained model's own answers.
    expected = reference(
        registry.bundle,
        [(folder / "day1" / n).read_bytes() for n in ("a.jpg", "b.PNG")]
        + [(folder / "day2" / "c.webp").read_bytes()],
    )
    got = np.array([[json.loads(p)[c] for c in CLASSES] for p in good["probabilities"]])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert good["class"].tolist() == [CLASSES[i] for i in expected.argmax(axis=1)]
    assert summary["n_images"] == 5 and summary["n_scored"] == 3 and summary["n_errors"] == 2
    assert summary["engine"] == "local" and summary["n_retried"] == 0
    assert summary["errors_by_reason"] == {"truncated": 1, "not_an_image": 1}
    assert sum(summary["decisions"].values()) == 3


def test_unreadable_file_is_a_row_error_not_a_crash(tmp_path: Path, champion: dict) -> None:
    good = tmp_path / "ok.jpg"
    good.write_bytes(good_images()["rgb.jpg"])
    listed = pd.DataFrame({"path": [str(tmp_path / "vanished.jpg"), str(good)]})
    table, summary = score_images(listed, champion, {**PARAMS, "source": str(tmp_path)})
    assert table["path"].tolist() == listed["path"].tolist()
    assert table.loc[0, "error"].startswith("unreadable:")
    assert pd.isna(table.loc[1, "error"])
    assert summary["errors_by_reason"] == {"unreadable": 1}


def test_a_batch_that_breaks_the_model_is_rescored_row_by_row(champion: dict) -> None:
    class Fragile:
        """Fails on any batch holding the image "boom", like a model bug triggered by one row."""

        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            if "boom" in frame["image"].tolist():
                raise RuntimeError("kernel exploded")
            return pd.DataFrame(
                {
                    "class": ["safe"] * len(frame),
                    "probabilities": [{"safe": 1.0}] * len(frame),
                    "unsafe_score": 0.0,
                    "decision": "allow",
                    "model_name": MODEL_NAME,
                    "model_version": "1",
                    "error": None,
                }
            )

    rows = predict_batch(Fragile(), ["p1", "p2", "p3"], ["x", "boom", "y"], champion)
    assert [r["path"] for r in rows] == ["p1", "p2", "p3"]
    assert rows[0]["decision"] == "allow" and rows[2]["decision"] == "allow"
    assert rows[1]["error"] == "model_error: RuntimeError: kernel exploded"


def test_s3_prefix_is_scored(moto_s3: str, champion: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    s3.create_bucket(Bucket="uploads")
    images = good_images(seed=2)
    s3.put_object(Bucket="uploads", Key="incoming/a.jpg", Body=images["rgb.jpg"])
    s3.put_object(Bucket="uploads", Key="incoming/b.png", Body=images["gray.png"])
    s3.put_object(
        Bucket="uploads",
        Key="incoming/cut.jpg",
        Body=images["rgb.jpg"][: len(images["rgb.jpg"]) // 2],
    )
    s3.put_object(Bucket="uploads", Key="elsewhere/x.jpg", Body=images["rgb.jpg"])
    params = {
        **PARAMS,
        "source": "s3://uploads/incoming",
        "storage_options": {"client_kwargs": {"endpoint_url": moto_s3}},
    }
    listed = list_images_to_score(params)
    assert listed["path"].tolist() == [
        "s3://uploads/incoming/a.jpg",
        "s3://uploads/incoming/b.png",
        "s3://uploads/incoming/cut.jpg",
    ]
    table, summary = score_images(listed, champion, params)
    assert table["error"].isna().tolist() == [True, True, False]
    assert table.loc[2, "error"].startswith("truncated:")
    assert summary["n_scored"] == 2


def test_batch_scoring_pipeline_writes_the_verdict_table(
    registry: TinyRegistry, kedro_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kedro.framework.session import KedroSession

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    runtime = {"batch_scoring": {"model_name": MODEL_NAME, "source": "data/01_raw/demo/images"}}
    with KedroSession.create(
        project_path=kedro_project, env="test", runtime_params=runtime
    ) as session:
        session.run(pipeline_names=["batch_scoring"])
    table = pd.read_parquet(kedro_project / "data/07_model_output/batch_verdicts")
    # No shadow model by default: no shadow column and no shadow report.
    assert list(table.columns) == [*VERDICT_COLUMNS, "scored_at", "scored_day"]
    assert not (kedro_project / "data/08_reporting/shadow_report.json").exists()
    images = kedro_project / "data" / "01_raw" / "demo" / "images"
    extensions = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
    expected = sorted(
        str(p.relative_to(kedro_project))
        for p in images.rglob("*")
        if p.is_file() and p.suffix.lower() in extensions
    )
    # Every file of the demo slice, duplicates under other folders included, one row each.
    assert (
        sorted(
            Path(p).resolve().relative_to(kedro_project.resolve()).as_posix() for p in table["path"]
        )
        == expected
    )
    assert table["error"].isna().all(), table["error"].dropna()
    assert set(table["decision"]) <= {"allow", "review", "block"}
    summary = json.loads(
        (kedro_project / "data/08_reporting/batch_scoring_summary.json").read_text()
    )
    assert summary["n_images"] == len(expected) and summary["model_version"] == "1"
    assert summary["engine"] == "local" and summary["n_retried"] == 0
    metrics = run_metrics(registry.tracking_uri)
    assert metrics["monitoring.items"] == len(expected)
    assert metrics["monitoring.error_rate"] == 0.0 and metrics["monitoring.retried_items"] == 0.0
    assert sum(v for k, v in metrics.items() if k.startswith("monitoring.decision_rate.")) == (
        pytest.approx(1.0)
    )


def run_metrics(tracking_uri: str) -> dict[str, float]:
    """The metrics of the latest run that logged batch-scoring monitoring figures."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, "metrics.`monitoring.items` >= 0", order_by=["start_time DESC"]
    )
    assert runs, "no run logged the batch-scoring monitoring metrics"
    return dict(runs[0].data.metrics)


def test_default_extensions_cover_every_served_format_and_skips_are_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:

    conf = Path(__file__).resolve().parents[3] / "conf/base/parameters_batch_scoring.yml"
    # storage_options is an interpolation of globals.yml, resolved by Kedro, not by yaml.
    defaults = {**yaml.safe_load(conf.read_text())["batch_scoring"], "storage_options": {}}
    images = good_images(seed=6)
    suffixes = {
        "rgb.jpg": ".JPG",
        "rgb.png": ".png",
        "rgb.webp": ".webp",
        "animated.gif": ".gif",
        "rgb.bmp": ".bmp",
        "rgb.tiff": ".tif",
        "rgb.avif": ".avif",
        "phone.heic": ".HEIC",
    }
    for index, (name, suffix) in enumerate(suffixes.items()):
        (tmp_path / f"photo{index}{suffix}").write_bytes(images[name])
    (tmp_path / "notes.txt").write_text("not an image")
    with caplog.at_level("WARNING"):
        listed = list_images_to_score({**defaults, "source": str(tmp_path)})
    assert len(listed) == len(suffixes)
    assert "1 of 9 files" in caplog.text and ".txt" in caplog.text


def test_a_file_over_the_model_limit_is_refused_without_reading_it_whole(
    tmp_path: Path, champion: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eyecatcher.pipelines.batch_scoring import scoring
    from tests.pipelines.serving.tiny_champion import MAX_IMAGE_BYTES

    huge = tmp_path / "huge.png"
    huge.write_bytes(good_images()["rgb.png"] + b"\0" * (MAX_IMAGE_BYTES + 10))
    good = tmp_path / "ok.jpg"
    good.write_bytes(good_images()["rgb.jpg"])
    read_sizes: list[int] = []
    original = scoring.read_limited

    def recording(path: str, options: dict, limit: int | None = None) -> bytes:
        data = original(path, options, limit)
        read_sizes.append(len(data))
        return data

    monkeypatch.setattr(scoring, "read_limited", recording)
    listed = pd.DataFrame({"path": [str(huge), str(good)]})
    table, summary = score_images(listed, champion, {**PARAMS, "source": str(tmp_path)})
    assert table.loc[0, "error"].startswith("too_large_file:")
    assert pd.isna(table.loc[1, "error"])
    assert max(read_sizes) <= MAX_IMAGE_BYTES + 1
    assert summary["errors_by_reason"] == {"too_large_file": 1}


def test_a_misspelt_key_or_an_unknown_engine_is_refused_before_any_work(champion: dict) -> None:
    listed = pd.DataFrame({"path": ["x.jpg"]})
    with pytest.raises(ValueError, match="did you mean 'engine'"):
        score_images(listed, champion, {**PARAMS, "source": ".", "engin": "ray"})
    with pytest.raises(ValueError, match="engine must be one of"):
        score_images(listed, champion, {**PARAMS, "source": ".", "engine": "spark"})
    defaults = yaml.safe_load(
        (Path(__file__).resolve().parents[3] / "conf/base/parameters_batch_scoring.yml").read_text()
    )["batch_scoring"]
    assert set(defaults) <= set(BatchScoringSettings.model_fields)
