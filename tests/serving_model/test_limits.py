"""The served pyfunc under hostile requests, in-process: limits, animations, clean failures.

The same registered artefact the server loads (``log_served_model`` on a tiny ``test_resnet``),
loaded with ``mlflow.pyfunc.load_model``; the memory and time bounds of the same inputs through
a real server are in ``tests/pipelines/serving/test_hostile_load.py``.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from PIL import Image

from eyecatcher.images import (
    DEFAULT_MAX_PIXELS,
    DecodeLimits,
    ImageRejectedError,
    decode_for_model,
    frames_to_decode,
)
from eyecatcher.serving.in_process import load_registered_model
from eyecatcher.serving_model.contract import (
    DEFAULT_MAX_IMAGE_BYTES,
    ServingConfig,
    encode_image,
)
from tests.image_factory import (
    animation_with_late_frame,
    good_images,
    many_page_tiff,
    one_row_png,
    sixteen_bit_constant_png,
    tiny_gif,
)
from tests.pipelines.serving.tiny_champion import MODEL_NAME, tiny_registry


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mlflow.pyfunc.PyFuncModel]:
    with tiny_registry(tmp_path_factory.mktemp("limits-registry")):
        yield load_registered_model(f"models:/{MODEL_NAME}@champion")


@pytest.fixture
def model(served: mlflow.pyfunc.PyFuncModel) -> Iterator[object]:
    """The served python model; tests that swap its config or backend get them restored."""
    python_model = served.unwrap_python_model()
    config, classifier = python_model.config_, python_model.classifier_
    yield python_model
    python_model.config_, python_model.classifier_ = config, classifier


def production_limits(config: ServingConfig) -> ServingConfig:
    """The tiny champion's config with the default per-image limits of a real deployment."""
    return dataclasses.replace(
        config, max_pixels=DEFAULT_MAX_PIXELS, max_image_bytes=DEFAULT_MAX_IMAGE_BYTES
    )


def predict(served: mlflow.pyfunc.PyFuncModel, images: list[bytes]) -> pd.DataFrame:
    ids = [f"row-{i}" for i in range(len(images))]
    return served.predict(pd.DataFrame({"id": ids, "image": [encode_image(i) for i in images]}))


# -- request size -------------------------------------------------------------------------------


def test_more_rows_than_max_rows_is_refused_before_any_decoding(served, model) -> None:
    limit = model.config_.max_rows
    rows = [tiny_gif()] * (limit + 1)
    with pytest.raises(MlflowException, match=rf"{limit + 1} rows.*limit of {limit}") as caught:
        predict(served, rows)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"  # HTTP 400 when served


def test_rows_stream_through_batches_and_keep_request_order(served, model) -> None:
    model.config_ = dataclasses.replace(model.config_, max_rows=500, batch_size=4)
    images = list(good_images(seed=2).values())
    requests = [images[i % len(images)] for i in range(37)] + [b"junk"] * 3
    out = predict(served, requests)
    assert list(out["id"]) == [f"row-{i}" for i in range(40)]
    # Same image, same answer (to float noise), wherever it sat and whatever batch it joined.
    by_image = {}
    for image, (_, row) in zip(requests[:37], out.iloc[:37].iterrows(), strict=True):
        by_image.setdefault(image, set()).add(round(row["unsafe_score"], 5))
    assert all(len(scores) == 1 for scores in by_image.values())
    assert out["error"].iloc[37:].str.startswith("not_an_image: ").all()


# -- per-image bounds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (one_row_png, "extreme_aspect_ratio"),
        (lambda: many_page_tiff(10_000), "too_many_frames"),
    ],
    ids=["20M_x_1_png", "10k_page_tiff"],
)
def test_cheap_files_that_decode_huge_get_a_row_error(served, model, make, reason) -> None:
    model.config_ = production_limits(model.config_)
    out = predict(served, [make(), good_images()["rgb.jpg"]])
    assert out["error"].iloc[0].startswith(f"{reason}: ")
    assert out["error"].iloc[1] is None


def test_a_16_bit_image_is_scored_without_full_size_float_copies(served, model) -> None:
    model.config_ = production_limits(model.config_)
    out = predict(served, [sixteen_bit_constant_png(2000)])
    assert out["error"].iloc[0] is None
    assert out["decision"].iloc[0] in {"allow", "review", "block"}


