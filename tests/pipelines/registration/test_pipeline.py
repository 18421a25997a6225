"""Registration: the gate, the registry actions and lineage, on a temporary sqlite registry.

Inputs are built here as training and quantization write them (``docs/architecture.md``), with
tiny random-weight ``test_resnet`` / ``test_vit`` bundles and a handful of test images on disk.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from eyecatcher.datasets.optional_json_dataset import OptionalJSONDataset
from eyecatcher.fingerprints import StaleArtefactError, bundle_fingerprint, config_hash
from eyecatcher.models import onnx_runtime
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.factory import create_classifier
from eyecatcher.models.onnx_runtime import with_metadata
from eyecatcher.monitoring.populations import phash_of
from eyecatcher.pipelines.registration import create_pipeline, staging
from eyecatcher.pipelines.registration import nodes as registration_nodes
from eyecatcher.pipelines.registration.gate import (
    ChampionComparison,
    GateFailedError,
    GateSettings,
    Served,
    decide,
    mcnemar_worse_p_value,
)
from eyecatcher.pipelines.registration.lineage import git_commit, label_sources, manifest_hash
from eyecatcher.pipelines.registration.nodes import (
    RegistrationInputError,
    enforce_gate,
    register_model,
)
from eyecatcher.pipelines.registration.settings import RegistrationSettings
from eyecatcher.preprocessing import bytes_to_batch, data_config_for
from eyecatcher.serving.in_process import load_registered_model
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


QUANTIZATION_PARAMS = {"methods": ["static"], "threads": 1}


def evaluation(candidate: str, accuracy: float) -> dict[str, Any]:
    """An evaluation record with the fields training writes and registration reads."""
    test = {"accuracy": accuracy, "macro_f1": accuracy - 0.05, "roc_auc": 0.8, "pr_auc": 0.7}
    return {"candidate": candidate, "classes": CLASSES, "safe_class": "safe", "test": test}


def predictions(bundle: ClassifierBundle, manifest: pd.DataFrame) -> dict[str, str]:
    """The bundle's in-process test predictions, as quantization records them."""
    rows = manifest[manifest["split"] == "test"]
    images = [Path(uri).read_bytes() for uri in rows["uri"]]
    with torch.inference_mode():
        predicted = bundle.build_model()(bytes_to_batch(images, bundle.data_config)).argmax(1)
    return dict(zip(rows["sha256"], np.array(bundle.classes)[predicted.numpy()], strict=True))


