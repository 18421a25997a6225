"""The served pyfunc: request/response contract, same predictions as training's model, formats.

One tiny ``test_resnet`` bundle (64 px input) is logged once per module into a temporary sqlite
store and loaded through MLflow, so these tests exercise the artefact a registry would hold.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server
from PIL import Image

from eyecatcher.images import decode_image
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.factory import create_classifier
from eyecatcher.preprocessing import bytes_to_batch, data_config_for
from eyecatcher.serving.in_process import load_registered_model
from eyecatcher.serving_model import (
    OUTPUT_COLUMNS,
    DecisionThresholds,
    ServingConfig,
    decode_base64_image,
    encode_image,
)
from eyecatcher.serving_model.packaging import log_served_model, pinned_requirements
from tests.image_factory import bad_files, encode, good_images

CLASSES = ["safe", "suggestive", "explicit"]


def make_bundle(architecture: str = "test_resnet", seed: int = 0) -> ClassifierBundle:
    """A tiny random-weight bundle (64 px input) with the demo's classes."""
    torch.manual_seed(seed)
    model, source = create_classifier(architecture, len(CLASSES), "random")
    return ClassifierBundle.from_model(
        model,
        architecture=architecture,
        classes=CLASSES,
        data_config=data_config_for(model, 64),
        weights_source=source,
    )


def make_config(precision: str = "fp32", **overrides) -> ServingConfig:
    values = {
        "model_name": "eyecatcher-test",
        "model_version": "7",
        "candidate": "resnet",
        "precision": precision,
        "classes": CLASSES,
        "safe_class": "safe",
        "thresholds": DecisionThresholds(review=0.4, block=0.8),
        "operating_threshold": 0.4,
        "max_pixels": 1_000_000,
        "max_image_bytes": 2_000_000,
        "batch_size": 4,
    }
    values.update(overrides)
    return ServingConfig(**values)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory):
    """A sqlite store with its artefacts in a temporary folder (never the repository's mlruns)."""
    root = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        experiment = mlflow.create_experiment(
            "served-model-tests", artifact_location=(root / "artifacts").as_uri()
        )
        mlflow.set_experiment(experiment_id=experiment)
        yield root
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def bundle() -> ClassifierBundle:
    return make_bundle()


@pytest.fixture(scope="module")
def served(tracking: Path, bundle: ClassifierBundle) -> mlflow.pyfunc.PyFuncModel:
    with mlflow.start_run():
        info = log_served_model(bundle=bundle, config=make_config())
    return load_registered_model(info.model_uri)


def reference_probabilities(bundle: ClassifierBundle, images: list[bytes]) -> np.ndarray:
    """What training's in-process model says about ``images``."""
    model = bundle.build_model()
    with torch.inference_mode():
        logits = model(bytes_to_batch(images, bundle.data_config))
    return torch.softmax(logits.double(), dim=1).numpy()


