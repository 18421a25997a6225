"""ClassifierBundleDataset: a bundle saved and loaded locally and on S3, written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kedro.io import DatasetError

from eyecatcher import storage
from eyecatcher.datasets.classifier_bundle_dataset import ClassifierBundleDataset
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.factory import create_classifier
from eyecatcher.preprocessing import data_config_for


def tiny_bundle(seed: int = 0) -> ClassifierBundle:
    """A random ``test_resnet`` bundle with two classes."""
    torch.manual_seed(seed)
    model, source = create_classifier("test_resnet", 2, "random")
    return ClassifierBundle.from_model(
        model,
        architecture="test_resnet",
        classes=["explicit", "safe"],
        data_config=data_config_for(model, 64),
        weights_source=source,
    )


@pytest.mark.parametrize("where", ["local", "s3"])
def test_bundle_round_trip(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_bucket")
    dataset = ClassifierBundleDataset(filepath=f"{root}/06_models/cnn/model_bundle.pt")
    assert not dataset.exists()
    bundle = tiny_bundle()
    dataset.save(bundle)
    assert dataset.exists()
    loaded = dataset.load()
    assert loaded.classes == bundle.classes and loaded.architecture == "test_resnet"
    for name, tensor in bundle.state_dict.items():
        assert torch.equal(loaded.state_dict[name], tensor)


def test_failed_save_keeps_the_previous_bundle(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"{s3_bucket}/06_models/cnn/model_bundle.pt"
    dataset = ClassifierBundleDataset(filepath=uri)
    dataset.save(tiny_bundle(seed=0))
    before = storage.read_bytes(uri)

    def fails(self: ClassifierBundle) -> bytes:
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(ClassifierBundle, "to_bytes", fails)
    with pytest.raises(DatasetError, match="serialisation failed"):
        dataset.save(tiny_bundle(seed=1))
    assert storage.read_bytes(uri) == before


def test_save_refuses_other_objects(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="saves ClassifierBundle objects"):
        ClassifierBundleDataset(filepath=str(tmp_path / "b.pt")).save({"not": "a bundle"})