def test_decode_budget_counts_every_frame_an_animation_must_decode() -> None:
    animation, _ = animation_with_late_frame(frames=12, size=96)
    limits = DecodeLimits(max_pixels=96 * 96, max_decode_pixels=96 * 96 * 11)
    with pytest.raises(ImageRejectedError) as caught:
        decode_for_model(animation, min_side=64, limits=limits)
    assert caught.value.reason == "decode_budget"


def test_large_images_are_shrunk_before_colour_conversion() -> None:
    frames = decode_for_model(sixteen_bit_constant_png(3000), min_side=128)
    assert len(frames) == 1 and frames[0].mode == "RGB"
    assert min(frames[0].size) >= 128 and max(frames[0].size) < 256


def test_frames_are_spread_from_first_to_last() -> None:
    assert frames_to_decode(1, 8) == [0]
    assert frames_to_decode(5, 8) == [0, 1, 2, 3, 4]
    picked = frames_to_decode(100, 8)
    assert len(picked) == 8 and picked[0] == 0 and picked[-1] == 99


# -- animations ---------------------------------------------------------------------------------


class _BusyIsUnsafe:
    """A stand-in network: busy (high-variance) pixels are explicit, flat ones safe.

    Random-weight models have no notion of "unsafe"; this one makes the bad frame known, so
    the test is about how frames are combined, not about what a network learnt.
    """

    def predict_proba(self, batch: torch.Tensor) -> np.ndarray:
        busy = batch.std(dim=(2, 3)).mean(dim=1).numpy() > 0.1
        unsafe = np.where(busy, 0.95, 0.0)
        return np.stack([unsafe, 1.0 - unsafe, np.zeros_like(unsafe)], axis=1)


def first_frame_png(animation: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(animation)).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_an_animation_with_a_bad_later_frame_is_not_allowed(served, model, fmt) -> None:
    model.classifier_ = _BusyIsUnsafe()
    animation, late_frame = animation_with_late_frame(fmt, frames=12, late_index=9)
    out = predict(served, [animation, late_frame, first_frame_png(animation)])
    whole, bad_alone, first_alone = (out.iloc[i] for i in range(3))
    assert first_alone["decision"] == "allow"  # what scoring frame 0 only used to say
    assert bad_alone["decision"] == "block"
    assert whole["error"] is None
    assert whole["decision"] == "block"
    assert whole["unsafe_score"] == pytest.approx(bad_alone["unsafe_score"], abs=0.05)


# -- clean failures -----------------------------------------------------------------------------


class _ExplodingBackend:
    def predict_proba(self, batch: torch.Tensor) -> np.ndarray:
        raise RuntimeError("secret internals: /srv/models/weights.pt line 42")


class _NanBackend:
    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes

    def predict_proba(self, batch: torch.Tensor) -> np.ndarray:
        out = np.full((len(batch), self.n_classes), 1.0 / self.n_classes)
        out[0, :] = np.nan
        return out


def test_an_unexpected_exception_is_a_row_error_without_internals(served, model, caplog) -> None:
    model.classifier_ = _ExplodingBackend()
    with caplog.at_level(logging.ERROR, logger="eyecatcher.serving_model.model"):
        out = predict(served, [good_images()["rgb.jpg"], b"junk"])
    error = out["error"].iloc[0]
    assert error.startswith("internal_error: ")
    assert "secret internals" not in error and "Traceback" not in error
    assert out["error"].iloc[1].startswith("not_an_image: ")
    # The server's log has the traceback, under the reference the client was given.
    reference = error.split("reference ")[1].split()[0]
    assert any(
        reference in r.getMessage() and r.exc_info and "secret internals" in str(r.exc_info[1])
        for r in caplog.records
    )


def test_a_nan_score_fails_closed_to_review(served, model) -> None:
    model.classifier_ = _NanBackend(len(model.config_.classes))
    out = predict(served, [good_images()["rgb.jpg"], good_images()["rgb.png"]])
    assert out["decision"].iloc[0] == "review"
    assert out["error"].iloc[0].startswith("non_finite_score: ")
    assert out["unsafe_score"].iloc[0] is None
    assert out["error"].iloc[1] is None and out["decision"].iloc[1] is not None


def test_the_request_path_prints_no_progress_bar(served, model, capfd) -> None:
    model.config_ = dataclasses.replace(model.config_, batch_size=2)
    predict(served, list(good_images().values())[:6])
    captured = capfd.readouterr()
    assert "moderating" not in captured.err and "it/s" not in captured.err
