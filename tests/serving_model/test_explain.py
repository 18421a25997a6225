"""Optional heatmaps in the served model's response (the ``explain`` request column).

The registered tiny champion (``log_served_model`` on a ``test_resnet``), loaded in-process with
``mlflow.pyfunc.load_model`` so MLflow's own schema enforcement runs as in the server; the same
checks over HTTP are probes in ``tests/pipelines/serving/test_pipeline.py``.
"""

from __future__ import annotations

import base64
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

from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.factory import create_classifier
from eyecatcher.preprocessing import data_config_for
from eyecatcher.serving.in_process import load_registered_model
from eyecatcher.serving_model.contract import (
    EXPLAIN_COLUMNS,
    OUTPUT_COLUMNS,
    encode_image,
    explain_flags,
)
from eyecatcher.serving_model.packaging import log_served_model
from tests.image_factory import animation_with_late_frame, good_images
from tests.pipelines.serving.tiny_champion import CLASSES, MODEL_NAME, tiny_registry


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mlflow.pyfunc.PyFuncModel]:
    with tiny_registry(tmp_path_factory.mktemp("explain-registry")):
        yield load_registered_model(f"models:/{MODEL_NAME}@champion")


@pytest.fixture
def model(served: mlflow.pyfunc.PyFuncModel) -> Iterator[object]:
    """The served python model; tests that swap its parts get them restored."""
    python_model = served.unwrap_python_model()
    saved = python_model.config_, python_model.classifier_, python_model.explainer_
    yield python_model
    python_model.config_, python_model.classifier_, python_model.explainer_ = saved


def request(images: list[bytes], explain: list[object] | None = None) -> pd.DataFrame:
    columns: dict[str, list[object]] = {
        "id": [f"row-{i}" for i in range(len(images))],
        "image": [encode_image(data) for data in images],
    }
    if explain is not None:
        columns["explain"] = explain
    return pd.DataFrame(columns)


def decode_png(value: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(value, validate=True)))
    assert image.format == "PNG"
    assert image.mode == "L"  # raw heat, one channel
    return np.asarray(image)


def test_no_explain_column_means_no_heatmap_columns(served) -> None:
    out = served.predict(request([good_images()["rgb.jpg"]]))
    assert list(out.columns) == list(OUTPUT_COLUMNS)


def test_explain_true_adds_a_png_heatmap_of_the_stated_size(served, model) -> None:
    images = [good_images()["rgb.jpg"], good_images()["rgb.png"]]
    plain = served.predict(request(images))
    out = served.predict(request(images, explain=[True, False]))
    assert list(out.columns) == [*OUTPUT_COLUMNS, *EXPLAIN_COLUMNS]
    size = model.config_.heatmap_size
    heat = decode_png(out["heatmap_png"].iloc[0])
    assert heat.shape == (size, size)
    assert heat.max() > 0  # a random network still has evidence somewhere
    info = out["heatmap_info"].iloc[0]
    assert f"class '{out['class'].iloc[0]}'" in info
    assert "Grad-CAM" in info and "fp32 PyTorch" in info
    # Not asked: no heatmap; asking changes nothing of the verdicts.
    assert out["heatmap_png"].iloc[1] is None and out["heatmap_info"].iloc[1] is None
    pd.testing.assert_frame_equal(out[list(OUTPUT_COLUMNS)], plain)


def test_rows_that_leave_explain_empty_get_no_heatmap(served) -> None:
    records = [
        {"image": encode_image(good_images()["rgb.jpg"]), "explain": True},
        {"image": encode_image(good_images()["rgb.png"])},
    ]
    out = served.predict(pd.DataFrame.from_records(records))
    assert out["heatmap_png"].iloc[0] is not None
    assert out["heatmap_png"].iloc[1] is None


def test_a_row_with_a_bad_image_has_its_error_and_no_heatmap(served) -> None:
    out = served.predict(request([b"junk", good_images()["rgb.jpg"]], explain=[True, True]))
    assert out["error"].iloc[0].startswith("not_an_image: ")
    assert out["heatmap_png"].iloc[0] is None
    assert out["heatmap_png"].iloc[1] is not None


@pytest.mark.parametrize("value", ["yes", "true", 1, 0.5], ids=repr)
def test_a_malformed_explain_value_is_a_400(served, value) -> None:
    with pytest.raises(MlflowException, match="explain") as caught:
        served.predict(request([good_images()["rgb.jpg"]], explain=[value]))
    assert caught.value.error_code in {"INVALID_PARAMETER_VALUE", "BAD_REQUEST"}