def _is_animated(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as image:
        return getattr(image, "n_frames", 1) > 1


def test_predictions_equal_the_in_process_model(served, bundle) -> None:
    # Still images only: an animation is scored on several frames and reports the most unsafe
    # one, which the frame-0 reference cannot reproduce (tests/serving_model covers animations).
    images = [data for data in good_images(seed=3).values() if not _is_animated(data)]
    out = served.predict(pd.DataFrame({"image": [encode_image(i) for i in images]}))
    expected = reference_probabilities(bundle, images)
    got = np.array([[row[c] for c in CLASSES] for row in out["probabilities"]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert list(out["class"]) == [CLASSES[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(out["unsafe_score"].astype(float), 1 - expected[:, 0], atol=1e-6)


def test_every_supported_format_and_mode_is_predicted(served) -> None:
    images = good_images(seed=1)
    frame = pd.DataFrame(
        {"id": list(images), "image": [encode_image(data) for data in images.values()]}
    )
    out = served.predict(frame)
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    assert list(out["id"]) == list(images)
    assert out["error"].isna().all(), out[["id", "error"]]
    assert set(out["class"]) <= set(CLASSES)
    assert set(out["decision"]) <= {"allow", "review", "block"}
    for probabilities in out["probabilities"]:
        assert set(probabilities) == set(CLASSES)
        assert sum(probabilities.values()) == pytest.approx(1.0)
    assert (out["model_name"] == "eyecatcher-test").all()
    assert (out["model_version"] == "7").all()


def test_exif_rotation_and_alpha_are_handled_like_training(served, bundle) -> None:
    """The served model sees what :func:`decode_image` makes of a file, EXIF and alpha included."""
    images = good_images(seed=2)
    picked = [images["exif_rotated.jpg"], images["rgba.png"], images["cmyk.jpg"]]
    assert decode_image(images["exif_rotated.jpg"]).size == (96, 120)  # portrait after EXIF
    out = served.predict(pd.DataFrame({"image": [encode_image(i) for i in picked]}))
    got = np.array([[row[c] for c in CLASSES] for row in out["probabilities"]])
    np.testing.assert_allclose(got, reference_probabilities(bundle, picked), atol=1e-6)


def test_bad_rows_get_errors_and_good_rows_still_predict(served) -> None:
    good = encode_image(good_images()["rgb.jpg"])
    bad = {name: encode_image(data) for name, (data, _) in bad_files().items()}
    # Reasons the decoder gives for the same files as ingestion (too_small is ingestion's
    # policy, not a decoding failure: tiny images are still moderated).
    expected = {
        name: reason
        for name, (_, reason) in bad_files().items()
        if reason not in {"too_small", "empty_file"}
    }
    ids = ["good-1", *expected, "empty", "not-base64", "none", "huge", "big-pixels", "good-2"]
    huge = "A" * 3_000_000  # decodes to more than max_image_bytes
    big_pixels = encode_image(encode(Image.new("RGB", (1200, 1000)), "PNG"))
    values = [
        good,
        *(bad[name] for name in expected),
        "",
        "not base64!",
        None,
        huge,
        big_pixels,
        "data:image/jpeg;base64," + good,
    ]
    out = served.predict(pd.DataFrame({"id": ids, "image": values}))
    errors = dict(zip(out["id"], out["error"], strict=True))
    assert errors["good-1"] is None and errors["good-2"] is None
    for name, reason in expected.items():
        assert errors[name].startswith(f"{reason}: "), (name, errors[name])
    assert errors["empty"].startswith("empty_file: ")
    assert errors["not-base64"].startswith("invalid_base64: ")
    assert errors["none"].startswith("invalid_base64: ")
    assert errors["huge"].startswith("too_large_file: ")
    assert errors["big-pixels"].startswith("decompression_bomb: ")
    failed = out[out["error"].notna()]
    assert failed[["class", "probabilities", "unsafe_score", "decision"]].isna().all().all()
    assert (failed["model_version"] == "7").all()
    first, last = out.iloc[0], out.iloc[-1]
    assert first["probabilities"] == pytest.approx(last["probabilities"])


def test_decisions_follow_the_severity_aware_policy() -> None:
    from eyecatcher.serving_model.decision import DecisionPolicy

    classes = ["safe", "swimwear_or_underwear", "explicit_nudity"]
    thresholds = DecisionThresholds(review=0.3, block={"explicit_nudity": 0.9})
    policy = DecisionPolicy(classes, "safe", thresholds)
    # Strict comparisons, as calibration: flagged when the score is ABOVE the threshold.
    assert policy.decide([0.75, 0.15, 0.1]) == "allow"
    assert policy.decide([0.69, 0.3, 0.01]) == "review"
    # Swimwear at high confidence is at most review; explicit nudity above 0.9 is blocked.
    assert policy.decide([0.0, 1.0, 0.0]) == "review"
    assert policy.decide({"safe": 0.0, "swimwear_or_underwear": 0.09, "explicit_nudity": 0.91}) == (
        "block"
    )
    assert policy.decide([0.05, 0.05, 0.9]) == "review"
    # A model that cannot say fails towards a human, never towards allow.
    for broken in (None, [float("nan"), 0.5, 0.5], [0.5, 0.5], {"safe": 1.0}):
        assert policy.decide(broken) == "review"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        DecisionThresholds(review=1.5)
    with pytest.raises(ValueError, match="not unsafe classes"):
        DecisionPolicy(classes, "safe", DecisionThresholds(review=0.3, block={"safe": 0.9}))


def test_base64_decoding_accepts_data_urls_and_line_breaks() -> None:
    data = b"\x89PNG some bytes"
    text = encode_image(data)
    assert decode_base64_image(text) == data
    assert decode_base64_image(f"data:image/png;base64,{text[:8]}\n{text[8:]}") == data


def _invocations(served, payload) -> scoring_server.InvocationsResponse:
    return scoring_server.invocations(
        json.dumps(payload), "application/json", served, served.metadata.get_input_schema()
    )


@pytest.mark.parametrize(
    "payload_kind", ["dataframe_split", "dataframe_records", "inputs_columns", "inputs_records"]
)
def test_standard_payloads_through_the_scoring_server(served, payload_kind) -> None:
    images = [encode_image(good_images()["rgb.png"]), encode_image(b"junk")]
    payload = {
        "dataframe_split": {
            "dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}
        },
        "dataframe_records": {"dataframe_records": [{"image": i, "id": "x"} for i in images]},
        "inputs_columns": {"inputs": {"image": images}},
        "inputs_records": {"inputs": [{"image": i} for i in images]},
    }[payload_kind]
    response = _invocations(served, payload)
    assert response.status == 200, response.response
    predictions = json.loads(response.response)["predictions"]
    assert len(predictions) == 2
    assert predictions[0]["error"] is None and predictions[0]["class"] in CLASSES
    assert predictions[1]["error"].startswith("not_an_image: ")
    assert predictions[1]["probabilities"] is None


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": ["image"], "data": []}},
        {"dataframe_records": [{"picture": "abc"}]},
        {"dataframe_split": {"columns": ["id"], "data": [["a"]]}},
    ],
    ids=["no-rows", "wrong-column", "no-image-column"],
)
def test_unusable_requests_are_client_errors(served, payload) -> None:
    with pytest.raises(MlflowException) as excinfo:
        _invocations(served, payload)
    assert 400 <= excinfo.value.get_http_status_code() < 500


def test_empty_frame_and_missing_column_raise_400_from_predict(served) -> None:
    for frame in (pd.DataFrame({"image": []}), pd.DataFrame({"id": ["a"]})):
        with pytest.raises(MlflowException) as excinfo:
            served._model_impl.python_model.predict(None, frame)
        assert excinfo.value.get_http_status_code() == 400


def test_logged_model_carries_signature_example_requirements_and_code(served) -> None:
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{served.metadata.model_id}"))
    assert (local / "code" / "eyecatcher" / "preprocessing.py").is_file()
    assert not (local / "code" / "eyecatcher" / "pipelines").exists()
    requirements = (local / "requirements.txt").read_text().split()
    for line in pinned_requirements("fp32"):
        assert line in requirements
    assert not any(r.startswith("onnxruntime") for r in requirements)
    config = json.loads(next(local.rglob("serving_config.json")).read_text())
    assert config["thresholds"] == {"review": 0.4, "block": 0.8, "calibrated_precision": None}
    assert served.metadata.signature.inputs.input_names() == ["image", "id", "explain"]
    assert served.metadata.saved_input_example_info is not None


def test_int8_precision_serves_the_onnx_model(tracking, tmp_path) -> None:
    """The int8 branch runs the ONNX file (here an fp32 export: same graph interface)."""
    onnx_runtime = pytest.importorskip("eyecatcher.models.onnx_runtime")
    bundle = make_bundle("test_resnet", seed=5)
    onnx_path = onnx_runtime.export_onnx(
        bundle.build_model(), bundle.data_config["input_size"], tmp_path / "model.onnx"
    )
    with mlflow.start_run():
        info = log_served_model(
            bundle=bundle, config=make_config("int8", candidate="resnet"), onnx_path=onnx_path
        )
    model = load_registered_model(info.model_uri)
    images = [good_images(seed=4)["rgb.jpg"], good_images(seed=4)["gray_alpha.png"]]
    out = model.predict(pd.DataFrame({"image": [encode_image(i) for i in images]}))
    got = np.array([[row[c] for c in CLASSES] for row in out["probabilities"]])
    np.testing.assert_allclose(got, reference_probabilities(bundle, images), atol=1e-4)
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    assert any(
        r.startswith("onnxruntime==") for r in (local / "requirements.txt").read_text().split()
    )


def test_int8_without_an_onnx_file_is_refused(tracking, bundle) -> None:
    with mlflow.start_run(), pytest.raises(ValueError, match="ONNX file"):
        log_served_model(bundle=bundle, config=make_config("int8"), onnx_path=None)


def test_corrupt_exif_or_odd_sizes_do_not_break_a_request(served) -> None:
    tall = encode(Image.new("RGB", (20, 400), (200, 10, 10)), "PNG")
    one_pixel = encode(Image.new("L", (1, 1), 128), "PNG")
    sliver = encode(Image.new("RGB", (3, 400), (200, 10, 10)), "PNG")
    buffer = io.BytesIO()
    Image.new("RGB", (90, 90)).save(buffer, "JPEG", exif=b"Exif\x00\x00garbage")
    rows = (tall, one_pixel, sliver, buffer.getvalue())
    out = served.predict(pd.DataFrame({"image": [encode_image(b) for b in rows]}))
    assert out["error"].iloc[:2].isna().all()
    # Beyond the served aspect-ratio limit: a per-row error, the other rows still scored.
    assert out["error"].iloc[2].startswith("extreme_aspect_ratio")
    assert out["error"].iloc[3] is None or out["error"].iloc[3].startswith("corrupt: ")


def test_pinned_requirements_cover_every_third_party_import_of_the_served_code() -> None:
    # Which eyecatcher modules the served model really loads (int8 included), in a clean
    # interpreter; then every third-party package they import must be pinned, or a model
    # served with --env-manager virtualenv (or in a Docker image) fails to load.
    import ast
    import subprocess
    import sys
    from importlib import metadata

    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, eyecatcher.serving_model.model, eyecatcher.models.onnx_runtime;"
            "print('\\n'.join(m.__file__ for n, m in list(sys.modules.items())"
            " if n.startswith('eyecatcher') and getattr(m, '__file__', None)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    imported: set[str] = set()
    for path in loaded:
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"eyecatcher", "__future__"}
    distributions = metadata.packages_distributions()
    pinned = {line.split("==")[0].lower() for line in pinned_requirements("int8")}
    # A module may ship in several distributions (mlflow, mlflow-skinny): one pinned is enough.
    unpinned = {
        name
        for name in third_party
        if not {d.lower().replace("_", "-") for d in distributions[name]} & pinned
    }
    assert not unpinned, f"imported by the served code but not pinned: {sorted(unpinned)}"
