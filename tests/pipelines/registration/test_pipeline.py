"""Registration: the gate, the registry actions and lineage, on a temporary sqlite registry.

Inputs are built here as training and quantization write them (``docs/architecture.md``), with
tiny random-weight ``test_resnet`` / ``test_vit`` bundles and a handful of test images on disk.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from mlflow import MlflowClient

from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.factory import create_classifier
from eyecatcher.pipelines.registration import create_pipeline
from eyecatcher.pipelines.registration import nodes as registration_nodes
from eyecatcher.pipelines.registration.gate import (
    ChampionComparison,
    GateFailedError,
    GateSettings,
    decide,
)
from eyecatcher.pipelines.registration.lineage import git_commit, manifest_hash
from eyecatcher.pipelines.registration.nodes import (
    RegistrationInputError,
    decision_thresholds,
    enforce_gate,
    register_model,
)
from eyecatcher.preprocessing import bytes_to_batch, data_config_for
from eyecatcher.serving_model import encode_image
from tests.image_factory import good_images

REPO = Path(__file__).resolve().parents[3]
CLASSES = ["safe", "swimwear_or_underwear", "explicit_nudity"]
MODEL = "eyecatcher-test"
LINEAGE_TAGS = {
    "git_commit",
    "data_manifest_hash",
    "test_split_hash",
    "parent_run_id",
    "training_run_id",
    "candidate",
    "quantization_precision",
    "quantization_reason",
    "test_accuracy",
    "test_macro_f1",
    "gate_min_test_accuracy",
    "gate_max_regression_vs_champion",
    "operating_threshold",
}


def make_bundle(architecture: str, seed: int = 0) -> ClassifierBundle:
    torch.manual_seed(seed)
    model, source = create_classifier(architecture, len(CLASSES), "random")
    return ClassifierBundle.from_model(
        model,
        architecture=architecture,
        classes=CLASSES,
        data_config=data_config_for(model, 64),
        weights_source=source,
    )


@pytest.fixture(scope="module")
def bundles() -> dict[str, ClassifierBundle]:
    return {"test_resnet": make_bundle("test_resnet"), "test_vit": make_bundle("test_vit", 1)}


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised, empty MLflow sqlite file: creating the schema takes seconds, copying not."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{path}", (path.parent / "artifacts").as_uri())
    return path


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> MlflowClient:
    """A sqlite registry and artefact store under ``tmp_path`` (the working directory)."""
    monkeypatch.chdir(tmp_path)
    shutil.copy2(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment(
        "registration-tests", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    mlflow.set_experiment(experiment_id=experiment)
    yield MlflowClient()
    mlflow.set_tracking_uri(None)


def write_manifest(folder: Path, seed: int = 0, n_test: int = 6) -> pd.DataFrame:
    """Images on disk and a split manifest whose test split holds ``n_test`` of them."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    images = list(good_images(seed=seed).values())
    for index, data in enumerate(images[: n_test + 2]):
        path = folder / f"image_{seed}_{index}.bin"
        path.write_bytes(data)
        rows.append(
            {
                "sha256": hashlib.sha256(data).hexdigest(),
                "uri": str(path),
                "class": CLASSES[index % len(CLASSES)],
                "split": "test" if index < n_test else "train",
                "group": index,
            }
        )
    return pd.DataFrame(rows)


def evaluation(candidate: str, accuracy: float, threshold: float | None = 0.3) -> dict[str, Any]:
    """An evaluation record with the fields training writes and registration reads."""
    test = {
        "accuracy": accuracy,
        "macro_f1": accuracy - 0.05,
        "roc_auc": 0.8,
        "pr_auc": 0.7,
        "recall_at_threshold": 0.6,
        "fpr_at_threshold": 0.01,
    }
    return {
        "candidate": candidate,
        "classes": CLASSES,
        "safe_class": "safe",
        "validation": dict(test),
        "test": test,
        "operating_threshold": {"threshold": threshold, "calibrated_on": "validation"},
    }


