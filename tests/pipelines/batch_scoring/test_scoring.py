"""ChampionScorer: reading apart from predicting gives the same rows as scoring in one go."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from eyecatcher.pipelines.batch_scoring.scoring import ChampionScorer
from eyecatcher.serving_model.contract import encode_image

CHAMPION = {"name": "m", "version": "3", "model_uri": "models:/m@champion"}


class EchoModel:
    """Answers each row with its id as the class: shows which image went with which path."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.calls.append(len(frame))
        return pd.DataFrame(
            {
                "id": frame["id"],
                "class": [f"len{len(image)}" for image in frame["image"]],
                "probabilities": [{"safe": 0.25, "unsafe": 0.75}] * len(frame),
                "unsafe_score": [0.75] * len(frame),
                "decision": ["review"] * len(frame),
                "model_name": ["m"] * len(frame),
                "model_version": [3] * len(frame),
                "error": [None] * len(frame),
            }
        )


def test_read_then_predict_is_score_and_keeps_unreadable_rows(tmp_path: Path) -> None:
    paths = []
    for index, size in enumerate((5, 11, 2)):
        path = tmp_path / f"f{index}.jpg"
        path.write_bytes(b"x" * size)
        paths.append(str(path))
    paths.insert(1, str(tmp_path / "missing.jpg"))
    model = EchoModel()
    scorer = ChampionScorer(CHAMPION, model=model)

    batch = scorer.read(paths)
    assert batch.readable_paths == [paths[0], paths[2], paths[3]]
    assert batch.images == [encode_image(b"x" * n) for n in (5, 11, 2)]
    assert model.calls == []  # reading does no model work
    rows = scorer.predict(batch)

    assert rows == scorer.score(paths)
    assert [row["path"] for row in rows] == paths
    assert [row["class"] for row in rows] == [
        f"len{len(encode_image(b'x' * 5))}",
        None,
        f"len{len(encode_image(b'x' * 11))}",
        f"len{len(encode_image(b'x' * 2))}",
    ]
    assert rows[1]["error"].startswith("unreadable:")
    assert rows[0]["probabilities"] == '{"safe": 0.25, "unsafe": 0.75}'
    assert rows[0]["model_version"] == "3" and rows[0]["unsafe_score"] == 0.75
