"""Label sources: human verdicts over folder labels over Rekognition, and folder-only datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from eyecatcher.datasets.feedback_files_dataset import FeedbackFilesDataset
from eyecatcher.pipelines.feedback.nodes import validate_feedback
from eyecatcher.pipelines.labelling.nodes import (
    assign_classes,
    merge_label_sources,
    report_label_distribution,
    request_moderation_labels,
)
from eyecatcher.rekognition.cache import ResponseCache
from eyecatcher.rekognition.client import RekognitionEndpoint
from tests.pipelines.labelling.conftest import (
    DEMO,
    REPO,
    demo_records,
    index_rows,
    labelling_params,
)

OFFLINE = RekognitionEndpoint(mode="offline")
NO_FEEDBACK = pd.DataFrame(columns=["sha256", "verdict", "kind", "reviewer", "timestamp"])


def _offline_cache() -> ResponseCache:
    return ResponseCache(None, [DEMO / "rekognition_responses.jsonl"], read_only=True)


def _label(index: pd.DataFrame, feedback: pd.DataFrame, **params: object) -> pd.DataFrame:
    settings = labelling_params(**params)
    results, _ = request_moderation_labels(index, _offline_cache(), OFFLINE, settings)
    machine, _ = assign_classes(results, settings)
    labels, _ = merge_label_sources(machine, index, feedback, settings)
    return labels


def _verdict(sha: str, verdict: str, kind: str = "review") -> dict:
    return {
        "sha256": sha,
        "verdict": verdict,
        "kind": kind,
        "reviewer": "mod-1",
        "timestamp": pd.Timestamp("2026-11-25T10:00Z"),
    }


@pytest.fixture
def demo_slice(demo_index: pd.DataFrame) -> pd.DataFrame:
    expected = {r["sha256"]: r["demo_expected_class"] for r in demo_records()}
    index = demo_index.copy()
    index["expected"] = index["sha256"].map(expected)
    return index


def test_human_verdicts_override_rekognition_and_keep_what_they_replaced(
    demo_slice: pd.DataFrame,
) -> None:
    labelled = demo_slice[demo_slice["expected"] == "explicit_nudity"].head(2)
    excluded = demo_slice[demo_slice["expected"].isna()].head(1)
    index = pd.concat([labelled, excluded]).drop(columns="expected").reset_index(drop=True)
    feedback = pd.DataFrame(
        [
            _verdict(index["sha256"][0], "safe", kind="appeal"),
            _verdict(index["sha256"][2], "explicit_sexual_activity"),
        ]
    )
    labels = _label(index, feedback).set_index("sha256")
    first, second, third = index["sha256"]
    assert labels.loc[first, ["class", "included", "label_source"]].tolist() == [
        "safe",
        True,
        "human",
    ]
    assert labels.loc[first, "replaced_class"] == "explicit_nudity"
    assert labels.loc[first, "class_reason"].startswith("human: appeal by mod-1 at 2026-11-25")
    assert labels.loc[second, ["class", "label_source"]].tolist() == [
        "explicit_nudity",
        "rekognition",
    ]
    # An image the taxonomy excluded comes back with the human's class.
    assert labels.loc[third, ["class", "included", "label_source"]].tolist() == [
        "explicit_sexual_activity",
        True,
        "human",
    ]
    assert pd.isna(labels.loc[third, "replaced_class"])
    assert labels.loc[third, "replaced_reason"].startswith("excluded_")
    # Human labels can be switched off (then Rekognition's stand).
    off = _label(index, feedback, label_sources={"human": False}).set_index("sha256")
    assert off.loc[first, "class"] == "explicit_nudity" and not off.loc[third, "included"]


def test_folder_labels_are_a_source_and_are_never_sent_to_rekognition(tmp_path: Path) -> None:
    from PIL import Image

    paths = []
    for i, folder in enumerate(["safe", "safe", "explicit_nudity", "nsfw", "misc"]):
        (tmp_path / folder).mkdir(exist_ok=True)
        path = tmp_path / folder / f"{i}.png"
        Image.new("RGB", (90, 90), (40 * i, 10, 200)).save(path)
        paths.append(path)
    index = index_rows(paths)
    index["folder_label"] = [p.parent.name for p in paths]
    # Offline with an empty cache: any image sent to Rekognition would be a CacheMissError.
    empty = ResponseCache(None, [], read_only=True)
    settings = labelling_params(label_sources={"folder_classes": {"nsfw": "explicit_nudity"}})
    results, stats = request_moderation_labels(index, empty, OFFLINE, settings)
    assert results.empty and stats["n_to_send"] == 0
    machine, _ = assign_classes(results, settings)
    feedback = pd.DataFrame([_verdict(index["sha256"][1], "swimwear_or_underwear")])
    labels, source_stats = merge_label_sources(machine, index, feedback, settings)
    assert labels["class"].fillna("-").tolist() == [
        "safe",
        "swimwear_or_underwear",
        "explicit_nudity",
        "explicit_nudity",
        "-",
    ]
    assert labels["label_source"].tolist() == ["folder", "human", "folder", "folder", "folder"]
    assert labels["class_reason"][4].startswith("excluded_unknown_folder: 'misc'")
    assert source_stats["label_source.folder"] == 3 and source_stats["label_source.human"] == 1
    _, metrics = report_label_distribution(labels, stats, {}, source_stats)
    assert metrics["label_source.folder"] == {"value": 3.0, "step": 0}


def test_without_rekognition_unlabelled_images_are_excluded(demo_index: pd.DataFrame) -> None:
    index = demo_index.head(3)
    labels = _label(index, NO_FEEDBACK, label_sources={"rekognition": False})
    assert not labels["included"].any()
    assert set(labels["class_reason"].str.split(":").str[0]) == {"excluded_unlabelled"}


def test_unknown_label_source_keys_are_refused(demo_index: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"label_sources.*'folders' \(did you mean 'folder'\?\)"):
        _label(demo_index.head(1), NO_FEEDBACK, label_sources={"folders": True})


def test_the_demo_feedback_labels_every_image_rekognition_could_not_decide(
    demo_index: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Paths relative to the project root, as ingestion records them for `kedro run`.
    monkeypatch.chdir(REPO)
    index = demo_index.copy()
    index["uri"] = [str(Path(u).relative_to(REPO)) for u in index["uri"]]
    index["all_uris"] = [[u] for u in index["uri"]]
    files = FeedbackFilesDataset(str(DEMO / "feedback")).load()
    assert list(files) == ["moderator_verdicts.synthetic.jsonl"]
    demo = files[next(iter(files))].read(1_000_000)  # listed, read on demand
    assert all(json.loads(line)["synthetic"] for line in demo.splitlines())
    _, verdicts, report, _ = validate_feedback(
        files, index, {"conflict_rule": "latest"}, labelling_params()
    )
    assert report["counts"]["valid"] == report["records"] == 17
    assert report["conflicts"] == 1
    labels = _label(index, verdicts)
    assert labels["included"].all()  # the 13 undecided images are labelled by moderators
    assert (labels["label_source"] == "human").sum() == 16
    truth = {r["sha256"]: r["demo_class"] for r in demo_records()}
    assert (labels["class"] == labels["sha256"].map(truth)).all()


def test_report_label_distribution_keeps_its_three_argument_form(demo_index: pd.DataFrame) -> None:
    labels = _label(demo_index.head(2), NO_FEEDBACK)
    _, metrics = report_label_distribution(labels, {}, {})
    assert "label_source.human" not in metrics
    assert metrics["n_included"]["value"] == labels["included"].sum()