def inputs(
    bundles: dict[str, ClassifierBundle],
    manifest: pd.DataFrame,
    *,
    accuracy: float,
    selected: str = "test_resnet",
    precision: str = "fp32",
    onnx_path: str | None = None,
    int8_accuracy: float | None = None,
    **param_overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for :func:`register_model`."""
    params: dict[str, Any] = {
        "model_name": MODEL,
        "gate": {
            "min_test_accuracy": 0.6,
            "max_regression_vs_champion": 0.02,
            "on_unscorable_champion": "fail",
            "fail_run_on_failure": False,
        },
        "decision": {"review_threshold": "operating", "block_threshold": 0.9},
        "serving": {"max_pixels": 10_000_000, "max_image_bytes": 5_000_000, "batch_size": 4},
        "smoke_test_images": 3,
        "batch_size": 4,
        "storage_options": {},
    }
    for key, value in param_overrides.items():
        section, _, name = key.partition("__")
        if name:
            params[section][name] = value
        else:
            params[section] = value
    candidates: dict[str, Any] = {}
    for name, bundle in bundles.items():
        candidates[f"evaluation__{name}"] = evaluation(name, accuracy if name == selected else 0.1)
        candidates[f"bundle__{name}"] = bundle
        candidates[f"mlflow_run__{name}"] = {"run_id": f"training-run-{name}", "candidate": name}
    entry: dict[str, Any] = {"precision": precision, "reason": f"{precision} chosen in a test"}
    if precision == "int8":
        entry.update(
            int8_method="static",
            int8={"path": onnx_path, "accuracy": int8_accuracy, "method": "static"},
            model_path=onnx_path,
        )
    return {
        "candidate_selection": {
            "selected": selected,
            "metric": "macro_f1",
            "reason": "highest validation macro_f1",
        },
        "quantization_decision": {"candidates": {selected: entry}},
        "split_manifest": manifest,
        "params": params,
        **candidates,
    }


def champion_version(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


def in_process_accuracy(bundle: ClassifierBundle, manifest: pd.DataFrame) -> float:
    rows = manifest[manifest["split"] == "test"]
    images = [Path(uri).read_bytes() for uri in rows["uri"]]
    with torch.inference_mode():
        predicted = bundle.build_model()(bytes_to_batch(images, bundle.data_config)).argmax(1)
    return float((np.array(CLASSES)[predicted.numpy()] == rows["class"].to_numpy()).mean())


def test_first_registration_through_the_pipeline(registry, bundles, tmp_path) -> None:
    """A Kedro run of the pipeline registers v1 as champion with lineage, and it serves."""
    manifest = write_manifest(tmp_path / "images")
    kwargs = inputs(bundles, manifest, accuracy=0.8)
    catalog = DataCatalog(
        {
            "candidate_selection": MemoryDataset(kwargs["candidate_selection"]),
            "quantization_decision": MemoryDataset(kwargs["quantization_decision"]),
            "split_manifest": MemoryDataset(manifest),
            "params:registration": MemoryDataset(kwargs["params"]),
            **{
                f"{name}.{kind}": MemoryDataset(kwargs[f"{key}__{name}"], copy_mode="assign")
                for name in bundles
                for kind, key in (
                    ("evaluation", "evaluation"),
                    ("model_bundle", "bundle"),
                    ("mlflow_run", "mlflow_run"),
                )
            },
            # A file, not memory: the runner releases memory datasets once consumed.
            "registration_report": JSONDataset(filepath=str(tmp_path / "report.json")),
            "registration_metrics": MemoryDataset(),
        }
    )
    with mlflow.start_run() as run:
        free_outputs = SequentialRunner().run(create_pipeline(list(bundles)), catalog)
    report = JSONDataset(filepath=str(tmp_path / "report.json")).load()
    assert report["outcome"] == "registered"
    assert report["version"] == "1" and report["previous_champion"] is None
    assert champion_version(registry) == "1"
    assert "challenger" not in registry.get_registered_model(MODEL).aliases
    version = registry.get_model_version(MODEL, "1")
    assert set(version.tags) >= LINEAGE_TAGS
    assert version.tags["candidate"] == "test_resnet"
    assert version.tags["parent_run_id"] == run.info.run_id
    assert version.tags["training_run_id"] == "training-run-test_resnet"
    assert version.tags["data_manifest_hash"] == manifest_hash(manifest)
    assert version.tags["test_accuracy"] == "0.8"
    assert version.tags["quantization_precision"] == "fp32"
    assert version.tags["smoke_test"] == "passed"
    run_tags = registry.get_run(run.info.run_id).data.tags
    assert run_tags["registration.gate"] == "passed"
    assert run_tags["registration.model_version"] == "1"
    assert free_outputs["registration_metrics"].load()["gate_passed"]["value"] == 1.0

    served = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    jpeg = good_images()["rgb.jpg"]
    out = served.predict(pd.DataFrame({"image": [encode_image(jpeg)]}))
    assert out.loc[0, "error"] is None and out.loc[0, "class"] in CLASSES
    assert out.loc[0, "model_name"] == MODEL and out.loc[0, "model_version"] == "1"
    assert out.loc[0, "decision"] in {"allow", "review", "block"}


def test_gate_failure_registers_nothing_and_says_why(registry, bundles, tmp_path, caplog) -> None:
    manifest = write_manifest(tmp_path / "images")
    kwargs = inputs(bundles, manifest, accuracy=0.55)
    with mlflow.start_run() as run:
        report, metrics = register_model(**kwargs)
    assert report["outcome"] == "rejected" and report["version"] is None
    assert report["gate"]["reasons"] == ["accuracy 0.55 < 0.60"]
    assert "accuracy 0.55 < 0.60" in caplog.text
    assert registry.search_model_versions(f"name='{MODEL}'") == []
    tags = registry.get_run(run.info.run_id).data.tags
    assert tags["registration.gate"] == "failed"
    assert "accuracy 0.55 < 0.60" in tags["registration.gate_summary"]
    assert metrics["gate_passed"]["value"] == 0.0
    assert metrics["test_accuracy"]["value"] == 0.55
    # The CI switch turns the refusal into a failed run; off, the run goes on.
    enforce_gate(report, kwargs["params"])
    strict = copy.deepcopy(kwargs["params"])
    strict["gate"]["fail_run_on_failure"] = True
    with pytest.raises(GateFailedError, match=r"accuracy 0\.55 < 0\.60"):
        enforce_gate(report, strict)


def test_champion_kept_when_the_candidate_is_worse(registry, bundles, tmp_path) -> None:
    manifest = write_manifest(tmp_path / "images")
    with mlflow.start_run():
        first, _ = register_model(**inputs(bundles, manifest, accuracy=0.80))
    with mlflow.start_run():
        second, _ = register_model(**inputs(bundles, manifest, accuracy=0.70, selected="test_vit"))
    assert first["outcome"] == "registered"
    assert second["outcome"] == "rejected"
    assert second["gate"]["checks"]["champion_comparison"] == "recorded"
    assert second["gate"]["reasons"] == [
        "accuracy 0.70 is 0.10 below champion v1 (0.80, recorded) on the same test split; "
        "the allowed margin is 0.02"
    ]
    assert champion_version(registry) == "1"
    assert len(registry.search_model_versions(f"name='{MODEL}'")) == 1


def test_rerun_without_changes_keeps_the_champion_unregistered(registry, bundles, tmp_path) -> None:
    manifest = write_manifest(tmp_path / "images")
    with mlflow.start_run():
        first, _ = register_model(**inputs(bundles, manifest, accuracy=0.8))
    strict = inputs(bundles, manifest, accuracy=0.8, gate__fail_run_on_failure=True)
    with mlflow.start_run():
        again, metrics = register_model(**strict)
    assert first["outcome"] == "registered"
    assert again["outcome"] == "unchanged" and again["version"] is None
    assert again["aliases"] == {"champion": "1"}
    assert len(registry.search_model_versions(f"name='{MODEL}'")) == 1
    assert registry.get_model_version(MODEL, "1").tags["model_fingerprint"]
    assert metrics["registered"]["value"] == 0.0
    enforce_gate(again, strict["params"])  # no change is not a failure, even for CI
    # Another decision threshold is another served model.
    changed = inputs(bundles, manifest, accuracy=0.8, decision__block_threshold=0.95)
    with mlflow.start_run():
        third, _ = register_model(**changed)
    assert third["outcome"] == "registered" and third["version"] == "2"


def test_champion_replaced_within_the_margin(registry, bundles, tmp_path) -> None:
    manifest = write_manifest(tmp_path / "images")
    with mlflow.start_run():
        register_model(**inputs(bundles, manifest, accuracy=0.80))
    with mlflow.start_run():
        report, _ = register_model(**inputs(bundles, manifest, accuracy=0.79, selected="test_vit"))
    assert report["outcome"] == "registered"
    assert report["version"] == "2" and report["previous_champion"] == "1"
    assert champion_version(registry) == "2"
    old = registry.get_model_version(MODEL, "1")
    assert old.aliases == [] and old.tags["candidate"] == "test_resnet"
    new = registry.get_model_version(MODEL, "2")
    assert new.tags["candidate"] == "test_vit"
    assert new.tags["gate_champion_version"] == "1"
    out = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(
        pd.DataFrame({"image": [encode_image(good_images()["rgb.png"])]})
    )
    assert out.loc[0, "model_version"] == "2"


def test_champion_is_rescored_on_a_new_test_split(registry, bundles, tmp_path) -> None:
    first_manifest = write_manifest(tmp_path / "first", seed=0)
    new_manifest = write_manifest(tmp_path / "second", seed=7)
    assert manifest_hash(first_manifest, "test") != manifest_hash(new_manifest, "test")
    with mlflow.start_run():
        register_model(**inputs(bundles, first_manifest, accuracy=0.9))
    with mlflow.start_run():
        report, _ = register_model(
            **inputs(bundles, new_manifest, accuracy=1.0, selected="test_vit")
        )
    checks = report["gate"]["checks"]
    assert checks["champion_comparison"] == "rescored"
    assert checks["champion_accuracy"] == pytest.approx(
        in_process_accuracy(bundles["test_resnet"], new_manifest)
    )
    assert report["outcome"] == "registered"


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_unscorable_champion_follows_the_policy(
    registry, bundles, tmp_path, monkeypatch, policy
) -> None:
    with mlflow.start_run():
        register_model(**inputs(bundles, write_manifest(tmp_path / "a", seed=0), accuracy=0.9))

    def broken(*args: Any, **kwargs: Any) -> float:
        raise OSError("artefacts deleted")

    monkeypatch.setattr(registration_nodes, "score_on_test_split", broken)
    new = write_manifest(tmp_path / "b", seed=9)
    with mlflow.start_run() as run:
        report, _ = register_model(
            **inputs(
                bundles,
                new,
                accuracy=0.9,
                selected="test_vit",
                gate__on_unscorable_champion=policy,
            )
        )
    if policy == "fail":
        assert report["outcome"] == "rejected"
        assert "could not be compared" in report["gate"]["reasons"][0]
        assert champion_version(registry) == "1"
    else:
        assert report["outcome"] == "registered" and champion_version(registry) == "2"
        assert "SKIPPED" in registry.get_run(run.info.run_id).data.tags["registration.warnings"]
        assert "SKIPPED" in registry.get_model_version(MODEL, "2").tags["gate_warnings"]


def test_failed_staging_test_leaves_a_challenger_and_no_champion(
    registry, bundles, tmp_path, monkeypatch
) -> None:
    def unloadable(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise OSError("artefact store unreachable")

    monkeypatch.setattr(registration_nodes, "_smoke_test", unloadable)
    kwargs = inputs(bundles, write_manifest(tmp_path / "images"), accuracy=0.9)
    with mlflow.start_run():
        report, _ = register_model(**kwargs)
    assert report["outcome"] == "smoke_test_failed"
    assert report["aliases"] == {"challenger": "1"}
    assert report["gate"]["summary"].startswith("failed: staging inference test failed")
    assert {k: str(v) for k, v in registry.get_registered_model(MODEL).aliases.items()} == {
        "challenger": "1"
    }
    tag = registry.get_model_version(MODEL, "1").tags["smoke_test"]
    assert tag == "failed: OSError: artefact store unreachable"
    strict = copy.deepcopy(kwargs["params"])
    strict["gate"]["fail_run_on_failure"] = True
    with pytest.raises(GateFailedError, match="smoke_test_failed"):
        enforce_gate(report, strict)


def test_int8_decision_serves_and_gates_the_onnx_model(registry, bundles, tmp_path) -> None:
    onnx_runtime = pytest.importorskip("eyecatcher.models.onnx_runtime")
    bundle = bundles["test_resnet"]
    onnx_path = onnx_runtime.export_onnx(
        bundle.build_model(), bundle.data_config["input_size"], tmp_path / "int8.onnx"
    )
    manifest = write_manifest(tmp_path / "images")
    kwargs = inputs(
        bundles,
        manifest,
        accuracy=0.9,
        precision="int8",
        onnx_path=str(onnx_path),
        int8_accuracy=0.5,
    )
    with mlflow.start_run():
        rejected, _ = register_model(**kwargs)
    # The int8 model is what would be served, so its accuracy is the one gated.
    assert rejected["gate"]["reasons"] == ["accuracy 0.50 < 0.60"]
    kwargs["quantization_decision"]["candidates"]["test_resnet"]["int8"]["accuracy"] = 0.7
    with mlflow.start_run():
        report, _ = register_model(**kwargs)
    assert report["outcome"] == "registered" and report["precision"] == "int8"
    # The staging test compared the served int8 answers with the ONNX model in-process.
    assert report["smoke_test"]["agreement"] == 1.0
    version = registry.get_model_version(MODEL, report["version"])
    assert version.tags["quantization_precision"] == "int8"
    assert version.tags["test_accuracy"] == "0.7"
    assert version.tags["test_accuracy_fp32"] == "0.9"


def test_inconsistent_inputs_are_clear_errors(registry, bundles, tmp_path) -> None:
    manifest = write_manifest(tmp_path / "images")
    kwargs = inputs(bundles, manifest, accuracy=0.9)
    kwargs["candidate_selection"]["selected"] = "resnet50"
    with pytest.raises(RegistrationInputError, match="not among the pipeline's candidates"):
        register_model(**kwargs)
    kwargs = inputs(bundles, manifest, accuracy=0.9, precision="int8", onnx_path="missing.onnx")
    with pytest.raises(RegistrationInputError, match="ONNX file"):
        register_model(**kwargs)
    kwargs = inputs(bundles, manifest, accuracy=0.9)
    kwargs["evaluation__test_resnet"]["operating_threshold"]["threshold"] = None
    with pytest.raises(RegistrationInputError, match="operating threshold"):
        register_model(**kwargs)
    assert registry.search_registered_models() == []


def test_gate_rules() -> None:
    settings = GateSettings(min_test_accuracy=0.6, max_regression_vs_champion=0.02)
    none = ChampionComparison(None, None, "none")
    assert decide(0.6, settings, none).passed
    assert decide(0.59, settings, none).reasons == ["accuracy 0.59 < 0.60"]
    champion = ChampionComparison("3", 0.75, "recorded")
    assert decide(0.73, settings, champion).passed  # exactly the allowed margin
    assert not decide(0.72, settings, champion).passed
    assert not decide(float("nan"), settings, none).passed
    with pytest.raises(ValueError, match="on_unscorable_champion"):
        GateSettings(0.5, 0.02, on_unscorable_champion="ignore")
    with pytest.raises(ValueError, match="fraction"):
        GateSettings(0.5, 2.0)


def test_decision_thresholds_use_the_calibrated_threshold() -> None:
    thresholds, warnings = decision_thresholds(
        {"review_threshold": "operating", "block_threshold": 0.9}, 0.35
    )
    assert (thresholds.review, thresholds.block) == (0.35, 0.9) and warnings == []
    thresholds, warnings = decision_thresholds(
        {"review_threshold": "operating", "block_threshold": 0.9}, 0.95
    )
    assert (thresholds.review, thresholds.block) == (0.95, 0.95)
    assert "block raised" in warnings[0]
    with pytest.raises(RegistrationInputError):
        decision_thresholds({"review_threshold": "operating", "block_threshold": 0.9}, None)


def test_lineage_helpers() -> None:
    commit, dirty = git_commit(REPO)
    assert len(commit) == 40 and dirty in {True, False}
    assert git_commit("/") == ("unknown", None)
    frame = pd.DataFrame(
        {"sha256": ["a", "b", "c"], "class": ["safe", "x", "y"], "split": ["test", "test", "train"]}
    )
    shuffled = frame.iloc[::-1]
    assert manifest_hash(frame) == manifest_hash(shuffled)
    assert manifest_hash(frame, "test") != manifest_hash(frame)
    relabelled = frame.assign(**{"class": ["safe", "y", "y"]})
    assert manifest_hash(relabelled, "test") != manifest_hash(frame, "test")


def test_pipeline_reads_every_candidate_and_writes_the_report() -> None:
    pipeline = create_pipeline(["resnet50", "vit_b16"])
    assert {"resnet50.evaluation", "vit_b16.model_bundle", "vit_b16.mlflow_run"} <= set(
        pipeline.inputs()
    )
    assert {"candidate_selection", "quantization_decision", "split_manifest"} <= set(
        pipeline.inputs()
    )
    assert pipeline.outputs() == {"registration_metrics"}
    assert [n.name for n in pipeline.nodes] == ["register_model", "enforce_registration_gate"]


@pytest.mark.slow
def test_default_run_on_the_demo_registers_a_champion_and_an_impossible_bar_keeps_it(
    kedro_project: Path,
) -> None:
    """The issue's "done when": ``kedro run`` on the demo, then a re-run that must refuse."""
    from kedro.framework.session import KedroSession

    with KedroSession.create(project_path=kedro_project, env="test") as session:
        session.run()
    # kedro-mlflow leaves its run active in this process; the next session must get its own.
    while mlflow.active_run():
        mlflow.end_run()
    client = MlflowClient()
    name = "eyecatcher-moderation"
    champion = client.get_model_version_by_alias(name, "champion")
    assert set(champion.tags) >= LINEAGE_TAGS
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    jpeg = good_images()["rgb.jpg"]
    out = served.predict(pd.DataFrame({"image": [encode_image(jpeg)], "id": ["x"]}))
    assert out.loc[0, "error"] is None
    assert out.loc[0, "model_version"] == str(champion.version)

    # Nested runtime params merge into the configured block (parameters are soft-merged).
    impossible = {"registration": {"gate": {"min_test_accuracy": 2.0, "fail_run_on_failure": True}}}
    with (
        KedroSession.create(
            project_path=kedro_project, env="test", runtime_params=impossible
        ) as session,
        pytest.raises(GateFailedError, match=r"< 2\.00"),
    ):
        session.run(pipeline_names=["registration"])
    while mlflow.active_run():
        mlflow.end_run()
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(champion.version)
    assert len(client.search_model_versions(f"name='{name}'")) == 1
    report = JSONDataset(
        filepath=str(kedro_project / "data" / "08_reporting" / "registration_report.json")
    ).load()
    assert report["outcome"] == "rejected"


def test_interrupted_upload_leaves_no_half_made_version(
    registry, bundles, tmp_path, monkeypatch
) -> None:
    manifest = write_manifest(tmp_path / "images")

    def interrupted(**kwargs: Any) -> None:
        raise KeyboardInterrupt("Ctrl-C while the model uploads")

    monkeypatch.setattr(registration_nodes, "log_served_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        register_model(**inputs(bundles, manifest, accuracy=0.9))
    assert registry.search_model_versions(f"name='{MODEL}'") == []
    with pytest.raises(mlflow.exceptions.MlflowException):
        registry.get_model_version_by_alias(MODEL, "champion")


def test_gate_reasons_never_print_two_equal_numbers() -> None:
    settings = GateSettings(min_test_accuracy=0.6, max_regression_vs_champion=0.02)
    none = ChampionComparison(None, None, "none")
    assert decide(0.5972, settings, none).reasons == ["accuracy 0.5972 < 0.6000"]
    champion = ChampionComparison("3", 0.9, "recorded")
    (reason,) = decide(0.8769, settings, champion).reasons
    assert reason.startswith("accuracy 0.88 is 0.0231 below champion v3 (0.90, recorded)")
    assert reason.endswith("the allowed margin is 0.0200")
