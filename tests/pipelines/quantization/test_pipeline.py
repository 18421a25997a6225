"""Tests of the quantization pipeline with tiny timm models on the demo images (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from eyecatcher.fingerprints import StaleArtefactError
from eyecatcher.images import sha256_bytes
from eyecatcher.models import ClassifierBundle, create_classifier
from eyecatcher.models.onnx_runtime import (
    OnnxClassifier,
    QuantizationError,
    read_metadata,
    with_metadata,
)
from eyecatcher.pipelines.quantization import export, nodes
from eyecatcher.pipelines.quantization.decision import decide_precision
from eyecatcher.pipelines.quantization.measure import score_round_robin
from eyecatcher.pipelines.quantization.nodes import (
    benchmark_candidate,
    build_onnx_models,
    summarise_quantization,
)
from eyecatcher.pipelines.quantization.pipeline import create_pipeline
from eyecatcher.pipelines.quantization.report import table_markdown
from eyecatcher.pipelines.quantization.scoring import input_fingerprints, onnx_metadata
from eyecatcher.pipelines.quantization.settings import QuantizationSettings
from eyecatcher.preprocessing import data_config_for

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "data" / "01_raw" / "demo"
CLASSES = [
    "safe",
    "explicit_nudity",
    "explicit_sexual_activity",
    "non_explicit_nudity",
    "swimwear_or_underwear",
]

# Small and fast: a handful of timed calls, scoring (and throughput) in batches of 8.
PARAMS = {
    "methods": ["static", "dynamic"],
    "max_accuracy_drop_points": 5.0,
    "calibration_size": 6,
    "calibration_seed": 0,
    "threads": 1,
    "eval_batch_size": 8,
    "latency": {"warmup": 1, "iterations": 3},
}


def _demo_paths() -> dict[str, list[Path]]:
    classes = {}
    for line in (DEMO / "rekognition_responses.jsonl").open():
        record = json.loads(line)
        classes[record["sha256"]] = record["demo_class"]
    by_class: dict[str, list[Path]] = {}
    for path in sorted((DEMO / "images").rglob("*")):
        if path.is_file():
            label = classes.get(sha256_bytes(path.read_bytes()))
            if label is not None:
                by_class.setdefault(label, []).append(path)
    return by_class


def _manifest(
    train_per_class: int, test_per_class: int, test_classes=None, validation_per_class: int = 1
) -> pd.DataFrame:
    """Demo images per class: train first, then validation, then test."""
    rows = []
    for label, paths in _demo_paths().items():
        limits = [train_per_class, validation_per_class, test_per_class]
        for i, path in enumerate(paths[: sum(limits)]):
            if i < limits[0]:
                split = "train"
            elif i < limits[0] + limits[1]:
                split = "validation"
            else:
                split = "test"
            if split != "train" and test_classes is not None and label not in test_classes:
                continue
            rows.append(
                {
                    "sha256": sha256_bytes(path.read_bytes()),
                    "uri": str(path),
                    "class": label,
                    "split": split,
                    "group": f"g{len(rows)}",
                }
            )
    return pd.DataFrame(rows)


def _bundle(architecture: str = "test_resnet", predict_class: int | None = None, seed: int = 0):
    """A tiny random bundle at 64 px; ``predict_class`` makes it always predict that class."""
    torch.manual_seed(seed)
    kwargs = {"img_size": 64} if architecture == "test_vit" else {}
    model, source = create_classifier(architecture, len(CLASSES), "random", **kwargs)
    if predict_class is not None:
        head = model.get_classifier()
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(0.0)
            head.bias[predict_class] = 10.0
    return ClassifierBundle.from_model(
        model,
        architecture=architecture,
        classes=CLASSES,
        data_config=data_config_for(model, 64),
        weights_source=source,
        model_kwargs=kwargs,
    )


@pytest.fixture(scope="module")
def manifest() -> pd.DataFrame:
    return _manifest(train_per_class=2, test_per_class=2)


# --- the decision rule -------------------------------------------------------------------


def test_decision_keeps_int8_within_threshold_and_picks_the_fastest():
    fp32 = {"accuracy": 0.90, "latency_ms_p50": 100.0}
    int8 = {
        "static": {"accuracy": 0.86, "latency_ms_p50": 80.0},
        "dynamic": {"accuracy": 0.88, "latency_ms_p50": 60.0},
    }
    decision = decide_precision(fp32, int8, 5.0)
    assert decision["precision"] == "int8"
    assert decision["int8_method"] == "dynamic"
    assert decision["accuracy_drop_points"] == pytest.approx(2.0)
    assert decision["reason"].startswith("int8 (dynamic) dropped 2.0 points <= 5")


def test_decision_keeps_fp32_beyond_threshold_with_a_reason():
    fp32 = {"accuracy": 0.90, "latency_ms_p50": 100.0}
    int8 = {"static": {"accuracy": 0.828, "latency_ms_p50": 50.0}}
    decision = decide_precision(fp32, int8, 5.0)
    assert decision["precision"] == "fp32"
    assert decision["accuracy_drop_points"] == pytest.approx(7.2)
    assert decision["reason"] == "int8 (static) dropped 7.2 points > 5"


def test_decision_at_exactly_the_threshold_is_int8():
    # One image out of 20 is exactly 5 points, not 5.000000000000004.
    decision = decide_precision(
        {"accuracy": 0.95, "latency_ms_p50": 10.0},
        {"static": {"accuracy": 0.90, "latency_ms_p50": 9.0}},
        5.0,
    )
    assert decision["precision"] == "int8"
    assert decision["accuracy_drop_points"] == 5.0


def test_decision_without_int8_names_the_failure():
    decision = decide_precision(
        {"accuracy": 0.9, "latency_ms_p50": 10.0}, {}, 5.0, {"export": "boom"}
    )
    assert decision["precision"] == "fp32"
    assert decision["int8_method"] is None
    assert "export: boom" in decision["reason"]


def test_settings_apply_per_architecture_overrides():
    params = {**PARAMS, "by_architecture": {"test_vit": {"methods": ["dynamic"], "threads": 2}}}
    assert QuantizationSettings.from_params(params, "test_vit").methods == ("dynamic",)
    assert QuantizationSettings.from_params(params, "test_vit").threads == 2
    assert QuantizationSettings.from_params(params, "test_resnet").methods == ("static", "dynamic")
    with pytest.raises(ValueError, match=r"by_architecture\.test_vit\.method"):
        QuantizationSettings.from_params({"by_architecture": {"test_vit": {"method": "x"}}})


def test_settings_reject_unknown_keys_and_methods():
    with pytest.raises(ValueError, match="Unknown quantization parameter"):
        QuantizationSettings.from_params({"treshold": 5})
    with pytest.raises(ValueError, match="methods"):
        QuantizationSettings.from_params({"methods": ["qat"]})
    with pytest.raises(ValueError, match=">= 1"):
        QuantizationSettings.from_params({"latency": {"iterations": 0}})
    # A removed block says where its measurement went instead of "unknown key".
    with pytest.raises(ValueError, match="measured while scoring validation and test"):
        QuantizationSettings.from_params({"throughput": {"batch_size": 32}})


# --- scoring round-robin (the throughput measurement) ----------------------------------------


def _recording(name: str, calls: list[tuple[str, int]], fail_on_call: int | None = None):
    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append((name, len(batch)))
        if fail_on_call is not None and sum(c[0] == name for c in calls) == fail_on_call:
            raise RuntimeError("kernel missing")
        return np.repeat(batch[:, :1, 0, 0], 3, axis=1)

    return predict


def test_scoring_takes_turns_keeps_order_and_excludes_the_first_chunk_from_timing():
    calls: list[tuple[str, int]] = []
    splits = {
        "validation": np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1),
        "test": np.arange(10, 13, dtype=np.float32).reshape(3, 1, 1, 1),
    }
    predictors = {"a": _recording("a", calls), "b": _recording("b", calls)}
    scored = score_round_robin(predictors, splits, 2)
    # Chunks: validation [2, 2, 1], test [2, 1]; each chunk goes to a then b.
    assert calls == [(n, k) for k in (2, 2, 1, 2, 1) for n in ("a", "b")]
    for name in ("a", "b"):
        assert scored.outputs[name]["validation"][:, 0].tolist() == [0, 1, 2, 3, 4]
        assert scored.outputs[name]["test"][:, 0].tolist() == [10, 11, 12]
        assert scored.throughput[name]["images"] == 6  # 8 images, the first chunk of 2 untimed
        assert scored.throughput[name]["batch_size"] == 2
        assert scored.throughput[name]["images_per_s"] > 0
    assert scored.failures == {}


def test_scoring_times_everything_when_there_is_only_one_chunk():
    calls: list[tuple[str, int]] = []
    scored = score_round_robin(
        {"a": _recording("a", calls)}, {"test": np.zeros((3, 1, 1, 1), np.float32)}, 8
    )
    assert scored.throughput["a"]["images"] == 3


def test_scoring_drops_an_optional_model_that_fails_and_raises_for_the_others():
    calls: list[tuple[str, int]] = []
    splits = {"test": np.zeros((6, 1, 1, 1), np.float32)}
    predictors = {
        "fp32": _recording("fp32", calls),
        "int8": _recording("int8", calls, fail_on_call=2),
    }
    scored = score_round_robin(predictors, splits, 2, optional=("int8",))
    assert set(scored.outputs) == set(scored.throughput) == {"fp32"}
    assert isinstance(scored.failures["int8"], RuntimeError)
    assert [c[0] for c in calls].count("int8") == 2  # not called again after failing
    with pytest.raises(RuntimeError, match="kernel missing"):
        score_round_robin(
            {"fp32": _recording("fp32", [], fail_on_call=1)}, splits, 2, optional=("int8",)
        )
    with pytest.raises(ValueError, match="at least one image"):
        score_round_robin(predictors, {"test": np.zeros((0, 1, 1, 1), np.float32)}, 2)


# --- build and benchmark with real tiny models ---------------------------------------------


def test_build_and_benchmark_report_has_positive_sizes_and_latencies(manifest):
    # (test_vit goes through the same nodes in the KedroSession test at the end.)
    bundle = _bundle("test_resnet")
    models, attempt = build_onnx_models(bundle, manifest, PARAMS)
    assert set(models) == {"fp32", "int8_static", "int8_dynamic"}
    assert attempt["failure"] is None
    assert attempt["calibration_size"] == 6
    assert attempt["export"]["max_abs_logit_diff"] <= 1e-3

    report = benchmark_candidate(models, bundle, manifest, attempt, PARAMS)
    assert report["precision"] in {"int8", "fp32"}
    assert set(report["int8"]) == {"static", "dynamic"}
    assert report["benchmark"]["test_images"] == 10
    for measured in [report["fp32"], *report["int8"].values()]:
        assert measured["size_bytes"] > 0
        assert measured["latency_ms_p50"] > 0
        assert measured["latency_ms_p95"] >= measured["latency_ms_p50"]
        assert measured["throughput_images_per_s"] > 0
        assert measured["throughput_batch_size"] == 8
        assert 0.0 <= measured["accuracy"] <= 1.0
        assert 0.0 <= measured["macro_f1"] <= 1.0
    # Static int8 weights are about a quarter of fp32 (both are ONNX files).
    assert report["int8"]["static"]["size_bytes"] < report["fp32"]["size_bytes"]
    drop = report["accuracy_drop_points"]
    assert report["precision"] == ("int8" if drop <= 5.0 else "fp32")
    json.dumps(report)  # the report is what the JSON dataset writes


def test_both_sides_of_the_threshold_end_to_end():
    # Only "safe" images in the test split, and a model that always says "safe": fp32 and a
    # faithful int8 model are 100% right; a broken "int8" model that says class 1 is 0% right.
    manifest = _manifest(train_per_class=2, test_per_class=2, test_classes={"safe"})
    bundle = _bundle(predict_class=0)
    params = {**PARAMS, "methods": ["static"]}
    models, attempt = build_onnx_models(bundle, manifest, params)

    good = benchmark_candidate(models, bundle, manifest, attempt, params)
    assert good["fp32"]["accuracy"] == 1.0
    assert good["precision"] == "int8"
    assert good["calibration"]["precision"] == "int8"
    assert (
        read_metadata(models["int8_static"])["bundle_fingerprint"]
        == (good["fingerprints"]["bundle"])
    )
    assert good["accuracy_drop_points"] == 0.0

    wrong, _ = build_onnx_models(_bundle(predict_class=1), manifest, params)
    # A model built from another bundle is refused by its metadata, naming the rebuild.
    with pytest.raises(StaleArtefactError, match="kedro run --pipelines quantization"):
        benchmark_candidate(
            {**models, "int8_static": wrong["fp32"]}, bundle, manifest, attempt, params
        )
    # Relabelled as this bundle's int8 model, it is measured and refused on validation.
    relabelled = with_metadata(
        wrong["fp32"], onnx_metadata(input_fingerprints(bundle, manifest, params), "int8_static")
    )
    broken = {**models, "int8_static": relabelled}
    bad = benchmark_candidate(broken, bundle, manifest, attempt, params)
    assert bad["precision"] == "fp32"
    assert bad["reason"] == "on validation: int8 (static) dropped 100.0 points > 5"
    assert bad["int8"]["static"]["agreement_with_fp32"] == 0.0
    # The served (fp32) model's thresholds were calibrated on its own validation scores.
    assert bad["calibration"]["precision"] == "fp32"
    assert set(bad["test_predictions"].values()) == {"safe"}


def test_export_failure_keeps_fp32_and_records_it(manifest, monkeypatch, caplog):
    def failing_export(*args, **kwargs):
        raise QuantizationError("export", "UnsupportedOperatorError: aten::weird_op")

    monkeypatch.setattr(export, "export_onnx", failing_export)
    bundle = _bundle()
    models, attempt = build_onnx_models(bundle, manifest, PARAMS)
    assert models == {}
    assert attempt["failure"] == {
        "stage": "export",
        "error": "QuantizationError: export failed: UnsupportedOperatorError: aten::weird_op",
    }
    assert "ONNX export of test_resnet failed" in caplog.text

    report = benchmark_candidate(models, bundle, manifest, attempt, PARAMS)
    assert report["precision"] == "fp32"
    assert report["fp32"]["runtime"] == "torch"
    assert report["fp32"]["latency_ms_p50"] > 0
    assert report["int8"] == {}
    assert "weird_op" in report["failures"]["export"]
    assert "no int8 model available" in report["reason"]


def test_an_export_that_changes_the_logits_is_a_failure(manifest, monkeypatch):
    class DriftingClassifier(OnnxClassifier):
        def predict_logits(self, batch):
            return super().predict_logits(batch) + 0.5

    monkeypatch.setattr(export, "OnnxClassifier", DriftingClassifier)
    models, attempt = build_onnx_models(_bundle(), manifest, PARAMS)
    assert models == {}
    assert attempt["failure"]["stage"] == "export"
    assert "ONNX logits differ from PyTorch by 0.5" in attempt["failure"]["error"]


def test_quantizer_failure_of_one_method_keeps_the_other(manifest, monkeypatch):
    real = nodes.quantize_onnx

    def flaky(fp32_path, int8_path, *, method, **kwargs):
        if method == "static":
            raise QuantizationError("quantize", "NotImplementedError: no kernel for Foo")
        return real(fp32_path, int8_path, method=method, **kwargs)

    monkeypatch.setattr(nodes, "quantize_onnx", flaky)
    bundle = _bundle()
    models, attempt = build_onnx_models(bundle, manifest, PARAMS)
    assert set(models) == {"fp32", "int8_dynamic"}
    assert attempt["methods"]["static"]["failure"]["stage"] == "quantize"
    report = benchmark_candidate(models, bundle, manifest, attempt, PARAMS)
    assert set(report["int8"]) == {"dynamic"}
    assert "no kernel for Foo" in report["failures"]["static"]


def test_an_int8_model_that_fails_while_scoring_is_dropped_not_fatal(manifest, monkeypatch):
    bundle = _bundle()
    models, attempt = build_onnx_models(bundle, manifest, PARAMS)
    real = nodes.onnx_predictor

    def predictor(model, threads):
        predict = real(model, threads)
        if read_metadata(model)["variant"] != "int8_static":
            return predict

        def fails(batch):
            raise RuntimeError("no kernel for QLinearFoo")

        return fails

    monkeypatch.setattr(nodes, "onnx_predictor", predictor)
    report = benchmark_candidate(models, bundle, manifest, attempt, PARAMS)
    assert set(report["int8"]) == {"dynamic"}
    assert "no kernel for QLinearFoo" in report["failures"]["static"]
    assert report["int8"]["dynamic"]["throughput_images_per_s"] > 0


def test_unknown_class_in_the_test_split_is_a_clear_error(manifest):
    bundle = _bundle()
    renamed = manifest.assign(**{"class": manifest["class"].replace("safe", "benign")})
    params = {**PARAMS, "methods": ["dynamic"]}
    # Built without calibration images (the train split is unreadable for this model).
    models, attempt = build_onnx_models(bundle, renamed, params)
    with pytest.raises(ValueError, match=r"class\(es\) \['benign'\]"):
        benchmark_candidate(models, bundle, renamed, attempt, params)


# --- the ONNX runner -------------------------------------------------------------------------


def test_onnx_classifier_probabilities_sum_to_one(manifest, tmp_path):
    bundle = _bundle()
    models, _ = build_onnx_models(bundle, manifest, {**PARAMS, "methods": ["dynamic"]})
    runner = OnnxClassifier(models["int8_dynamic"], threads=1)
    batch = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    proba = runner.predict_proba(batch)
    assert proba.shape == (3, len(CLASSES))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        runner.predict_proba(batch[0])


# --- the summary and the pipeline ------------------------------------------------------------


def test_pipeline_runs_per_candidate_and_summarises(manifest):
    # Two candidates of the same tiny architecture keep this fast; the KedroSession test below
    # runs a CNN and a ViT.
    pipeline = create_pipeline(candidates=["cnn_a", "cnn_b"])
    catalog = DataCatalog(
        {
            "cnn_a.model_bundle": MemoryDataset(_bundle("test_resnet")),
            "cnn_b.model_bundle": MemoryDataset(_bundle("test_resnet", seed=1)),
            "split_manifest": MemoryDataset(manifest),
            "params:quantization": MemoryDataset(PARAMS),
        }
    )
    SequentialRunner().run(pipeline, catalog)
    decision = catalog.load("quantization_decision")
    assert set(decision["candidates"]) == {"cnn_a", "cnn_b"}
    for entry in decision["candidates"].values():
        assert entry["precision"] in {"int8", "fp32"}
        assert entry["reason"]
        assert entry["fp32"]["size_bytes"] > 0
        if entry["precision"] == "int8":
            assert entry["int8"]["latency_ms_p50"] > 0
    metrics = catalog.load("quantization_metrics")
    assert metrics["cnn_a.fp32.latency_ms_p50"]["value"] > 0
    assert catalog.load("quantization_chart").axes
    markdown = catalog.load("quantization_table_markdown")
    assert markdown.count("\n") == 2 + 6  # header, rule, fp32 + two int8 per candidate
    assert markdown.count("| yes |") == 2  # one chosen variant per candidate


def test_summary_of_a_failed_candidate_records_the_failure(manifest, monkeypatch):
    monkeypatch.setattr(
        export, "export_onnx", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no export"))
    )
    bundle = _bundle()
    models, attempt = build_onnx_models(bundle, manifest, PARAMS)
    report = benchmark_candidate(models, bundle, manifest, attempt, PARAMS)
    decision, table, _, metrics = summarise_quantization(PARAMS, broken=report)
    entry = decision["candidates"]["broken"]
    assert entry["precision"] == "fp32"
    assert entry["failure"] == {"export": "RuntimeError: no export"}
    assert entry["model_path"] is None  # fp32 stays the PyTorch bundle
    assert metrics["broken.failures"]["value"] == 1.0
    assert table["variant"].tolist() == ["fp32"]
    assert "| broken | fp32 | yes |" in table_markdown(table)


# --- in a KedroSession: config, catalog, candidates and MLflow as `kedro run` uses them -----


@pytest.fixture
def fresh_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget any config loader captured from an earlier session in this process."""
    from eyecatcher import candidates

    monkeypatch.setattr(candidates, "_captured", {})


