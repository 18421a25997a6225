"""Batch scoring's settings: the ``batch_scoring`` block (with ``ray``), typed, validated once.

Unknown keys are refused with the closest known key (a misspelt ``engin: ray`` would otherwise
score everything in this process without a word). Each default is the value
``conf/base/parameters_batch_scoring.yml`` sets (``tests/test_parameters.py`` compares them);
``model_name`` and ``source`` have none in code: they come from ``conf/base/globals.yml``
(``model_name``, ``data_root``), so an environment that moves the data moves the source.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, StrictBool, field_validator

from eyecatcher.parameters import Settings

ENGINES = ("local", "ray")
#: Every format the served model decodes (phones save HEIC).
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".avif",
    ".heic",
    ".heif",
)


class RaySettings(Settings):
    """The ``batch_scoring.ray`` block: the pool of Ray actors of the ``ray`` engine.

    Attributes:
        workers: Actors in the pool (one loaded model each).
        cpus_per_worker: CPUs Ray reserves per actor.
        max_restarts: Times a batch whose worker (or node) died is sent again.
        replace_timeout_s: With every worker dead, how long to wait for room for a new one.
        num_cpus: CPUs of a local Ray started for the run (``None``: all cores); ignored on a
            cluster.
    """

    kind = "batch_scoring.ray"

    workers: int = 2
    cpus_per_worker: float = 1.0
    max_restarts: int = 3
    replace_timeout_s: float = 120.0
    num_cpus: int | None = None


class BatchScoringSettings(Settings):
    """The ``batch_scoring`` block.

    Attributes:
        model_name: The registered model (``${globals:model_name}``; no default in code).
        alias: The alias scored (``champion``), pinned to a version once per run.
        shadow_model: An alias or a version number of ``model_name`` scored side by side;
            ``None`` (or blank): no shadow. A number is kept as its text.
        source: A local folder or file, or an ``s3://`` prefix (no default in code).
        recursive: List the folders below ``source`` too.
        extensions: Files kept (case-insensitive); empty: every file.
        batch_size: Images per ``predict`` (at most the model's ``max_rows``).
        engine: ``local`` (this process) or ``ray`` (a pool of Ray actors).
        ray: The Ray pool (:class:`RaySettings`).
        storage_options: Non-secret fsspec options for ``s3://`` sources.
    """

    kind = "batch_scoring"

    model_name: str
    alias: str = "champion"
    shadow_model: str | None = None
    source: str
    recursive: StrictBool = True
    extensions: list[str] = Field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    batch_size: int = 16
    engine: str = "local"
    ray: RaySettings = Field(default_factory=RaySettings)
    storage_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("shadow_model", mode="before")
    @classmethod
    def _shadow_model(cls, value: Any) -> str | None:
        # `--params batch_scoring.shadow_model=2` arrives as an int: the version "2".
        if value is None or str(value).strip() == "":
            return None
        return str(value).strip()

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: Any) -> Any:
        # A path object (a test's tmp_path) is the path as text.
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        if value not in ENGINES:
            raise ValueError(f"must be one of {list(ENGINES)}, got {value!r}")
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    @field_validator("extensions", mode="before")
    @classmethod
    def _no_extensions(cls, value: Any) -> Any:
        # YAML's `extensions:` with nothing after it is null: every file, as `[]` means.
        return [] if value is None else value

    @field_validator("ray", "storage_options", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        # YAML's `storage_options:` (or `ray:`) with nothing after it is null: no options,
        # every Ray default, as the empty block means.
        return {} if value is None else value
