"""Ingestion: every bad file is quarantined with its reason, S3 works, nothing crashes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from eyecatcher.pipelines.ingestion.nodes import ingest_images, log_ingestion_metrics
from tests.image_factory import bad_files, good_images

PARAMS = {
    "extensions": [".jpg", ".png", ".webp", ".gif", ".bmp", ".tiff"],
    "check_all_files": True,
    "min_side": 80,
    "max_pixels": 50_000_000,
    "max_bytes": 10 * 2**20,
    "workers": 2,
}


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for name, data in good_images().items():
        (root / "cats").mkdir(parents=True, exist_ok=True)
        (root / "cats" / name).write_bytes(data)
    (root / "dogs").mkdir()
    # The same bytes twice under other names: one image, three locations.
    (root / "dogs" / "copy_of_rgb.jpg").write_bytes(good_images()["rgb.jpg"])
    (root / "dogs" / "another_copy.jpg").write_bytes(good_images()["rgb.jpg"])
    for name, (data, _) in bad_files().items():
        (root / name).write_bytes(data)
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "README.txt").write_bytes(b"not an image")
    return root


def _run(*sources: dict, **overrides) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    return ingest_images({**PARAMS, **overrides, "sources": list(sources)})


def test_every_bad_file_is_quarantined_with_the_right_reason(messy_folder: Path) -> None:
    index, quarantine, summary = _run(
        {"name": "local", "uri": str(messy_folder), "folder_labels": True}
    )
    reasons = dict(
        zip(quarantine["uri"].map(lambda u: Path(u).name), quarantine["reason"], strict=True)
    )
    expected = {name: reason for name, (_, reason) in bad_files().items()}
    expected["README.txt"] = "not_an_image"
    assert reasons == expected
    assert quarantine["detail"].str.len().gt(0).all()

    assert len(index) == len(good_images())
    assert index["sha256"].is_unique
    assert set(index["folder_label"]) == {"cats"}
    rgb = index[index["uri"].str.endswith("cats/rgb.jpg")].iloc[0]
    assert len(rgb["all_uris"]) == 3
    assert summary["duplicates"] == 2
    assert summary["hidden_files_skipped"] == 1
    assert summary["quarantined_by_reason"]["truncated"] == 4


def test_index_columns_and_oriented_sizes(messy_folder: Path) -> None:
    index, _, _ = _run({"name": "local", "uri": str(messy_folder)})
    assert list(index.columns) == [
        "sha256", "uri", "all_uris", "source", "width", "height",
        "format", "mode", "n_frames", "bytes", "folder_label",
    ]  # fmt: skip
    rotated = index[index["uri"].str.endswith("exif_rotated.jpg")].iloc[0]
    assert (rotated["width"], rotated["height"]) == (96, 120)
    gif = index[index["format"] == "GIF"].iloc[0]
    assert gif["n_frames"] == 3
    assert index["folder_label"].isna().all()  # folder labels only when asked for


def test_oversized_files_are_quarantined_without_being_read(messy_folder: Path) -> None:
    _, quarantine, _ = _run({"name": "local", "uri": str(messy_folder)}, max_bytes=30_000)
    assert "too_large_file" in set(quarantine["reason"])


def test_summary_line_is_printed(messy_folder: Path, capsys: pytest.CaptureFixture) -> None:
    _run({"name": "local", "uri": str(messy_folder)})
    line = capsys.readouterr().out
    assert f"Ingestion: {len(good_images())} indexed, {len(bad_files()) + 1} quarantined" in line
    assert "2 duplicates" in line


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _run({"name": "nowhere", "uri": str(tmp_path / "missing")})


def test_no_usable_image_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"junk")
    with pytest.raises(ValueError, match="No usable image"):
        _run({"name": "junk", "uri": str(tmp_path)})


def test_metrics_for_mlflow() -> None:
    metrics = log_ingestion_metrics(
        {"files_seen": 5, "indexed": 3, "quarantined": 2, "duplicates": 0,
         "quarantined_by_reason": {"truncated": 2}}
    )  # fmt: skip
    assert metrics["quarantined.truncated"] == {"value": 2.0, "step": 0}


def test_ingestion_from_s3_through_moto(moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    s3.create_bucket(Bucket="uploads")
    goods = good_images()
    for name in ("rgb.jpg", "rgba.png", "rgb.webp"):
        s3.put_object(Bucket="uploads", Key=f"moderation/safe/{name}", Body=goods[name])
    s3.put_object(Bucket="uploads", Key="moderation/safe/dup.jpg", Body=goods["rgb.jpg"])
    s3.put_object(Bucket="uploads", Key="moderation/bad/half.jpg", Body=bad_files()["half.jpg"][0])
    s3.put_object(Bucket="uploads", Key="elsewhere/other.jpg", Body=goods["gray.jpg"])

    index, quarantine, summary = _run(
        {
            "name": "s3",
            "uri": "s3://uploads/moderation",
            "folder_labels": True,
            "storage_options": {"client_kwargs": {"endpoint_url": moto_s3}},
        }
    )
    assert sorted(index["uri"]) == [
        "s3://uploads/moderation/safe/dup.jpg",  # the first name seen, in sorted order
        "s3://uploads/moderation/safe/rgb.webp",
        "s3://uploads/moderation/safe/rgba.png",
    ]
    assert set(index["folder_label"]) == {"safe"}
    assert quarantine[["uri", "reason"]].values.tolist() == [
        ["s3://uploads/moderation/bad/half.jpg", "truncated"]
    ]
    assert summary["duplicates"] == 1


@pytest.mark.slow
def test_ingestion_pipeline_runs_in_a_kedro_session(kedro_project: Path) -> None:
    from kedro.framework.session import KedroSession

    with KedroSession.create(project_path=kedro_project, env="test") as session:
        session.run(pipeline_names=["ingestion"])
    index = pd.read_parquet(kedro_project / "data/02_intermediate/image_index.parquet")
    assert len(index) == 40  # 8 per class, 5 classes
    quarantine = pd.read_parquet(
        kedro_project / "data/02_intermediate/ingestion_quarantine.parquet"
    )
    assert quarantine.empty


def test_decoder_exceptions_outside_oserror_quarantine_instead_of_crashing(
    tmp_path: Path,
) -> None:
    # Pillow raised IndexError (a GIF cut inside a later frame) and RuntimeError (damaged
    # AVIF) here; either one used to abort the whole run and lose every other file's result.
    root = tmp_path / "images"
    root.mkdir()
    animation = good_images()["animated.gif"]
    (root / "cut_animation.gif").write_bytes(animation[: len(animation) * 2 // 3])
    avif = bytearray(good_images()["rgb.avif"])
    avif[81] = 0
    (root / "damaged.avif").write_bytes(bytes(avif))
    (root / "fine.jpg").write_bytes(good_images()["rgb.jpg"])
    index, quarantine, summary = _run({"name": "local", "uri": str(root)})
    reasons = dict(
        zip(quarantine["uri"].map(lambda u: Path(u).name), quarantine["reason"], strict=True)
    )
    assert reasons == {"cut_animation.gif": "truncated", "damaged.avif": "corrupt"}
    assert index["uri"].map(lambda u: Path(u).name).tolist() == ["fine.jpg"]
    assert summary["quarantined"] == 2


def test_symlinked_files_are_indexed_and_broken_links_quarantined(tmp_path: Path) -> None:
    # fsspec lists local symlinks as type "other"; they used to be dropped without a word, so a
    # dataset laid out with links (class folders pointing into a pool) indexed nothing.
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "a.jpg").write_bytes(good_images()["rgb.jpg"])
    (pool / "b.png").write_bytes(good_images()["rgb.png"])
    root = tmp_path / "images"
    (root / "cats").mkdir(parents=True)
    (root / "cats" / "a.jpg").symlink_to(pool / "a.jpg")
    (root / "cats" / "b.png").symlink_to(pool / "b.png")
    (root / "cats" / "gone.jpg").symlink_to(pool / "missing.jpg")
    (root / "cats" / "loop").symlink_to(root, target_is_directory=True)
    index, quarantine, summary = _run({"name": "local", "uri": str(root), "folder_labels": True})
    assert sorted(index["uri"].map(lambda u: Path(u).name)) == ["a.jpg", "b.png"]
    assert set(index["folder_label"]) == {"cats"}
    assert quarantine[["reason"]].to_dict("records") == [{"reason": "unreadable"}]
    assert quarantine["uri"].iloc[0].endswith("gone.jpg")
    assert summary["linked_folders_skipped"] == 1
    assert log_ingestion_metrics(summary)["linked_folders_skipped"]["value"] == 1.0


def test_unlisted_extensions_are_counted_and_the_base_list_covers_every_format(
    tmp_path: Path,
) -> None:
    # With check_all_files: false the base list left out HEIC/AVIF (supported formats) and
    # the files it skipped were not counted anywhere.
    import yaml

    from eyecatcher.images import SUPPORTED_FORMATS

    conf = Path(__file__).resolve().parents[3] / "conf" / "base" / "parameters_ingestion.yml"
    listed = set(yaml.safe_load(conf.read_text())["ingestion"]["extensions"])
    usual = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif",
             "BMP": ".bmp", "TIFF": ".tif", "AVIF": ".avif", "HEIF": ".heic"}  # fmt: skip
    assert {usual[f] for f in SUPPORTED_FORMATS} <= listed

    root = tmp_path / "images"
    root.mkdir()
    for name in ("rgb.jpg", "phone.heic", "rgb.avif"):
        (root / name).write_bytes(good_images()[name])
    (root / "notes.txt").write_text("not an image")
    index, _, summary = _run(
        {"name": "local", "uri": str(root)}, check_all_files=False, extensions=sorted(listed)
    )
    assert len(index) == 3
    assert summary["other_extension_skipped"] == 1


@pytest.mark.parametrize("source", [{"name": "typo", "url": "data/x"}, "data/x", {"uri": ""}])
def test_a_source_without_uri_is_a_clear_error(source: object) -> None:
    with pytest.raises(ValueError, match=r"source #1 .* needs a `uri`"):
        ingest_images({**PARAMS, "sources": [source]})
