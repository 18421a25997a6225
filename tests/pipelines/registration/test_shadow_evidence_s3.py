"""OptionalJSONDataset reads the shadow report from s3://, None when missing, an error if bad."""

from __future__ import annotations

import pytest
from kedro.io import DatasetError

from eyecatcher import storage
from eyecatcher.pipelines.registration.shadow_period import OptionalJSONDataset


def test_optional_json_on_s3(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/08_reporting/shadow_report.json"
    dataset = OptionalJSONDataset(filepath=uri, missing_hint="run batch scoring")
    assert dataset.load() is None
    storage.write_atomic(uri, b'{"agreement": 0.98}')
    assert dataset.load() == {"agreement": 0.98}
    storage.write_atomic(uri, b"{cut off")
    with pytest.raises(DatasetError, match="not a readable JSON report"):
        dataset.load()
