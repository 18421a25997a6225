"""A Kedro dataset for :class:`~eyecatcher.models.bundle.ClassifierBundle` files.

A bundle is saved with its own serialisation (``torch.save`` of tensors and plain metadata)
rather than pickled, so that loading it back uses ``weights_only`` loading and never executes
code from the file. The file may be local or on an object store (``s3://``); writes are
atomic (:func:`eyecatcher.storage.write_atomic`): a failed save leaves the previous bundle.
"""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset

from eyecatcher import storage
from eyecatcher.models.bundle import ClassifierBundle


class ClassifierBundleDataset(AbstractDataset[ClassifierBundle, ClassifierBundle]):
    """Load and save one :class:`ClassifierBundle` at a local path or an ``s3://`` URL.

    Examples:
        ```yaml
        "{candidate}.model_bundle":
          type: eyecatcher.datasets.classifier_bundle_dataset.ClassifierBundleDataset
          filepath: ${globals:data_root}/06_models/{candidate}/model_bundle.pt
          fs_args: ${globals:storage_options}
        ```
    """

    def __init__(
        self,
        filepath: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            filepath: Where the bundle file lives (a local path or an fsspec URL).
            credentials: Secrets for the filesystem (``credentials.yml``), or ``None`` for the
                default chain.
            fs_args: fsspec filesystem arguments (``${globals:storage_options}``).
            metadata: Free-form metadata for Kedro plugins; not used by the dataset.
        """
        self._filepath = str(filepath)
        self._options = {**dict(fs_args or {}), **dict(credentials or {})}
        self.metadata = metadata

    def load(self) -> ClassifierBundle:
        """Read the bundle from ``filepath``."""
        return ClassifierBundle.from_bytes(storage.read_bytes(self._filepath, self._options))

    def save(self, data: ClassifierBundle) -> None:
        """Write ``data`` to ``filepath`` atomically, replacing any previous bundle."""
        if not isinstance(data, ClassifierBundle):
            raise TypeError(
                f"ClassifierBundleDataset saves ClassifierBundle objects, got {type(data)!r}"
            )
        storage.write_atomic(self._filepath, data.to_bytes(), self._options)

    def _exists(self) -> bool:
        return storage.exists(self._filepath, self._options)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath}
