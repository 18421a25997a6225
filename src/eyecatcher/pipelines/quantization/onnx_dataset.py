"""A Kedro dataset for a candidate's ONNX models (fp32 and its int8 variants), one folder each.

Saving a mapping ``{variant: serialized model}`` writes ``<folder>/<variant>.onnx`` and removes
any other ``.onnx`` file left there by an earlier run: an int8 model that failed to build this
time must not survive from last time and be mistaken for a fresh one. Loading returns
``{variant: path}``, the paths that the quantization decision records and that registration
packages for serving.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

_VARIANT = re.compile(r"^[A-Za-z0-9_.-]+$")


class OnnxModelsDataset(AbstractDataset[dict[str, bytes], dict[str, str]]):
    """A local folder of ``<variant>.onnx`` files.

    Args:
        path: The folder (created on save).
        metadata: Free-form metadata for Kedro-Viz and plugins.
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, str]:
        """Return ``{variant: path}`` for every ``.onnx`` file in the folder.

        An empty mapping is a valid result: it is what a candidate whose export failed saved
        (the failure itself is recorded in its quantization report).
        """
        return {p.stem: str(p) for p in sorted(self._path.glob("*.onnx"))}

    def save(self, data: dict[str, bytes]) -> None:
        """Write each serialized model as ``<variant>.onnx`` and delete stale variants."""
        for variant, payload in data.items():
            if not _VARIANT.match(variant):
                raise DatasetError(f"Invalid ONNX variant name {variant!r} for a file name.")
            if not isinstance(payload, bytes | bytearray):
                raise DatasetError(
                    f"Variant {variant!r} must be the serialized model (bytes), "
                    f"got {type(payload).__name__}."
                )
        self._path.mkdir(parents=True, exist_ok=True)
        for stale in self._path.glob("*.onnx"):
            if stale.stem not in data:
                stale.unlink()
        for variant, payload in data.items():
            target = self._path / f"{variant}.onnx"
            partial = target.with_suffix(".onnx.partial")
            # Write then rename, so a crash never leaves a truncated model under a valid name.
            partial.write_bytes(bytes(payload))
            partial.replace(target)

    def _exists(self) -> bool:
        return any(self._path.glob("*.onnx"))

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
