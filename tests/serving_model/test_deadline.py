"""The served pyfunc's per-request deadline (issue #24, item 2), in-process.

The deadline is checked between rows, frames and forward passes: rows not scored in time get
``deadline_exceeded``, the request answers within the deadline plus the one step that was
running, and the next request has its whole deadline again. The same through a real server:
``tests/pipelines/serving/test_hostile_load.py``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from eyecatcher.images import DEFAULT_MAX_PIXELS
from eyecatcher.serving.in_process import load_registered_model
from eyecatcher.serving_model.contract import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_ROWS,
    DEFAULT_REQUEST_DEADLINE_S,
    ServingConfig,
    encode_image,
)
from tests.image_factory import animation_with_late_frame, gif_big_canvas_many_frames, good_images
from tests.pipelines.serving.tiny_champion import MODEL_NAME, tiny_registry

#: What a request may take beyond its deadline here: the step running when it passed (one
#: forward pass of the slow stand-in below, one small decode), with room for a loaded machine.
SLACK_S = 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mlflow.pyfunc.PyFuncModel]:
    with tiny_registry(tmp_path_factory.mktemp("deadline-registry")):
        yield load_registered_model(f"models:/{MODEL_NAME}@champion")


@pytest.fixture
def model(served: mlflow.pyfunc.PyFuncModel) -> Iterator[object]:
    """The served python model; tests that swap its config or backend get them restored."""
    python_model = served.unwrap_python_model()
    config, classifier = python_model.config_, python_model.classifier_
    yield python_model
    python_model.config_, python_model.classifier_ = config, classifier


class _SlowNetwork:
    """A stand-in network that takes ``seconds`` per forward pass (a big model on a slow host).

    The deadline is about when work stops, not about what a network computes; a fixed pause
    makes "how many rows fit in the deadline" known, where a real network's time is not.
    """

    def __init__(self, seconds: float, n_classes: int) -> None:
        self.seconds, self.n_classes, self.calls = seconds, n_classes, 0

    def predict_proba(self, batch: torch.Tensor) -> np.ndarray:
        self.calls += 1
        time.sleep(self.seconds)
        return np.full((len(batch), self.n_classes), 1.0 / self.n_classes)


def predict(served: mlflow.pyfunc.PyFuncModel, images: list[bytes]) -> tuple[pd.DataFrame, float]:
    frame = pd.DataFrame(
        {"id": [f"row-{i}" for i in range(len(images))], "image": [encode_image(i) for i in images]}
    )
    started = time.monotonic()
    out = served.predict(frame)
    return out, time.monotonic() - started


def with_config(model, **changes) -> None:
    model.config_ = dataclasses.replace(model.config_, **changes)


def test_the_default_deadline_is_in_the_served_config() -> None:
    assert ServingConfig.__dataclass_fields__["request_deadline_s"].default == (
        DEFAULT_REQUEST_DEADLINE_S
    )


def test_rows_not_reached_by_the_deadline_get_deadline_exceeded(served, model) -> None:
    deadline = 1.0
    with_config(model, request_deadline_s=deadline, batch_size=1, max_rows=100)
    model.classifier_ = _SlowNetwork(0.15, len(model.config_.classes))
    threads_before = set(threading.enumerate())
    out, seconds = predict(served, [good_images()["rgb.jpg"]] * 40)
    assert seconds < deadline + SLACK_S
    errors = out["error"].tolist()
    scored = [error is None for error in errors]
    assert any(scored) and not all(scored)
    # Rows are worked in order: the scored ones come first, every later one says why it is not.
    first_unscored = scored.index(False)
    assert all(scored[:first_unscored]) and not any(scored[first_unscored:])
    assert all(
        e.startswith("deadline_exceeded: the request's deadline of 1 s")
        for e in errors[first_unscored:]
    )
    assert out["decision"].iloc[first_unscored:].isna().all()
    assert list(out["id"]) == [f"row-{i}" for i in range(40)]
    # Nothing keeps working for the request once predict has returned.
    assert set(threading.enumerate()) <= threads_before
    calls = model.classifier_.calls
    time.sleep(0.3)
    assert model.classifier_.calls == calls


def test_an_animation_cut_by_the_deadline_gets_no_partial_verdict(served, model) -> None:
    # Scoring its frames in batches of 2 takes 4 x 0.4 s; the deadline passes halfway: a verdict
    # on frames 0-3 alone could miss the worst frame, so the row says deadline_exceeded.
    with_config(model, request_deadline_s=0.6, batch_size=2)
    model.classifier_ = _SlowNetwork(0.4, len(model.config_.classes))
    animation, _ = animation_with_late_frame("GIF", frames=12)
    out, seconds = predict(served, [animation])
    assert out["error"].iloc[0].startswith("deadline_exceeded: ")
    assert out["decision"].iloc[0] is None
    assert seconds < 0.6 + SLACK_S


def test_the_next_request_has_its_whole_deadline_again(served, model) -> None:
    with_config(model, request_deadline_s=0.5, batch_size=1)
    model.classifier_ = _SlowNetwork(0.2, len(model.config_.classes))
    late, _ = predict(served, [good_images()["rgb.png"]] * 10)
    assert late["error"].iloc[-1].startswith("deadline_exceeded: ")
    again, _ = predict(served, [good_images()["rgb.png"]])
    assert again["error"].iloc[0] is None and again["decision"].iloc[0] is not None


def test_64_rows_of_the_issue_gif_are_answered_at_once_and_a_normal_image_after(
    served, model
) -> None:
    with_config(
        model, max_pixels=DEFAULT_MAX_PIXELS, max_image_bytes=DEFAULT_MAX_IMAGE_BYTES, max_rows=64
    )
    hostile = gif_big_canvas_many_frames()  # ~100 s of CPU a row before issue #24
    out, seconds = predict(served, [hostile] * DEFAULT_MAX_ROWS)
    assert seconds < model.config_.request_deadline_s
    assert out["error"].str.startswith("decode_budget: ").all()
    normal, normal_seconds = predict(served, [good_images()["rgb.jpg"]])
    assert normal["error"].iloc[0] is None
    assert normal["decision"].iloc[0] in {"allow", "review", "block"}
    assert normal_seconds < 5.0  # a hang guard, not a benchmark
