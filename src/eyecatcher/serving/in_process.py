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

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from tqdm.auto import tqdm

from eyecatcher.serving_model.contract import ID_COLUMN, IMAGE_COLUMN, encode_image
from eyecatcher.serving_model.loading_lock import building_code_model
from eyecatcher.storage import read_bytes

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


def load_registered_model(model_uri: str) -> Any:
    """``mlflow.pyfunc.load_model(model_uri)``, one thread at a time, ``sys.path`` kept.

    See :mod:`eyecatcher.serving_model.loading_lock`: two concurrent loads of a model logged
    as code can hand both callers the same object, and MLflow prepends the version's
    ``code_paths`` folder to ``sys.path``, where a process spawned later would import it.

    Args:
        model_uri: A pinned ``models:/<name>/<version>`` (or any pyfunc URI).

    Returns:
        The loaded ``mlflow.pyfunc.PyFuncModel``.
    """

    import mlflow.pyfunc

    with building_code_model():
        return mlflow.pyfunc.load_model(model_uri)


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
            model = load_registered_model(model_uri)
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


def predict_rows(
    model: Any,
    rows: pd.DataFrame,
    batch_size: int,
    storage_options: Mapping[str, Any],
) -> pd.DataFrame:
    """The model's answers for manifest ``rows`` (``sha256``, ``uri``), ``batch_size`` per request.

    Images are read one request at a time, so a large test split is never held whole.

    Args:
        model: An :class:`InProcessScorer` or a loaded pyfunc model.
        rows: Manifest rows; ``sha256`` becomes the request's id.
        batch_size: Images per request (capped at the model's ``max_rows``).
        storage_options: fsspec options for ``s3://`` URIs.
    """
    scorer = model if isinstance(model, InProcessScorer) else InProcessScorer(model=model)
    step = scorer.chunk_size(batch_size)
    outputs = []
    for start in tqdm(range(0, len(rows), step), desc="scoring", unit="batch"):
        chunk = rows.iloc[start : start + step]
        images = [encode_image(read_bytes(uri, storage_options)) for uri in chunk["uri"]]
        outputs.append(scorer.predict_frame(request_frame(images, chunk["sha256"].tolist())))
    return pd.concat(outputs, ignore_index=True)
