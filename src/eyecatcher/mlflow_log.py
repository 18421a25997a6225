"""The one door to MLflow for params, tags, metric dicts and JSON/YAML artifacts.

Everything a node or a package records in MLflow goes through these functions, and every one of
them redacts first (:func:`eyecatcher.redaction.redact`): a value whose name is secret-like is
replaced, ``user:password@`` and secret query values are cut from URIs, and a
``storage_options`` block is recorded by **key name only** (its values may hold an endpoint
with a token, a SAS signature, a profile). Reports that are saved as files *and* logged
(``training_report.json``, ``quantization_decision.json``) call :func:`safe_record` where they
are built, so the file on disk is as clean as the artifact.

Image and model files are logged with MLflow's own calls: they are data, not records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow

from eyecatcher.redaction import KEYS_ONLY, REDACTED, record_safe, redact_uri

#: MLflow's limit on a param value (and what tags are cut to, to keep the UI readable).
PARAM_LIMIT = 500
TAG_LIMIT = 5000


def safe_record(value: Any, name: str = "") -> Any:
    """A copy of ``value`` fit to record (:func:`eyecatcher.redaction.record_safe`)."""
    return record_safe(value, name)


def safe_tags(tags: Mapping[str, Any], limit: int = TAG_LIMIT) -> dict[str, str]:
    """Tags (or params) as MLflow stores them: redacted strings, cut to ``limit``.

    A flattened name inside a keys-only block (``storage_options.client_kwargs.endpoint_url``)
    keeps its name; its value is not recorded.
    """
    safe = {}
    for key, value in tags.items():
        inside = any(part in KEYS_ONLY for part in str(key).split(".")[:-1])
        record = REDACTED if inside else safe_record(value, str(key))
        safe[str(key)] = _text(record)[:limit]
    return safe


def log_params(params: Mapping[str, Any]) -> None:
    """``mlflow.log_params``, redacted."""
    mlflow.log_params(safe_tags(params, PARAM_LIMIT))


def set_tags(tags: Mapping[str, Any]) -> None:
    """``mlflow.set_tags``, redacted."""
    mlflow.set_tags(safe_tags(tags))


def log_dict(record: Mapping[str, Any] | list[Any], artifact_file: str) -> None:
    """``mlflow.log_dict`` (JSON or YAML by the file's suffix), redacted."""
    mlflow.log_dict(safe_record(record), artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    """``mlflow.log_text``, with URIs stripped of credentials."""
    mlflow.log_text(redact_uri(text), artifact_file)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)
