"""The ingestion pipeline's settings: the ``ingestion`` block, typed and validated once.

Unknown keys are refused with the closest known key (a ``url:`` for ``uri:`` would otherwise
surface deep inside the scan). Each default is the value ``conf/base/parameters_ingestion.yml``
sets (``tests/test_parameters.py`` compares them).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool, field_validator

from eyecatcher.parameters import Settings

#: Every format ingestion accepts (phones save HEIC; cameras also write .jpe/.jfif).
EXTENSIONS = [
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif",
    ".heic", ".heif",
]  # fmt: skip


class SourceSettings(Settings):
    """One image source: a local folder (relative to the project, or absolute) or ``s3://``.

    Attributes:
        name: Recorded per image (defaults to the URI).
        uri: Where the images are.
        folder_labels: Record the name of the sub-folder an image sits in.
        storage_options: fsspec options of this source; ``None``: the block's.
    """

    kind = "ingestion.sources"

    name: str | None = None
    uri: str
    folder_labels: StrictBool = False
    storage_options: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """The name recorded per image."""
        return self.name or self.uri


def _demo_sources() -> list[SourceSettings]:
    return [SourceSettings(name="demo", uri="data/01_raw/demo/images", folder_labels=False)]


class IngestionSettings(Settings):
    """The ``ingestion`` block (see ``conf/base/parameters_ingestion.yml``)."""

    kind = "ingestion"

    sources: list[SourceSettings] = Field(default_factory=_demo_sources)
    extensions: list[str] = Field(default_factory=lambda: list(EXTENSIONS))
    check_all_files: StrictBool = True
    min_side: int = 80
    max_pixels: int = 50_000_000
    max_frames: int = 1000
    max_bytes: int = 52_428_800
    workers: int = 4
    storage_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, value: Any) -> Any:
        """A source without a ``uri`` (or a bare string) is named, before any listing."""
        if not value:
            raise ValueError("No ingestion source configured (`ingestion.sources` is empty).")
        for number, source in enumerate(value, start=1):
            if not isinstance(source, dict) or not str(source.get("uri") or "").strip():
                raise ValueError(
                    f"Ingestion source #{number} ({source!r}) needs a `uri` (a local folder or "
                    "an s3:// prefix); see conf/base/parameters_ingestion.yml."
                )
        return value

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    def options_of(self, source: SourceSettings) -> dict[str, Any]:
        """A source's own fsspec options win; otherwise the block's (``globals.yml``'s)."""
        return dict(
            self.storage_options if source.storage_options is None else source.storage_options
        )