def quantization_entry(
    bundle: ClassifierBundle,
    manifest: pd.DataFrame,
    *,
    accuracy: float,
    precision: str = "fp32",
    onnx_path: str | None = None,
    recall: float = 0.9,
    fpr: float = 0.0,
    test_predictions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A quantization decision entry bound to ``bundle`` and ``manifest``."""
    served = {"accuracy": accuracy, "macro_f1": accuracy - 0.05, "path": onnx_path}
    return {
        "precision": precision,
        "reason": f"on validation: {precision} chosen in a test",
        "int8_method": "static" if precision == "int8" else None,
        "fp32": {"accuracy": accuracy, "macro_f1": accuracy - 0.05, "path": None},
        "int8": served if precision == "int8" else None,
        "calibration": {
            "precision": precision,
            "calibrated_on": "validation",
            "target_fpr": 0.01,
            "operating_threshold": 0.3,
            "block": {"explicit_nudity": {"threshold": 0.9}},
            "warnings": [],
            "test": {
                "accuracy": accuracy,
                "accuracy_ci": [max(0.0, accuracy - 0.2), min(1.0, accuracy + 0.1)],
                "recall": recall,
                "recall_ci": [0.5, 1.0],
                "fpr": fpr,
                "fpr_ci": [0.0, 0.3],
            },
        },
        "test_predictions": test_predictions or predictions(bundle, manifest),
        "fingerprints": {
            "bundle": bundle_fingerprint(bundle),
            "split_manifest": manifest_hash(manifest),
            "quantization_config": config_hash(QUANTIZATION_PARAMS),
        },
    }


def inputs(
    bundles: dict[str, ClassifierBundle],
    manifest: pd.DataFrame,
    *,
    accuracy: float,
    selected: str = "test_resnet",
    entry: dict[str, Any] | None = None,
    **param_overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for :func:`register_model`."""
    params: dict[str, Any] = {
        "model_name": MODEL,
        "gate": {"min_test_accuracy": 0.6, "max_regression_vs_champion": 0.02},
        "serving": {"max_pixels": 10_000_000, "max_image_bytes": 5_000_000, "batch_size": 4},
        "smoke_test_images": 3,
        "batch_size": 4,
        "lock_wait_s": 60,
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
    entry = entry or quantization_entry(bundles[selected], manifest, accuracy=accuracy)
    return {
        "candidate_selection": {
            "selected": selected,
            "metric": "macro_f1",
            "reason": "highest validation macro_f1",
        },
        "quantization_decision": {"candidates": {selected: entry}},
        "split_manifest": manifest,
        "params": params,
        "quantization_params": QUANTIZATION_PARAMS,
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
    manifest["label_source"] = ["human", "folder"] + ["rekognition"] * (len(manifest) - 2)
    kwargs = inputs(bundles, manifest, accuracy=0.8)
    catalog = DataCatalog(
        {
            "candidate_selection": MemoryDataset(kwargs["candidate_selection"]),
            "quantization_decision": MemoryDataset(kwargs["quantization_decision"]),
            "split_manifest": MemoryDataset(manifest),
            "params:registration": MemoryDataset(kwargs["params"]),
            "params:quantization": MemoryDataset(kwargs["quantization_params"]),
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
            "registration_shadow_evidence": OptionalJSONDataset(str(tmp_path / "none.json")),
            "image_phashes": MemoryDataset(
                manifest.assign(phash=[phash_of(uri) for uri in manifest["uri"]])
            ),
            "split_summary": MemoryDataset({"config": {"near_duplicate_max_distance": 8}}),
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
    assert json.loads(version.tags["label_sources"]) == {
        "folder": 1,
        "human": 1,
        "rekognition": len(manifest) - 2,
    }
    run_tags = registry.get_run(run.info.run_id).data.tags
    assert run_tags["registration.gate"] == "passed"
    assert run_tags["registration.model_version"] == "1"
    assert free_outputs["registration_metrics"].load()["gate_passed"]["value"] == 1.0

    served = load_registered_model(f"models:/{MODEL}@champion")
    jpeg = good_images()["rgb.jpg"]
    out = served.predict(pd.DataFrame({"image": [encode_image(jpeg)]}))
    assert out.loc[0, "error"] is None and out.loc[0, "class"] in CLASSES
    assert out.loc[0, "model_name"] == MODEL and out.loc[0, "model_version"] == "1"
    assert out.loc[0, "decision"] in {"allow", "review", "block"}
    # What monitoring needs is recorded with the version (docs/feedback-loop.md).
    baseline = report["monitoring_baseline"]
    assert baseline["near_duplicate_max_distance"] == 8
    assert baseline["drift_reference_images"] == (manifest["split"] == "test").sum()
    assert version.tags["training_population_uri"] == baseline["training_population_uri"]
    assert version.tags["drift_reference_uri"] == baseline["drift_reference_uri"]


def test_gate_failure_registers_nothing_and_says_why(registry, bundles, tmp_path, caplog) -> None:
    manifest = write_manifest(tmp_path / "images")
    kwargs = inputs(bundles, manifest, accuracy=0.55)
    with mlflow.start_run() as run:
        report, metrics = register_model(**kwargs)
    assert report["outcome"] == "rejected" and report["version"] is None
    assert report["gate"]["reasons"] == ["accuracy 0.55 < 0.60 (min_test_accuracy)"]
    assert "It failed because: accuracy 0.55 < 0.60" in report["explanation"]
    assert "accuracy 0.55 < 0.60" in caplog.text
    assert registry.search_model_versions(f"name='{MODEL}'") == []
    tags = registry.get_run(run.info.run_id).data.tags
    assert tags["registration.gate"] == "failed"
    assert metrics["gate_passed"]["value"] == 0.0
    enforce_gate(report, kwargs["params"])
    strict = copy.deepcopy(kwargs["params"])
    strict["gate"]["fail_run_on_failure"] = True
    with pytest.raises(GateFailedError, match=r"accuracy 0\.55 < 0\.60"):
        enforce_gate(report, strict)


def test_stale_quantization_after_a_training_only_rerun_is_refused(
    registry, bundles, tmp_path
) -> None:
    """Training re-ran (new bundle), quantization did not: nothing is registered."""
    manifest = write_manifest(tmp_path / "images")
    old_entry = quantization_entry(bundles["test_resnet"], manifest, accuracy=0.9)
    retrained = {**bundles, "test_resnet": make_bundle("test_resnet", seed=5)}
    kwargs = inputs(retrained, manifest, accuracy=0.9, entry=old_entry)
    with pytest.raises(StaleArtefactError, match="kedro run --pipelines quantization") as info:
        register_model(**kwargs)
    assert info.value.artefact == "quantization_decision (candidate 'test_resnet')"
    # Other quantization settings than those the thresholds were calibrated under: stale too.
    kwargs = inputs(bundles, manifest, accuracy=0.9)
    kwargs["quantization_params"] = {**QUANTIZATION_PARAMS, "threads": 2}
    with pytest.raises(StaleArtefactError, match="quantization settings"):
        register_model(**kwargs)
    # An int8 ONNX file left by another bundle's quantization: named, refused.
    bundle = bundles["test_resnet"]
    onnx_path = tmp_path / "int8.onnx"
    exported = onnx_runtime.export_onnx(
        bundle.build_model(), bundle.data_config["input_size"], tmp_path / "fp32.onnx"
    )
    onnx_path.write_bytes(with_metadata(exported.read_bytes(), {"bundle_fingerprint": "0" * 64}))
    entry = quantization_entry(
        bundle, manifest, accuracy=0.9, precision="int8", onnx_path=str(onnx_path)
    )
    with pytest.raises(StaleArtefactError, match=str(onnx_path)):
        register_model(**inputs(bundles, manifest, accuracy=0.9, entry=entry))
    assert registry.search_registered_models() == []


def test_int8_champion_threshold_tags_say_int8(registry, bundles, tmp_path) -> None:
    bundle = bundles["test_resnet"]
    manifest = write_manifest(tmp_path / "images")
    fingerprints = quantization_entry(bundle, manifest, accuracy=0.7)["fingerprints"]
    exported = onnx_runtime.export_onnx(
        bundle.build_model(), bundle.data_config["input_size"], tmp_path / "fp32.onnx"
    )
    onnx_path = tmp_path / "int8.onnx"
    onnx_path.write_bytes(
        with_metadata(
            exported.read_bytes(),
            {
                "bundle_fingerprint": fingerprints["bundle"],
                "split_manifest_hash": fingerprints["split_manifest"],
                "quantization_config_hash": fingerprints["quantization_config"],
                "variant": "int8_static",
            },
        )
    )
    entry = quantization_entry(
        bundle, manifest, accuracy=0.7, precision="int8", onnx_path=str(onnx_path)
    )
    with mlflow.start_run():
        report, _ = register_model(**inputs(bundles, manifest, accuracy=0.7, entry=entry))
    assert report["outcome"] == "registered" and report["precision"] == "int8"
    assert report["smoke_test"]["agreement"] == 1.0
    tags = registry.get_model_version(MODEL, report["version"]).tags
    assert tags["threshold_calibrated_precision"] == "int8"
    assert tags["quantization_precision"] == "int8"
    assert tags["operating_threshold"] == "0.3"
    assert tags["test_recall_ci95"] == "[0.5, 1.0]" and tags["test_fpr_at_threshold"] == "0.0"
    served = load_registered_model(f"models:/{MODEL}@champion")
    assert served.unwrap_python_model().config_.thresholds.calibrated_precision == "int8"


def test_the_ratchet_stops_at_the_floor(registry, bundles, tmp_path) -> None:
    """0.90 -> 0.881 -> 0.862: each within 0.02 of the last, but the floor does not move down."""
    manifest = write_manifest(tmp_path / "images")
    outcomes = []
    for seed, accuracy in ((0, 0.90), (1, 0.881), (2, 0.862)):
        bundle = make_bundle("test_resnet", seed=seed)
        # Identical answers on the paired images: the McNemar test cannot tell them apart.
        entry = quantization_entry(
            bundle,
            manifest,
            accuracy=accuracy,
            test_predictions=predictions(bundles["test_resnet"], manifest),
        )
        with mlflow.start_run():
            report, _ = register_model(
                **inputs(
                    {**bundles, "test_resnet": bundle}, manifest, accuracy=accuracy, entry=entry
                )
            )
        outcomes.append(report)
    assert [r["outcome"] for r in outcomes] == ["registered", "registered", "rejected"]
    (reason,) = outcomes[2]["gate"]["reasons"]
    assert reason.startswith("accuracy 0.86 < 0.88 (the registry's floor, set when v1")
    assert champion_version(registry) == "2"
    assert registry.get_registered_model(MODEL).tags["accuracy_floor"] == "0.88"


def test_a_significantly_worse_candidate_is_refused_by_the_paired_test(
    registry, bundles, tmp_path
) -> None:
    manifest = write_manifest(tmp_path / "images", n_test=12)
    truth = dict(zip(manifest["sha256"], manifest["class"], strict=True))
    test = manifest[manifest["split"] == "test"]
    right = {sha: truth[sha] for sha in test["sha256"]}
    entry = quantization_entry(
        bundles["test_resnet"], manifest, accuracy=0.95, test_predictions=right
    )
    with mlflow.start_run():
        register_model(**inputs(bundles, manifest, accuracy=0.95, entry=entry))
    wrong = {sha: next(c for c in CLASSES if c != cls) for sha, cls in right.items()}
    champion_right = predictions(bundles["test_resnet"], manifest)
    entry = quantization_entry(bundles["test_vit"], manifest, accuracy=0.95, test_predictions=wrong)
    with mlflow.start_run():
        report, _ = register_model(
            **inputs(bundles, manifest, accuracy=0.95, selected="test_vit", entry=entry)
        )
    checks = report["gate"]["checks"]
    assert checks["champion_comparison"] == "paired" and checks["paired_images"] == 12
    champion_wins = sum(champion_right[sha] == right[sha] for sha in right)
    assert checks["champion_only_correct"] == champion_wins
    if champion_wins >= 5:  # 5 of 5 discordant pairs: p = 1/32 < 0.05
        assert report["outcome"] == "rejected"
        assert "significantly worse than the champion" in report["gate"]["reasons"][0]


def test_seen_images_are_excluded_from_the_champion_rescoring(registry, bundles, tmp_path) -> None:
    first = write_manifest(tmp_path / "images")
    with mlflow.start_run():
        register_model(**inputs(bundles, first, accuracy=0.9))
    # A re-split: two of the champion's training images are now in the test split.
    resplit = first.assign(split="test")
    with mlflow.start_run():
        report, _ = register_model(**inputs(bundles, resplit, accuracy=0.9, selected="test_vit"))
    checks = report["gate"]["checks"]
    assert checks["paired_images_excluded_as_seen_by_champion"] == 2
    assert checks["paired_images"] == len(resplit) - 2


def test_a_class_set_change_is_not_comparable(registry, bundles, tmp_path) -> None:
    manifest = write_manifest(tmp_path / "images")
    with mlflow.start_run():
        register_model(**inputs(bundles, manifest, accuracy=0.9))
    torch.manual_seed(3)
    model, source = create_classifier("test_vit", len(CLASSES) + 1, "random")
    extra = ClassifierBundle.from_model(
        model,
        architecture="test_vit",
        classes=[*CLASSES, "explicit_sexual_activity"],
        data_config=data_config_for(model, 64),
        weights_source=source,
    )
    changed = {**bundles, "test_vit": extra}
    kwargs = inputs(changed, manifest, accuracy=0.9, selected="test_vit")
    kwargs["evaluation__test_vit"]["classes"] = extra.classes
    with mlflow.start_run():
        report, _ = register_model(**kwargs)
    assert report["outcome"] == "not_comparable"
    assert "class sets differ (added ['explicit_sexual_activity']" in report["gate"]["reasons"][0]
    approved = inputs(
        changed,
        manifest,
        accuracy=0.9,
        selected="test_vit",
        gate__on_class_change="require_approval",
        gate__approve_class_change=True,
    )
    approved["evaluation__test_vit"]["classes"] = extra.classes
    with mlflow.start_run():
        report, _ = register_model(**approved)
    assert report["outcome"] == "registered"
    assert registry.get_model_version(MODEL, "2").tags["class_change_approved"] == "true"


def test_two_concurrent_registrations_move_the_champion_once(
    registry, bundles, tmp_path, monkeypatch
) -> None:
    from eyecatcher.registry.versions import Registry

    manifest = write_manifest(tmp_path / "images")
    with mlflow.start_run():
        register_model(**inputs(bundles, manifest, accuracy=0.8))
    # Both runs read the champion before either moves it: the race the lock must resolve.
    barrier = threading.Barrier(2, timeout=60)
    original = Registry.champion
    first_read = threading.local()

    def champion(self):
        version = original(self)
        if not getattr(first_read, "done", False):
            first_read.done = True
            barrier.wait()
        return version

    monkeypatch.setattr(Registry, "champion", champion)
    reports: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def run(name: str, seed: int) -> None:
        try:
            bundle = make_bundle("test_resnet", seed=seed)
            with mlflow.start_run(run_name=name):
                reports[name], _ = register_model(
                    **inputs({**bundles, "test_resnet": bundle}, manifest, accuracy=0.8)
                )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"run{i}", 10 + i)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    outcomes = sorted(r["outcome"] for r in reports.values())
    assert outcomes == ["champion_changed", "registered"]
    (stopped,) = [r for r in reports.values() if r["outcome"] == "champion_changed"]
    assert "the champion moved from v1 to v" in stopped["stopped"]
    (winner,) = [r for r in reports.values() if r["outcome"] == "registered"]
    assert champion_version(registry) == winner["version"]
    assert "not promoted" in registry.get_model_version(MODEL, stopped["version"]).tags["promotion"]
    # Besides the model, only the promotion lock's ticket dispenser remains, with no live ticket
    # (it is kept: deleting it on release would let a waiter's ticket vanish with it).
    assert sorted(m.name for m in registry.search_registered_models()) == [
        MODEL,
        f"{MODEL}--promotion-lock",
    ]
    assert registry.search_model_versions(f"name = '{MODEL}--promotion-lock'") == []


def test_rerun_without_changes_keeps_the_champion_unregistered(registry, bundles, tmp_path) -> None:
    manifest = write_manifest(tmp_path / "images")
    with mlflow.start_run():
        first, _ = register_model(**inputs(bundles, manifest, accuracy=0.8))
    strict = inputs(bundles, manifest, accuracy=0.8, gate__fail_run_on_failure=True)
    with mlflow.start_run():
        again, metrics = register_model(**strict)
    assert first["outcome"] == "registered"
    assert again["outcome"] == "unchanged" and again["version"] is None
    assert len(registry.search_model_versions(f"name='{MODEL}'")) == 1
    assert metrics["registered"]["value"] == 0.0
    enforce_gate(again, strict["params"])  # no change is not a failure, even for CI


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_unscorable_champion_follows_the_policy(registry, bundles, tmp_path, policy) -> None:
    manifest = write_manifest(tmp_path / "a")
    with mlflow.start_run():
        register_model(**inputs(bundles, manifest, accuracy=0.9))
    # The champion's record of its training images is gone: it cannot be compared honestly.
    registry.delete_model_version_tag(MODEL, "1", "seen_images_uri")
    registry.delete_model_version_tag(MODEL, "1", "training_population_uri")
    with mlflow.start_run() as run:
        report, _ = register_model(
            **inputs(
                bundles,
                manifest,
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


def test_failed_staging_test_leaves_a_challenger_and_no_champion(
    registry, bundles, tmp_path, monkeypatch
) -> None:
    def unreadable(uri: str, storage_options: Any = None) -> bytes:
        raise OSError("artefact store unreachable")

    kwargs = inputs(bundles, write_manifest(tmp_path / "images"), accuracy=0.9)
    monkeypatch.setattr(staging, "read_bytes", unreadable)
    with mlflow.start_run():
        report, _ = register_model(**kwargs)
    assert report["outcome"] == "smoke_test_failed"
    assert report["aliases"] == {"challenger": "1"}
    assert report["gate"]["summary"].startswith("failed: staging inference test failed")
    tag = registry.get_model_version(MODEL, "1").tags["smoke_test"]
    assert tag == "failed: OSError: artefact store unreachable"
    with pytest.raises(MlflowException):
        registry.get_model_version_by_alias(MODEL, "champion")


def test_inconsistent_inputs_are_clear_errors(registry, bundles, tmp_path) -> None:
    manifest = write_manifest(tmp_path / "images")
    kwargs = inputs(bundles, manifest, accuracy=0.9)
    kwargs["candidate_selection"]["selected"] = "resnet50"
    with pytest.raises(RegistrationInputError, match="not among the pipeline's candidates"):
        register_model(**kwargs)
    kwargs = inputs(bundles, manifest, accuracy=0.9)
    kwargs["params"]["gate"]["min_test_acuracy"] = 0.5
    with pytest.raises(ValueError, match="did you mean 'min_test_accuracy'"):
        register_model(**kwargs)
    assert registry.search_registered_models() == []


def test_gate_rules() -> None:
    settings = GateSettings(min_test_accuracy=0.6, min_unsafe_recall=0.8, fpr_tolerance=0.02)
    none = ChampionComparison(None, "none")

    def served(accuracy: float = 0.7, recall: float = 0.9, fpr: float = 0.01) -> Served:
        return Served(accuracy, recall, fpr, target_fpr=0.01, precision="fp32")

    assert decide(served(), settings, none).passed
    assert decide(served(0.59), settings, none).reasons == [
        "accuracy 0.59 < 0.60 (min_test_accuracy)"
    ]
    assert "unsafe recall" in decide(served(recall=0.5), settings, none).reasons[0]
    assert "test FPR 0.05" in decide(served(fpr=0.05), settings, none).reasons[0]
    assert not decide(served(float("nan")), settings, none).passed
    assert mcnemar_worse_p_value(0, 5) == pytest.approx(1 / 32)
    assert mcnemar_worse_p_value(3, 3) > 0.5
    with pytest.raises(ValueError, match="on_unscorable_champion"):
        GateSettings(on_unscorable_champion="ignore")
    with pytest.raises(ValueError, match="fraction"):
        GateSettings(max_regression_vs_champion=2.0)
    with pytest.raises(ValueError, match="did you mean 'gate'"):
        RegistrationSettings.from_params({"gaet": {}})


def test_every_served_limit_can_be_set_per_registration() -> None:
    # Each limit of the served model (docs/serving.md) is a registration setting; a typo is refused.
    from dataclasses import fields

    from eyecatcher.serving_model import ServingConfig

    settings = RegistrationSettings.from_params({"serving": {"max_rows": 8, "frames_to_score": 3}})
    assert (settings.serving.max_rows, settings.serving.frames_to_score) == (8, 3)
    served_limits = {f.name for f in fields(ServingConfig)} - {
        "model_name",
        "model_version",
        "candidate",
        "precision",
        "classes",
        "safe_class",
        "thresholds",
        "operating_threshold",
        # Chosen by packaging's ONNX-vs-PyTorch check, not a limit.
        "runtime",
        "runtime_check",
    }
    assert served_limits == set(vars(settings.serving))
    with pytest.raises(ValueError, match="did you mean 'max_rows'"):
        RegistrationSettings.from_params({"serving": {"max_row": 8}})


def shadow_report(shadow: str, champion: str, compared: int, agreement: float) -> dict[str, Any]:
    """A shadow report as batch scoring writes it (a shadow comparison naming both versions)."""
    return {
        "shadow_model_version": shadow,
        "champion_model_version": champion,
        "compared": compared,
        "errors": 0,
        "class_agreement_rate": agreement,
        "decision_agreement_rate": agreement,
        "n_disagreements": round(compared * (1 - agreement)),
    }


def test_a_required_shadow_period_keeps_the_challenger_until_the_shadow_has_shown_enough(
    registry, bundles, tmp_path
) -> None:
    manifest = write_manifest(tmp_path / "images")
    shadow = {"required": True, "min_images": 200, "min_agreement": 0.9}
    with mlflow.start_run():
        first, _ = register_model(**inputs(bundles, manifest, accuracy=0.8, shadow=shadow))
    # Nothing to shadow yet: the first version becomes champion, said so.
    assert first["outcome"] == "registered"
    assert first["shadow"]["reasons"] == [
        "no champion to shadow: the first version needs no shadow period"
    ]

    def challenge(evidence: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
        kwargs = inputs(
            bundles,
            manifest,
            accuracy=0.8,
            selected="test_vit",
            shadow={**shadow, **extra},
            gate__fail_run_on_failure=True,
        )
        with mlflow.start_run():
            report, metrics = register_model(**kwargs, shadow_evidence=evidence)
        report["metrics"] = metrics
        report["params"] = kwargs["params"]
        return report

    # No shadow report at all: registered as challenger, not promoted, and CI fails on it.
    pending = challenge(None)
    assert pending["outcome"] == "shadow_pending"
    assert pending["aliases"] == {"challenger": "2"}
    assert champion_version(registry) == "1"
    assert str(registry.get_registered_model(MODEL).aliases["challenger"]) == "2"
    assert pending["explanation"].startswith(
        f"{MODEL} v2 was registered as challenger but NOT promoted: its shadow period is not "
        "met (no shadow report exists: score with batch_scoring.shadow_model first"
    )
    tags = registry.get_model_version(MODEL, "2").tags
    assert tags["shadow_period"].startswith("not met: no shadow report exists")
    assert tags["promotion"] == "not promoted: shadow period not met"
    assert pending["metrics"]["shadow_period_passed"]["value"] == 0.0
    with pytest.raises(GateFailedError, match="shadow period is not met"):
        enforce_gate(pending, pending["params"])

    # Evidence about another model, or too little agreement: still not met, and why.
    other = challenge(shadow_report("1", "1", 500, 1.0))
    assert other["outcome"] == "shadow_pending"
    assert "about v1, which does not serve this candidate" in other["explanation"]
    low = challenge(shadow_report("2", "1", 250, 0.8))
    assert low["outcome"] == "shadow_pending"
    assert low["shadow"]["reasons"] == [
        "shadow v2: 250 images compared >= min_images=200",
        "shadow v2: decision agreement 0.800 < min_agreement=0.9",
    ]
    assert champion_version(registry) == "1"

    # v2 (the same model as this candidate) shadowed the champion long enough: promoted.
    met = challenge(shadow_report("2", "1", 250, 0.95))
    assert met["outcome"] == "registered" and champion_version(registry) == met["version"]
    assert registry.get_model_version(MODEL, met["version"]).tags["shadow_period"] == (
        "met: shadow v2: 250 images compared >= min_images=200; "
        "shadow v2: decision agreement 0.950 >= min_agreement=0.9"
    )
    assert met["metrics"]["shadow_period_passed"]["value"] == 1.0


def test_shadow_period_approval_stale_evidence_and_settings(registry, bundles, tmp_path) -> None:
    manifest = write_manifest(tmp_path / "images")
    with mlflow.start_run():
        register_model(**inputs(bundles, manifest, accuracy=0.8))
    # Compared with a champion that is no longer the champion: not evidence for this one.
    required = {"required": True, "min_images": 10}
    kwargs = inputs(bundles, manifest, accuracy=0.8, selected="test_vit", shadow=required)
    with mlflow.start_run():
        assert register_model(**kwargs)[0]["aliases"] == {"challenger": "2"}
    with mlflow.start_run():
        stale, _ = register_model(**kwargs, shadow_evidence=shadow_report("2", "7", 50, 1.0))
    assert stale["outcome"] == "shadow_pending"
    assert "compared with v7, but the champion is now v1" in stale["explanation"]
    # An explicit approval replaces the checks and is recorded on the version.
    approved = {**required, "approved": True}
    kwargs = inputs(bundles, manifest, accuracy=0.8, selected="test_vit", shadow=approved)
    with mlflow.start_run():
        report, _ = register_model(**kwargs)
    assert report["outcome"] == "registered" and champion_version(registry) == report["version"]
    tag = registry.get_model_version(MODEL, report["version"]).tags["shadow_period"]
    assert tag == "met: shadow period explicitly approved (registration.shadow.approved)"

    assert RegistrationSettings.from_params({}).shadow.period() is None  # the demo's default
    with pytest.raises(ValueError, match="'min_agreemnt' \\(did you mean 'min_agreement'\\?\\)"):
        RegistrationSettings.from_params({"shadow": {"min_agreemnt": 0.9}})
    with pytest.raises(ValueError, match="min_agreement must be within"):
        RegistrationSettings.from_params({"shadow": {"min_agreement": 90}})
    with pytest.raises(ValueError, match="required and approved must be true or false"):
        RegistrationSettings.from_params({"shadow": {"required": "yes"}})


def test_shadow_evidence_dataset(tmp_path) -> None:
    path = tmp_path / "shadow_report.json"
    assert OptionalJSONDataset(str(path)).load() is None
    path.write_text('{"shadow_model_version": "3"}')
    assert OptionalJSONDataset(str(path)).load() == {"shadow_model_version": "3"}
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="is not a readable JSON report"):
        OptionalJSONDataset(str(path)).load()


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
    assert label_sources(frame) is None  # a manifest from before label sources
    sourced = frame.assign(label_source=["rekognition", None, "human"])
    assert json.loads(label_sources(sourced)) == {"human": 1, "missing": 1, "rekognition": 1}


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
    served = load_registered_model(f"models:/{name}@champion")
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
    settings = GateSettings(min_test_accuracy=0.6)
    served = Served(0.5972, 1.0, 0.0, target_fpr=0.01, precision="fp32")
    reasons = decide(served, settings, ChampionComparison(None, "none")).reasons
    assert reasons == ["accuracy 0.5972 < 0.6000 (min_test_accuracy)"]
