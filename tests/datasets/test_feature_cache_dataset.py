"""FeatureCacheDataset: a handle on the cache folder; the folder is written entry by entry."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DatasetError

from eyecatcher.datasets.feature_cache_dataset import FeatureCacheDataset
from eyecatcher.features.cache import FeatureCache


def test_the_handle_writes_the_folder_and_saving_is_refused(tmp_path) -> None:
    root = tmp_path / "04_feature" / "feature_cache"
    dataset = FeatureCacheDataset(path=str(root))
    assert not dataset.exists()
    assert dataset._describe() == {"path": str(root)}

    cache = dataset.load()
    assert isinstance(cache, FeatureCache)
    key = {"architecture": "test_resnet", "view": "clean"}
    cache.put(key, "digest", "ab" * 32, np.arange(3, dtype=np.float32))
    assert dataset.exists()
    # A second handle on the same folder sees what the first wrote.
    np.testing.assert_array_equal(
        dataset.load().get(key, "digest", "ab" * 32), np.arange(3, dtype=np.float32)
    )

    # Kedro itself refuses None; anything else is refused by the dataset.
    with pytest.raises(DatasetError, match="written through FeatureCache"):
        dataset.save(cache)
