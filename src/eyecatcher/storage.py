"""Reading and listing files wherever they live: a local folder or an ``s3://`` prefix (fsspec).

Local paths may be relative; they are resolved against the working directory, which for
``kedro run`` is the project root.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fsspec


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None):
    """Return ``(fs, path)`` for ``uri`` with optional fsspec ``storage_options``."""
    return fsspec.core.url_to_fs(uri, **dict(storage_options or {}))


def read_bytes(uri: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """Read a whole file from a local path or any fsspec URL (``s3://bucket/key``)."""
    with fsspec.open(uri, "rb", **dict(storage_options or {})) as fh:
        return fh.read()
