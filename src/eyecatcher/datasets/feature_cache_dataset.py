"""A Kedro dataset for the frozen-backbone feature cache (:mod:`eyecatcher.features.cache`).

Loading gives a handle on the cache folder, not its content: the training node reads and writes
entries one by one while it computes features, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError

from eyecatcher import storage
from eyecatcher.features.cache import FeatureCache


class FeatureCacheDataset(AbstractDataset[FeatureCache, None]):
    """Catalog entry for the feature cache: loading gives a :class:`FeatureCache` handle.

    The cache is read and written entry by entry while features are computed, so the node
    receives a handle on the folder rather than its content; the folder itself is declared in
    the catalog like any other dataset.

    Examples:
        ```yaml
        feature_cache:
          type: eyecatcher.datasets.feature_cache_dataset.FeatureCacheDataset
          path: ${globals:data_root}/04_feature/feature_cache
          fs_args: ${globals:storage_options}
        ```
    """

    def __init__(
        self,
        path: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            path: The cache folder: a local path or an ``s3://`` prefix.
            credentials: Secrets for the filesystem (``credentials.yml``), or ``None`` for the
                default chain.
            fs_args: fsspec filesystem arguments (``${globals:storage_options}``).
            metadata: Free-form metadata for Kedro plugins; unused here.
        """
        self._path = str(path)
        self._options = {**dict(fs_args or {}), **dict(credentials or {})}
        self.metadata = metadata

    def load(self) -> FeatureCache:
        """A handle on the cache folder."""
        return FeatureCache(self._path, self._options)

    def save(self, data: None) -> None:
        """Not supported: the cache is written through its handle."""
        raise DatasetError("The feature cache is written through FeatureCache, not saved.")

    def _exists(self) -> bool:
        return storage.exists(self._path, self._options)

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}