def test_explain_flags_refuse_what_is_not_a_boolean() -> None:
    frame = pd.DataFrame({"image": ["a", "b", "c"], "explain": [True, None, "no"]})
    with pytest.raises(MlflowException, match=r"row 2 has str 'no'") as caught:
        explain_flags(frame, max_explain_rows=4)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert explain_flags(frame.iloc[:2], max_explain_rows=4) == [True, False]


def test_more_explained_rows_than_the_cap_are_refused_before_decoding(served, model) -> None:
    model.config_ = dataclasses.replace(model.config_, max_explain_rows=2)
    images = [good_images()["rgb.jpg"]] * 3
    out = served.predict(request(images, explain=[True, True, False]))
    assert out["heatmap_png"].notna().sum() == 2
    with pytest.raises(MlflowException, match=r"3 rows ask.*limit of 2") as caught:
        served.predict(request([b"not decoded"] * 3, explain=[True] * 3))
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"


class _BusyIsUnsafe:
    """A stand-in backend: busy (high-variance) frames are explicit, flat ones safe."""

    def predict_proba(self, batch: torch.Tensor) -> np.ndarray:
        busy = batch.std(dim=(2, 3)).mean(dim=1).numpy() > 0.1
        unsafe = np.where(busy, 0.95, 0.0)
        return np.stack([unsafe, 1.0 - unsafe, np.zeros_like(unsafe)], axis=1)


def test_an_animation_is_explained_by_the_frame_that_decided(served, model) -> None:
    model.classifier_ = _BusyIsUnsafe()
    # PNG (APNG) is lossless: the late frame alone decodes to exactly the animation's frame.
    animation, late_frame = animation_with_late_frame("PNG", frames=12, late_index=9)
    out = served.predict(request([animation, late_frame], explain=[True, True]))
    assert out["decision"].iloc[0] == "block"
    assert out["class"].iloc[0] == out["class"].iloc[1] == "explicit_nudity"
    whole, alone = (decode_png(out["heatmap_png"].iloc[i]) for i in range(2))
    np.testing.assert_array_equal(whole, alone)


def test_heatmaps_come_from_pytorch_for_the_class_an_onnx_runtime_chose(served, model) -> None:
    # A backend that always answers the third class: the heatmap must explain that class.
    class _AlwaysThird:
        def predict_proba(self, batch: torch.Tensor) -> np.ndarray:
            return np.tile([0.1, 0.2, 0.7], (len(batch), 1))

    model.classifier_ = _AlwaysThird()
    out = served.predict(request([good_images()["rgb.jpg"]], explain=[True]))
    assert out["class"].iloc[0] == model.config_.classes[2]
    assert f"class '{model.config_.classes[2]}'" in out["heatmap_info"].iloc[0]


def test_a_failed_heatmap_keeps_the_verdict_and_says_why(served, model, caplog) -> None:
    class _Exploding:
        def heatmaps(self, batch: torch.Tensor, targets: list[int]) -> list[str]:
            raise RuntimeError("secret internals of the explainer")

    model.explainer_ = _Exploding()
    with caplog.at_level(logging.ERROR, logger="eyecatcher.serving_model.model"):
        out = served.predict(request([good_images()["rgb.jpg"]], explain=[True]))
    assert out["error"].iloc[0] is None and out["decision"].iloc[0] is not None
    assert out["heatmap_png"].iloc[0] is None
    info = out["heatmap_info"].iloc[0]
    assert info.startswith("no heatmap: internal_error")
    assert "secret internals" not in info


def test_a_vit_champion_explains_through_its_patch_tokens(served) -> None:
    torch.manual_seed(0)
    network, source = create_classifier("test_vit", len(CLASSES), "random")
    bundle = ClassifierBundle.from_model(
        network,
        architecture="test_vit",
        classes=CLASSES,
        data_config=data_config_for(network),  # its own input size: the token grid matches
        weights_source=source,
    )
    config = dataclasses.replace(served.unwrap_python_model().config_, candidate="tiny_vit")
    with mlflow.start_run():
        info = log_served_model(bundle=bundle, config=config)
    vit = load_registered_model(info.model_uri)
    out = vit.predict(request([good_images()["rgb.jpg"]], explain=[True]))
    assert out["error"].iloc[0] is None
    assert decode_png(out["heatmap_png"].iloc[0]).shape == (config.heatmap_size,) * 2
    assert "patch tokens entering ViT block" in out["heatmap_info"].iloc[0]
