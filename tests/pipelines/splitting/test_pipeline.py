"""The splitting nodes on real (demo) image files, and the pipeline in a Kedro session."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from eyecatcher.images import sha256_bytes
from eyecatcher.pipelines.splitting.balanced_split import SPLITS, SplittingError
from eyecatcher.pipelines.splitting.nodes import (
    MANIFEST_COLUMNS,
    REPORT_COLUMNS,
    PerceptualHashError,
    compute_perceptual_hashes,
    group_near_duplicates,
    plot_split_report,
    split_dataset,
    split_metrics,
)
from tests.conftest import copy_demo

PARAMS = {
    "seed": 7,
    "max_per_class": 6,
    "ratios": {"train": 0.5, "validation": 0.25, "test": 0.25},
    "min_per_class": 4,
    "on_small_class": "drop",
    "near_duplicates": {"max_distance": 8, "workers": 2, "storage_options": {}},
}


def labels_for(folder: Path) -> pd.DataFrame:
    """An ``image_labels`` table for a copied demo folder, classes from the recorded answers."""
    records = {
        record["sha256"]: record["demo_class"]
        for record in map(json.loads, (folder / "rekognition_responses.jsonl").open())
    }
    rows: dict[str, dict] = {}
    for path in sorted((folder / "images").rglob("*")):
        if path.is_file():
            sha = sha256_bytes(path.read_bytes())
            rows.setdefault(
                sha,
                {
                    "sha256": sha,
                    "uri": str(path),
                    "class": records[sha],
                    "included": True,
                    "class_reason": "top_label",
                    "labels": "[]",
                    "content_types": "[]",
                    "moderation_model_version": "7.0",
                    "label_source": "recorded",
                    "error_code": None,
                },
            )
    return pd.DataFrame(list(rows.values()))


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    folder = copy_demo(tmp_path / "demo", per_class=8)
    return folder, labels_for(folder)


def run_nodes(labels: pd.DataFrame, params: dict = PARAMS):
    hashes = compute_perceptual_hashes(labels, params)
    groups = group_near_duplicates(hashes, params)
    manifest, report, summary = split_dataset(labels, groups, params)
    return hashes, groups, manifest, report, summary


def test_nodes_on_the_demo_slice(demo: tuple[Path, pd.DataFrame]) -> None:
    _, labels = demo
    hashes, groups, manifest, report, summary = run_nodes(labels)

    assert len(hashes) == len(labels) == 40
    assert hashes["phash"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert set(groups["sha256"]) == set(labels["sha256"])

    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["sha256"].is_unique
    assert (manifest.groupby("group")["split"].nunique() == 1).all()
    assert manifest["class"].value_counts().to_dict() == dict.fromkeys(
        sorted(set(labels["class"])), 6
    )
    uri_of = labels.set_index("sha256")["uri"]
    assert (manifest["uri"] == uri_of[manifest["sha256"]].to_numpy()).all()

    assert list(report.columns) == REPORT_COLUMNS
    assert (report["available"] == 8).all() and (report["sampled"] == 6).all()
    assert (report[list(SPLITS)].sum(axis=1) == 6).all()
    assert sum(summary["per_split"].values()) == 30
    # 6 images at 50/25/25: quotas 3 / 1.5 / 1.5 rounded to 3 / 2 / 1 or 3 / 1 / 2.
    for row in report[report["near_duplicate_images"] == 0].itertuples():
        assert (row.train, sorted([row.validation, row.test])) == (3, [1, 2])
    assert summary["dropped_classes"] == {}
    json.dumps(summary)  # the summary is written as JSON

    figure = plot_split_report(report)
    assert len(figure.axes) == 2
    assert len(figure.axes[1].patches) == 3 * len(report)  # one bar per class and split
    metrics = split_metrics(summary)
    assert metrics["sampled_images"] == {"value": 30.0, "step": 0}
    assert metrics["classes"]["value"] == 5.0


def test_label_sources_are_carried_into_the_manifest_report_and_metrics(
    demo: tuple[Path, pd.DataFrame],
) -> None:
    _, labels = demo
    labels = labels.copy()
    labels["label_source"] = "rekognition"
    humans = labels.groupby("class").head(2).index
    labels.loc[humans, "label_source"] = "human"
    labels.loc[labels.index[-1], "label_source"] = None  # an older table without a source
    _, _, manifest, report, summary = run_nodes(labels)
    source_of = labels.set_index("sha256")["label_source"].fillna("unknown")
    assert (manifest["label_source"] == source_of[manifest["sha256"]].to_numpy()).all()
    per_split = summary["label_sources"]
    assert sum(per_split["all"].values()) == len(manifest)
    assert sum(sum(per_split[s].values()) for s in SPLITS) == len(manifest)
    assert per_split["all"]["human"] == (manifest["label_source"] == "human").sum()
    counts = dict(item.rsplit(" ", 1) for item in report["label_sources"][0].split(", "))
    assert sum(map(int, counts.values())) == report["sampled"][0]
    metrics = split_metrics(summary)
    assert metrics["label_source.human"]["value"] == per_split["all"]["human"]


def test_the_split_is_reproducible_from_files(demo: tuple[Path, pd.DataFrame]) -> None:
    _, labels = demo
    first = run_nodes(labels)[2]
    again = run_nodes(labels.sample(frac=1.0, random_state=3))[2]
    pd.testing.assert_frame_equal(first, again)


def test_a_re_encoded_copy_lands_in_the_same_split(demo: tuple[Path, pd.DataFrame]) -> None:
    folder, labels = demo
    original = labels.iloc[0]
    # A smaller JPEG of the same picture: different bytes, same content.
    image = Image.open(original["uri"]).convert("RGB").resize((100, 100))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    path = folder / "copy_of_first.jpg"
    path.write_bytes(buffer.getvalue())
    copy_row = original.copy()
    copy_row["sha256"], copy_row["uri"] = sha256_bytes(buffer.getvalue()), str(path)
    labels = pd.concat([labels, copy_row.to_frame().T], ignore_index=True)
    params = {**PARAMS, "max_per_class": 1000}

    _, groups, manifest, _, summary = run_nodes(labels, params)
    group_of = groups.set_index("sha256")["group"]
    assert group_of[original["sha256"]] == group_of[copy_row["sha256"]]
    pair = manifest[manifest["sha256"].isin([original["sha256"], copy_row["sha256"]])]
    assert len(pair) == 2 and pair["split"].nunique() == 1
    assert summary["near_duplicate_images"] >= 2


def test_excluded_and_unclassed_rows_are_left_out(
    demo: tuple[Path, pd.DataFrame], caplog: pytest.LogCaptureFixture
) -> None:
    _, labels = demo
    labels.loc[0, ["included", "class"]] = [False, None]
    labels.loc[1, "class"] = None  # included without a class breaks the contract: warned about
    with caplog.at_level(logging.WARNING):
        _, _, manifest, _, summary = run_nodes(labels)
    assert not manifest["sha256"].isin(labels.loc[[0, 1], "sha256"]).any()
    assert summary["usable_images"] == 38
    assert (summary["excluded_images"], summary["included_without_class"]) == (1, 1)
    assert any("have no class" in warning for warning in summary["warnings"])
    assert "marked included but have no class" in caplog.text


def test_every_unreadable_or_changed_file_is_reported(demo: tuple[Path, pd.DataFrame]) -> None:
    _, labels = demo
    Path(labels.loc[2, "uri"]).unlink()
    Path(labels.loc[5, "uri"]).write_bytes(Path(labels.loc[6, "uri"]).read_bytes())
    Path(labels.loc[7, "uri"]).write_bytes(b"not an image any more")
    with pytest.raises(PerceptualHashError) as info:
        compute_perceptual_hashes(labels, PARAMS)
    message = str(info.value)
    assert "3 of 40" in message
    for row in (2, 5, 7):
        assert labels.loc[row, "uri"] in message
    assert "changed since ingestion" in message


def test_small_classes_dropped_or_failing_per_config(demo: tuple[Path, pd.DataFrame]) -> None:
    _, labels = demo
    rare = labels["class"] == "safe"
    labels = labels[~rare | (rare.cumsum() <= 2)].reset_index(drop=True)  # 2 "safe" images left
    hashes = compute_perceptual_hashes(labels, PARAMS)
    groups = group_near_duplicates(hashes, PARAMS)
    _, report, summary = split_dataset(labels, groups, PARAMS)
    assert summary["dropped_classes"] == {"safe": 2}
    assert report.set_index("class").loc["safe", "status"] == "dropped_below_min"
    assert "safe (2)" in summary["warnings"][0]
    with pytest.raises(SplittingError, match=r"safe \(2\)"):
        split_dataset(labels, groups, {**PARAMS, "on_small_class": "fail"})


def test_no_usable_image_is_a_clear_error(demo: tuple[Path, pd.DataFrame]) -> None:
    _, labels = demo
    labels["included"] = False
    labels["class"] = None
    groups = group_near_duplicates(compute_perceptual_hashes(labels, PARAMS), PARAMS)
    assert groups.empty
    with pytest.raises(SplittingError, match="none of the 40 labelled image"):
        split_dataset(labels, groups, PARAMS)


def test_stale_groups_are_an_error(demo: tuple[Path, pd.DataFrame]) -> None:
    _, labels = demo
    groups = group_near_duplicates(compute_perceptual_hashes(labels, PARAMS), PARAMS)
    with pytest.raises(SplittingError, match="no near-duplicate group"):
        split_dataset(labels, groups.iloc[1:], PARAMS)


def test_missing_label_columns_are_an_error() -> None:
    with pytest.raises(SplittingError, match="included"):
        compute_perceptual_hashes(pd.DataFrame({"sha256": [], "uri": [], "class": []}), PARAMS)


def test_images_are_read_from_s3(
    moto_s3: str, demo: tuple[Path, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    _, labels = demo
    local = labels.head(4).copy()
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    s3.create_bucket(Bucket="uploads")
    remote = local.copy()
    for i, path in enumerate(local["uri"]):
        s3.put_object(Bucket="uploads", Key=f"img/{i}", Body=Path(path).read_bytes())
        remote.loc[remote.index[i], "uri"] = f"s3://uploads/img/{i}"
    options = {"client_kwargs": {"endpoint_url": moto_s3}}
    params = {
        **PARAMS,
        "near_duplicates": {**PARAMS["near_duplicates"], "storage_options": options},
    }
    from_s3 = compute_perceptual_hashes(remote, params)
    from_disk = compute_perceptual_hashes(local, PARAMS)
    assert from_s3["phash"].tolist() == from_disk["phash"].tolist()
    assert from_s3["uri"].str.startswith("s3://uploads/").all()


@pytest.mark.slow
def test_splitting_pipeline_in_a_kedro_session_logs_the_report(kedro_project: Path) -> None:
    from kedro.framework.session import KedroSession
    from mlflow.tracking import MlflowClient

    # From the raw demo slice: ingestion and labelling feed the splitting pipeline.
    with KedroSession.create(project_path=kedro_project, env="test") as session:
        session.run(pipeline_names=["ingestion", "labelling", "splitting"])

    manifest = pd.read_parquet(kedro_project / "data/05_model_input/split_manifest.parquet")
    assert list(manifest.columns) == MANIFEST_COLUMNS
    labels = pd.read_parquet(kedro_project / "data/03_primary/image_labels.parquet")
    usable = labels[labels["included"] & labels["class"].notna()]
    assert set(manifest["sha256"]) <= set(usable["sha256"])
    assert (manifest.groupby("group")["split"].nunique() == 1).all()
    # The test env keeps classes of 4 or more images (the cap of 1000 does not bind here).
    expected = usable["class"].value_counts()
    assert manifest["class"].value_counts().to_dict() == expected[expected >= 4].to_dict()
    report = pd.read_csv(kedro_project / "data/08_reporting/split_report.csv")
    assert report["sampled"].sum() == len(manifest)
    assert (kedro_project / "data/08_reporting/split_report.png").stat().st_size > 0

    client = MlflowClient()
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], max_results=5
    )
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "splitting")}
    assert logged == {
        "splitting/split_report.csv",
        "splitting/split_report.png",
        "splitting/split_summary.json",
    }
    assert run.data.metrics["splitting.sampled_images"] == len(manifest)
    assert run.data.params["splitting.min_per_class"] == "4"


def test_an_unexpected_read_error_is_collected_with_the_others(
    demo: tuple[Path, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader error outside OSError (botocore's NoCredentialsError is a plain Exception) used
    # to escape at once, naming one image instead of the promised list of every failure.
    from eyecatcher.pipelines.splitting import nodes

    _, labels = demo
    broken = {labels.loc[3, "uri"], labels.loc[4, "uri"]}
    real_read = nodes.read_bytes

    def flaky_read(uri: str, options: dict) -> bytes:
        if uri in broken:
            raise RuntimeError("Unable to locate credentials")
        return real_read(uri, options)

    monkeypatch.setattr(nodes, "read_bytes", flaky_read)
    with pytest.raises(PerceptualHashError) as info:
        compute_perceptual_hashes(labels, PARAMS)
    message = str(info.value)
    assert "2 of 40" in message
    assert all(uri in message for uri in broken)
    assert "RuntimeError: Unable to locate credentials" in message
