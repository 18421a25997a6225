"""Batch scoring over days: incremental (skip what the version scored), resumable, appended."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from eyecatcher.datasets.verdict_history_dataset import VerdictHistoryDataset
from eyecatcher.datasets.verdict_table_dataset import VerdictTableDataset
from eyecatcher.pipelines.batch_scoring import nodes
from eyecatcher.pipelines.batch_scoring.nodes import list_images_to_score, score_images
from eyecatcher.pipelines.batch_scoring.scoring import ChampionScorer
from eyecatcher.registry.resolve import resolve_champion
from tests.image_factory import good_images
from tests.pipelines.batch_scoring.test_pipeline import PARAMS
from tests.pipelines.serving.tiny_champion import MODEL_NAME, TinyRegistry, tiny_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyRegistry]:
    with tiny_registry(tmp_path_factory.mktemp("history-registry")) as created:
        yield created


@pytest.fixture(scope="module")
def champion(registry: TinyRegistry) -> dict:
    return resolve_champion(PARAMS)


def _distinct_images(root: Path, n: int) -> Path:
    """``n`` images with distinct bytes (so distinct sha256) in ``root``."""
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"img-{i:02d}.jpg").write_bytes(good_images(seed=100 + i)["rgb.jpg"])
    return root


_REAL_PREDICT = ChampionScorer.predict


class _Counting:
    """Wraps ``ChampionScorer.predict``: records the paths scored; raises on batch ``die_at``."""

    def __init__(self, die_at: int | None = None) -> None:
        self.scored: list[str] = []
        self.calls = 0
        self.die_at = die_at

    def install(self, monkeypatch: pytest.MonkeyPatch) -> _Counting:
        """Make every ChampionScorer go through this wrapper (a function, so it binds)."""

        def predict(scorer: ChampionScorer, batch) -> list[dict]:
            return self(scorer, batch)

        monkeypatch.setattr(ChampionScorer, "predict", predict)
        return self

    def __call__(self, scorer: ChampionScorer, batch) -> list[dict]:
        self.calls += 1
        if self.die_at is not None and self.calls == self.die_at:
            raise KeyboardInterrupt("the job is killed while scoring this batch")
        self.scored.extend(batch.paths)
        return _REAL_PREDICT(scorer, batch)


def _comparable(table: pd.DataFrame) -> pd.DataFrame:
    """The verdicts without the times (a resumed run finishes later than an uninterrupted one)."""
    return table.drop(columns=["scored_at", "scored_day"], errors="ignore").reset_index(drop=True)


def test_a_job_killed_after_half_its_batches_scores_only_the_other_half_when_run_again(
    champion: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _distinct_images(tmp_path / "incoming", 8)
    params = {**PARAMS, "source": str(root), "batch_size": 2}  # 4 batches
    listed = list_images_to_score(params)
    folder = str(tmp_path / "verdicts")
    history = VerdictHistoryDataset(folder).load()

    killed = _Counting(die_at=3).install(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        score_images(listed, champion, params, history)
    assert killed.scored == listed["path"].tolist()[:4]  # two of four batches finished
    assert len(history.staged(MODEL_NAME, "1")) == 4

    again = _Counting().install(monkeypatch)
    resumed, summary = score_images(listed, champion, params, history)
    assert again.scored == listed["path"].tolist()[4:]  # only the missing half
    assert summary["n_resumed"] == 4 and summary["n_already_scored"] == 0
    assert summary["n_images"] == 8
    table = VerdictTableDataset(folder)
    table.save(resumed)
    assert history.staged(MODEL_NAME, "1") is None  # folded into the table

    uninterrupted, _ = score_images(listed, champion, params)
    pd.testing.assert_frame_equal(_comparable(table.load()), _comparable(uninterrupted))


def test_a_second_run_with_the_same_model_version_scores_no_image(
    champion: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _distinct_images(tmp_path / "incoming", 5)
    params = {**PARAMS, "source": str(root)}
    listed = list_images_to_score(params)
    folder = str(tmp_path / "verdicts")
    history = VerdictHistoryDataset(folder).load()
    first, _ = score_images(listed, champion, params, history)
    VerdictTableDataset(folder).save(first)
    # The same bytes under a new name are the same image.
    (root / "copy-of-img-00.jpg").write_bytes((root / "img-00.jpg").read_bytes())
    counting = _Counting().install(monkeypatch)
    second, summary = score_images(list_images_to_score(params), champion, params, history)
    assert counting.scored == [] and second.empty
    assert summary["n_listed"] == 6 and summary["n_already_scored"] == 6
    VerdictTableDataset(folder).save(second)
    assert len(VerdictTableDataset(folder).load()) == 5


@pytest.mark.slow
def test_two_pipeline_runs_on_two_days_leave_one_table_with_both_days(
    registry: TinyRegistry, kedro_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kedro run --pipelines batch_scoring`` on day 1 (one upload folder) and on day 2 (all):
    the table holds both days, day 2 only the images day 1 did not score."""
    import mlflow
    from kedro.framework.session import KedroSession

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    images = "data/01_raw/demo/images"
    summaries = []
    for day, source in (("2026-12-06", f"{images}/upload_batch_1"), ("2026-12-07", images)):
        monkeypatch.setattr(nodes, "utc_now", lambda day=day: pd.Timestamp(f"{day}T09:30Z"))
        runtime = {"batch_scoring": {"model_name": MODEL_NAME, "source": source}}
        with KedroSession.create(
            project_path=kedro_project, env="test", runtime_params=runtime
        ) as session:
            session.run(pipeline_names=["batch_scoring"])
        # kedro-mlflow leaves its (nested) runs active; each day is its own run, as two
        # scheduled runs would be.
        while mlflow.active_run():
            mlflow.end_run()
        summaries.append(
            json.loads((kedro_project / "data/08_reporting/batch_scoring_summary.json").read_text())
        )
    folder = kedro_project / "data/07_model_output/batch_verdicts"
    table = VerdictTableDataset(str(folder)).load()
    day1, day2 = (table[table["scored_day"] == d] for d in ("2026-12-06", "2026-12-07"))
    assert len(day1) == summaries[0]["n_images"] > 0
    assert len(day2) == summaries[1]["n_images"] > 0
    assert not set(day1["sha256"]) & set(day2["sha256"])  # nothing scored twice
    all_files = list_images_to_score({**PARAMS, "source": str(kedro_project / images)})
    assert summaries[1]["n_listed"] == len(all_files)
    assert summaries[1]["n_already_scored"] + summaries[1]["n_images"] == len(all_files)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("_")) == [
        "2026-12-06",
        "2026-12-07",
    ]
    assert not list((folder / "_staging").rglob("*.parquet"))  # every staged batch folded in
