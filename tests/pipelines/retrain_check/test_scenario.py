"""The loop end to end: feedback flips labels → retrain_check says retrain → the gate decides."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from eyecatcher.images import sha256_bytes
from eyecatcher.pipelines.retrain_check.decision import RetrainRequiredError

NAME = "eyecatcher-moderation"
REPORTS = Path("data/08_reporting")


def _run(project: Path, pipelines: list[str] | None = None, params: dict | None = None) -> None:
    from kedro.framework.session import KedroSession

    try:
        with KedroSession.create(
            project_path=project, env="test", runtime_params=params or {}
        ) as session:
            session.run(pipeline_names=pipelines)
    finally:
        # kedro-mlflow leaves its run active in this process; the next session needs its own.
        while mlflow.active_run():
            mlflow.end_run()


def _json(project: Path, name: str) -> dict:
    return json.loads((project / REPORTS / name).read_text())


def _flipping_feedback(project: Path, labels: pd.DataFrame, scored: set[str], n: int) -> list[str]:
    """Moderators contradict the training label of ``n`` scored images, after registration."""
    now = pd.Timestamp.now(tz="UTC")
    folder = project / "data/01_raw/demo/feedback"
    folder.mkdir(parents=True, exist_ok=True)
    candidates = labels[labels["included"] & labels["sha256"].isin(scored)].sort_values("sha256")
    lines, flipped = [], []
    for i, row in enumerate(candidates.head(n).itertuples(index=False)):
        human = "safe" if row[candidates.columns.get_loc("class")] != "safe" else "explicit_nudity"
        stamp = (now + pd.Timedelta(seconds=i)).isoformat()
        lines.append(f"{row.sha256},{human},mod-{i % 2},{stamp},review,scenario\n")
        flipped.append(row.sha256)
    header = "image,verdict,reviewer,timestamp,kind,note\n"
    (folder / "verdicts.csv").write_text(header + "".join(lines))
    return flipped


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_feedback_triggers_retraining_and_only_a_passing_gate_moves_the_champion(
    kedro_project: Path,
) -> None:
    client = MlflowClient()
    check = {"retrain_check": {"min_new_feedback": 5, "min_items_per_class": 1}}

    _run(kedro_project)  # the first champion, from Rekognition's labels only
    first = client.get_model_version_by_alias(NAME, "champion")
    labels = pd.read_parquet(kedro_project / "data/03_primary/image_labels.parquet")
    assert set(labels["label_source"].dropna()) == {"rekognition"}

    _run(kedro_project, ["batch_scoring"])
    verdicts = pd.read_parquet(kedro_project / "data/07_model_output/batch_verdicts")
    verdicts = verdicts[verdicts["error"].isna()].sort_values("path")
    assert set(verdicts["model_version"]) == {str(first.version)}

    _run(kedro_project, ["retrain_check"], check)  # no feedback yet: nothing is due
    quiet = _json(kedro_project, "retrain_decision.json")
    assert quiet["retrain"] is False and quiet["new_feedback"] == 0
    assert quiet["champion_version"] == str(first.version)
    drift = _json(kedro_project, "drift_report.json")
    # The reference is the test split scored by the champion when it was registered ...
    assert drift["champion_version"] == str(first.version) and drift["measured"] is True
    assert "scored by the registered version" in drift["reference"]
    assert drift["population"]["excluded_exact"] > 0  # batch scoring read the training folder
    assert (kedro_project / REPORTS / "drift_plot.png").stat().st_size > 0
    # ... but a 5-image test split is too small to judge: reported, never alerted on.
    assert drift["alerts"] == [] and drift["columns"]["unsafe_score"]["reasons"][0].startswith(
        "not judged"
    )
    assert _json(kedro_project, "monitoring_online_metrics.json")["measured"] is True

    scored = {sha256_bytes(Path(p).read_bytes()) for p in verdicts["path"]}
    flipped = _flipping_feedback(kedro_project, labels, scored, 6)
    with pytest.raises(RetrainRequiredError, match="6 new feedback records >= min_new"):
        _run(kedro_project, ["retrain_check"], check)
    due = _json(kedro_project, "retrain_decision.json")
    assert due["retrain"] is True and due["new_feedback"] == 6
    # Every flipped image was scored by the champion, but only those it never saw in training
    # are measured against their verdict: the others are left out and counted.
    manifest = pd.read_parquet(kedro_project / "data/05_model_input/split_manifest.parquet")
    seen = set(manifest.loc[manifest["split"].isin(["train", "validation"]), "sha256"])
    excluded = due["disagreement_excluded_verdicts"]
    assert excluded["exact"] == len(set(flipped) & seen) > 0
    measured = sum(row["items"] for row in due["disagreement_per_class"].values())
    assert measured + excluded["exact"] + excluded["near_duplicate"] == 6
    assert due["monitored_population"]["near_duplicate_max_distance"] == 8

    # Retrain with the human labels, under a bar nobody can pass: nothing moves.
    _run(kedro_project, params={"registration": {"gate": {"min_test_accuracy": 2.0}}})
    labels = pd.read_parquet(kedro_project / "data/03_primary/image_labels.parquet")
    human = labels[labels["label_source"] == "human"]
    assert sorted(human["sha256"]) == sorted(flipped)
    assert (human["class"] != human["replaced_class"]).all()
    manifest = pd.read_parquet(kedro_project / "data/05_model_input/split_manifest.parquet")
    assert (manifest["label_source"] == "human").sum() == len(
        set(flipped) & set(manifest["sha256"])
    )
    assert _json(kedro_project, "registration_report.json")["outcome"] == "rejected"
    assert client.get_model_version_by_alias(NAME, "champion").version == first.version

    # The same retrained model under the configured gate: registered only if it passes.
    _run(kedro_project, ["registration"])
    report = _json(kedro_project, "registration_report.json")
    champion = client.get_model_version_by_alias(NAME, "champion")
    if report["gate"]["passed"]:
        assert report["outcome"] == "registered"
        assert champion.version != first.version
        assert str(champion.version) == str(report["version"])
    else:
        assert champion.version == first.version
