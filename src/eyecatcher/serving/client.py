"""The HTTP side of serving: request bodies, ``/invocations`` calls and answer rows.

One definition of what a request looks like and how an answer is read, for the serving
pipeline's smoke test, batch scoring against a server, the probes and the benchmarks. Images
are base64-encoded with the served contract's own :func:`~eyecatcher.serving_model.encode_image`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import requests

from eyecatcher.serving_model.contract import encode_image


def dataframe_split_body(
    images: list[str], ids: list[str] | None = None, explain: list[Any] | None = None
) -> dict[str, Any]:
    """The JSON body MLflow's scoring server reads as a DataFrame (``dataframe_split``).

    Args:
        images: Base64-encoded images, one per row.
        ids: Optional row ids, passed through to the response.
        explain: Optional per-row ``explain`` values (``True`` asks for a heatmap).
    """
    columns: dict[str, list[Any]] = {}
    if ids is not None:
        columns["id"] = list(ids)
    columns["image"] = list(images)
    if explain is not None:
        columns["explain"] = list(explain)
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(
            f"columns of different lengths: { {k: len(v) for k, v in columns.items()} }"
        )
    return {
        "dataframe_split": {
            "columns": list(columns),
            "data": [list(row) for row in zip(*columns.values(), strict=True)],
        }
    }


def request_body(images: list[bytes], ids: list[str] | None = None) -> bytes:
    """The encoded JSON body of a request moderating ``images`` (raw file bytes)."""
    encoded = [encode_image(data) for data in images]
    return json.dumps(dataframe_split_body(encoded, ids)).encode("utf-8")


def _probabilities(value: Any) -> dict[str, float]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items() if v is not None}
    raise TypeError(f"probabilities must be a mapping or its JSON text, got {type(value)}")


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def normalise_prediction(row: Mapping[str, Any]) -> dict[str, Any]:
    """Bring one answer row (served JSON or in-process DataFrame row) to plain Python values."""
    error = row.get("error")
    return {
        "id": None if is_missing(row.get("id")) else str(row.get("id")),
        "class": None if is_missing(row.get("class")) else str(row.get("class")),
        "probabilities": _probabilities(row.get("probabilities")),
        "unsafe_score": None if is_missing(row.get("unsafe_score")) else float(row["unsafe_score"]),
        "decision": None if is_missing(row.get("decision")) else str(row.get("decision")),
        "model_version": None
        if is_missing(row.get("model_version"))
        else str(row.get("model_version")),
        "error": None if is_missing(error) else str(error),
    }


def compare_predictions(
    served: Mapping[str, Any], local: Mapping[str, Any], tolerance: float
) -> list[str]:
    """Differences between a served answer and the in-process one for the same image.

    Args:
        served: A normalised served row (see :func:`normalise_prediction`).
        local: The normalised in-process row.
        tolerance: Largest absolute difference allowed in any probability or the unsafe score.

    Returns:
        Human-readable differences; empty when they agree.
    """
    problems = []
    for key in ("class", "decision", "model_version", "error"):
        if served[key] != local[key]:
            problems.append(f"{key}: served {served[key]!r} != in-process {local[key]!r}")
    if set(served["probabilities"]) != set(local["probabilities"]):
        problems.append("probabilities: the served and in-process class sets differ")
    else:
        for name, value in local["probabilities"].items():
            if abs(served["probabilities"][name] - value) > tolerance:
                problems.append(
                    f"probabilities[{name}]: served {served['probabilities'][name]:.6f} "
                    f"vs in-process {value:.6f}"
                )
    if (served["unsafe_score"] is None) != (local["unsafe_score"] is None) or (
        served["unsafe_score"] is not None
        and abs(served["unsafe_score"] - local["unsafe_score"]) > tolerance
    ):
        problems.append(
            f"unsafe_score: served {served['unsafe_score']} vs in-process {local['unsafe_score']}"
        )
    return problems


def post_invocations(
    url: str, body: bytes, content_type: str = "application/json", timeout_s: float = 30.0
) -> tuple[int, str, float]:
    """POST one body to ``/invocations``.

    Returns:
        The HTTP status, the response text and the wall time in milliseconds.
    """
    started = time.perf_counter()
    response = requests.post(
        url.rstrip("/") + "/invocations",
        data=body,
        headers={"Content-Type": content_type},
        timeout=timeout_s,
    )
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    return response.status_code, response.text, elapsed_ms


def latency_summary(latencies_ms: list[float]) -> dict[str, float]:
    """p50, p95, mean, min and max of per-request latencies (NaN when there are none)."""
    if not latencies_ms:
        nan = float("nan")
        return {"p50_ms": nan, "p95_ms": nan, "mean_ms": nan, "min_ms": nan, "max_ms": nan}
    values = np.asarray(latencies_ms, dtype=np.float64)
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "mean_ms": float(values.mean()),
        "min_ms": float(values.min()),
        "max_ms": float(values.max()),
    }


def prediction_records(predictions: Any) -> list[dict[str, Any]]:
    if isinstance(predictions, pd.DataFrame):
        return predictions.to_dict(orient="records")
    return list(predictions)


def served_rows(text: str) -> list[dict[str, Any]]:
    payload = json.loads(text)
    rows = payload["predictions"] if isinstance(payload, Mapping) else payload
    if isinstance(rows, Mapping):  # a column-oriented answer
        rows = pd.DataFrame(rows).to_dict(orient="records")
    return list(rows)