@pytest.mark.slow
def test_quantization_in_a_kedro_session_logs_to_mlflow(kedro_project, fresh_candidates):
    import mlflow
    from kedro.framework.session import KedroSession

    from eyecatcher.datasets.classifier_bundle_dataset import ClassifierBundleDataset

    # The upstream outputs, written where the training and splitting catalogs keep them.
    manifest = _manifest(train_per_class=2, test_per_class=2)
    manifest.to_parquet(kedro_project / "data" / "05_model_input" / "split_manifest.parquet")
    for candidate in ("test_resnet", "test_vit"):
        path = kedro_project / "data" / "06_models" / candidate / "model_bundle.pt"
        ClassifierBundleDataset(filepath=str(path)).save(_bundle(candidate))
    stale = kedro_project / "data" / "06_models" / "test_vit" / "onnx" / "int8_old.onnx"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an earlier run")

    with KedroSession.create(project_path=kedro_project, env="test") as session:
        session.run(pipeline_names=["quantization"])

    reporting = kedro_project / "data" / "08_reporting"
    decision = json.loads((reporting / "quantization_decision.json").read_text())
    assert set(decision["candidates"]) == {"test_resnet", "test_vit"}
    for candidate, entry in decision["candidates"].items():
        assert entry["precision"] in {"int8", "fp32"} and entry["reason"]
        assert Path(entry["fp32"]["path"]).is_file()
        assert Path(entry["model_path"]).is_file()
        assert (reporting / candidate / "quantization_report.json").is_file()
    assert not stale.exists()
    assert (reporting / "quantization_chart.png").stat().st_size > 0
    table = pd.read_csv(reporting / "quantization_table.csv")
    assert set(table["candidate"]) == {"test_resnet", "test_vit"}

    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "quantization")}
    assert {
        "quantization/quantization_decision.json",
        "quantization/quantization_table.csv",
        "quantization/quantization_table.md",
        "quantization/quantization_chart.png",
    } <= artifacts
    assert run.data.metrics["quantization.test_resnet.fp32.latency_ms_p50"] > 0
    assert "quantization.test_vit.int8_chosen" in run.data.metrics


def test_reason_never_reads_as_a_drop_within_the_threshold():
    # 5.04 points is over 5: "dropped 5.0 points > 5" would contradict itself.
    fp32 = {"accuracy": 0.9000, "latency_ms_p50": 100.0}
    int8 = {"static": {"accuracy": 0.8496, "latency_ms_p50": 50.0}}
    decision = decide_precision(fp32, int8, 5.0)
    assert decision["precision"] == "fp32"
    assert decision["reason"] == "int8 (static) dropped 5.04 points > 5"
