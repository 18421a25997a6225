"""The retrain check's optional table reads Parquet from s3://, or None when it is missing."""

from __future__ import annotations

import io

import pandas as pd

from eyecatcher import storage
from eyecatcher.pipelines.retrain_check.datasets import OptionalTableDataset


def test_optional_table_on_s3(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/07_model_output/batch_verdicts.parquet"
    dataset = OptionalTableDataset(filepath=uri, missing_hint="run batch scoring")
    assert dataset.load() is None
    buffer = io.BytesIO()
    pd.DataFrame({"sha256": ["a", "b"], "unsafe_score": [0.1, 0.9]}).to_parquet(buffer)
    storage.write_atomic(uri, buffer.getvalue())
    assert dataset.load()["unsafe_score"].tolist() == [0.1, 0.9]
