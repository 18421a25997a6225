"""A Kedro dataset for :class:`~eyecatcher.models.bundle.ClassifierBundle` files.

A bundle is saved with its own :meth:`~ClassifierBundle.save` (``torch.save`` of tensors and
plain metadata) rather than pickled, so that loading it back uses ``weights_only`` loading and
never executes code from the file.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset

from eyecatcher.models.bundle import ClassifierBundle


class ClassifierBundleDataset(AbstractDataset[ClassifierBundle, ClassifierBundle]):
    """Load and save one :class:`ClassifierBundle` at a local path.

    Example catalog entry::

        "{namespace}.model_bundle":
          type: eyecatcher.models.bundle_dataset.ClassifierBundleDataset
          filepath: data/06_models/{namespace}/model_bundle.pt
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        """Create the dataset.

        Args:
            filepath: Where the bundle file lives (a local path).
            metadata: Free-form metadata for Kedro plugins; not used by the dataset.
        """
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> ClassifierBundle:
        """Read the bundle from :attr:`filepath`."""
        return ClassifierBundle.load(Path(self._filepath))

    def save(self, data: ClassifierBundle) -> None:
        """Write ``data`` to :attr:`filepath`, replacing any previous bundle."""
        if not isinstance(data, ClassifierBundle):
            raise TypeError(
                f"ClassifierBundleDataset saves ClassifierBundle objects, got {type(data)!r}"
            )
        data.save(Path(self._filepath))

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
