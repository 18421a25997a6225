"""A Kedro dataset for a candidate's ONNX models (fp32 and its int8 variants), one folder each.

Saving a mapping ``{variant: serialized model}`` writes ``<folder>/<variant>.onnx`` and removes
any other ``.onnx`` file left there by an earlier run: an int8 model that failed to build this
time must not survive from last time and be mistaken for a fresh one. Loading returns
``{variant: location}``, the locations that the quantization decision records and that
registration packages for serving: local paths, or ``s3://`` URLs when the folder is on an
object store (:class:`~eyecatcher.models.onnx_runtime.OnnxClassifier` reads either).
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from eyecatcher import storage

_VARIANT = re.compile(r"^[A-Za-z0-9_.-]+$")


class OnnxModelsDataset(AbstractDataset[dict[str, bytes], dict[str, str]]):
    """A folder (local or ``s3://``) of ``<variant>.onnx`` files.

    Examples:
        ```yaml
        "{candidate}.onnx_models":
          type: eyecatcher.datasets.onnx_models_dataset.OnnxModelsDataset
          path: ${globals:data_root}/06_models/{candidate}/onnx
          fs_args: ${globals:storage_options}
        ```

    Args:
        path: The folder or prefix (created on save).
        credentials: Secrets for the filesystem (``credentials.yml``), or ``None`` for the
            default chain.
        fs_args: fsspec filesystem arguments (``${globals:storage_options}``).
        metadata: Free-form metadata for Kedro-Viz and plugins.
    """

    def __init__(
        self,
        *,
        path: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = str(path).rstrip("/")
        self._options = {**dict(fs_args or {}), **dict(credentials or {})}
        self.metadata = metadata

    def _models(self) -> dict[str, str]:
        found = storage.list_files(self._path, self._options, extensions=[".onnx"], recursive=False)
        # Named under the configured path as written (a relative folder stays relative), so
        # the locations recorded in the quantization decision do not depend on the machine.
        names = [posixpath.basename(uri) for uri in found]
        return {name[: -len(".onnx")]: storage.join(self._path, name) for name in names}

    def load(self) -> dict[str, str]:
        """Return ``{variant: path or URL}`` for every ``.onnx`` file in the folder.

        An empty mapping is a valid result: it is what a candidate whose export failed saved
        (the failure itself is recorded in its quantization report).
        """
        return dict(sorted(self._models().items()))

    def save(self, data: dict[str, bytes]) -> None:
        """Write each serialized model as ``<variant>.onnx`` and delete stale variants.

        Each model is written atomically (:func:`eyecatcher.storage.write_atomic`), so a crash
        never leaves a truncated model under a valid name.
        """
        for variant, payload in data.items():
            if not _VARIANT.match(variant):
                raise DatasetError(f"Invalid ONNX variant name {variant!r} for a file name.")
            if not isinstance(payload, bytes | bytearray):
                raise DatasetError(
                    f"Variant {variant!r} must be the serialized model (bytes), "
                    f"got {type(payload).__name__}."
                )
        for variant, stale in self._models().items():
            if variant not in data:
                storage.remove(stale, self._options)
        for variant, payload in data.items():
            target = storage.join(self._path, f"{variant}.onnx")
            storage.write_atomic(target, bytes(payload), self._options)

    def _exists(self) -> bool:
        return bool(self._models())

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}
