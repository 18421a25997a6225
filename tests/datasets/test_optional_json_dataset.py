"""OptionalJSONDataset reads a report from s3://: None when missing, an error if not JSON."""

from __future__ import annotations

import pytest
from kedro.io import DatasetError

from eyecatcher import storage
from eyecatcher.datasets.optional_json_dataset import OptionalJSONDataset


def test_optional_json_on_s3(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/08_reporting/shadow_report.json"
    dataset = OptionalJSONDataset(filepath=uri, missing_hint="run batch scoring")
    assert dataset.load() is None and not dataset.exists()
    storage.write_atomic(uri, b'{"agreement": 0.98}')
    assert dataset.load() == {"agreement": 0.98} and dataset.exists()
    storage.write_atomic(uri, b"{cut off")
    with pytest.raises(DatasetError, match="not a readable JSON report"):
        dataset.load()
