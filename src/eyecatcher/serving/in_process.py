"""The one in-process scorer of a registered model version.

Registration's staging test and champion comparison, serving's in-process reference and batch
scoring all load a pinned ``models:/<name>/<version>`` with ``mlflow.pyfunc`` and call its
``predict`` on request frames built here (the contract's column names, never literals), in
chunks under the model's declared row limit.

What code runs: the version's *artefacts* (bundle, ONNX file, ``serving_config.json``) always
come from the registry, but the Python code is this process's. MLflow appends a model's
``code_paths`` to ``sys.path``, and a process that already imported ``eyecatcher`` (a
``kedro run``, the tests) keeps that import; so an older version scored here runs **today's**
preprocessing and decision code. Only a fresh process (``mlflow models serve``, which serving's
smoke test starts) runs the registered copy, which is why the smoke test compares the two.
See docs/registry.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException

from eyecatcher.serving_model.contract import ID_COLUMN, IMAGE_COLUMN, encode_image

#: Rows per request when the model declares no ``max_rows`` (well under any served limit).
DEFAULT_CHUNK = 16


def served_limit(model: Any, name: str) -> int | None:
    """One limit the served model declares in its ``serving_config.json``.

    Args:
        model: A loaded ``mlflow.pyfunc.PyFuncModel``.
        name: ``max_image_bytes``, ``max_rows``, ``max_pixels``, ...

    Returns:
        The limit, or None for a model (or an older version) that does not declare it.
    """
    try:
        python_model = model.unwrap_python_model()
    except (AttributeError, MlflowException):
        return None
    limit = getattr(getattr(python_model, "config_", None), name, None)
    return int(limit) if limit is not None else None


def request_frame(images: Sequence[str], ids: Sequence[str] | None = None) -> pd.DataFrame:
    """A request as the served model takes it: encoded images, and optional ids."""
    columns: dict[str, list[str]] = {}
    if ids is not None:
        columns[ID_COLUMN] = [str(i) for i in ids]
    columns[IMAGE_COLUMN] = list(images)
    return pd.DataFrame(columns)


class InProcessScorer:
    """A registered version loaded in this process, scored through its own ``predict``.

    Args:
        model_uri: A pinned ``models:/<name>/<version>``.
        model: An already-loaded model to use instead of loading ``model_uri``.
    """

    def __init__(self, model_uri: str | None = None, model: Any | None = None) -> None:
        if model is None:
            if model_uri is None:
                raise ValueError("InProcessScorer needs a model_uri or a loaded model")
            import mlflow.pyfunc

            model = mlflow.pyfunc.load_model(model_uri)
        self.model_uri = model_uri
        self.model = model
        self.max_image_bytes = served_limit(model, "max_image_bytes")
        self.max_rows = served_limit(model, "max_rows")

    def chunk_size(self, wanted: int | None = None) -> int:
        """Rows per request: ``wanted`` (or the default), never above the model's ``max_rows``."""
        size = max(1, int(wanted or DEFAULT_CHUNK))
        return min(size, self.max_rows) if self.max_rows else size

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's answer to one request frame (no chunking: the caller sized it)."""
        return self.model.predict(frame)

    def score_encoded(
        self,
        images: Sequence[str],
        ids: Sequence[str] | None = None,
        *,
        chunk: int | None = None,
    ) -> pd.DataFrame:
        """Answers for base64-encoded images, one row each, in order, in chunked requests."""
        step = self.chunk_size(chunk)
        outputs = [
            self.predict_frame(
                request_frame(
                    images[start : start + step],
                    None if ids is None else ids[start : start + step],
                )
            )
            for start in range(0, len(images), step)
        ]
        if not outputs:
            return pd.DataFrame()
        return pd.concat(outputs, ignore_index=True)

    def score_bytes(
        self,
        images: Sequence[bytes],
        ids: Sequence[str] | None = None,
        *,
        chunk: int | None = None,
    ) -> pd.DataFrame:
        """Answers for raw image bytes (encoded as clients encode them)."""
        return self.score_encoded([encode_image(i) for i in images], ids, chunk=chunk)
