"""The serving pipeline's settings: the ``serving`` block, typed and validated once per node.

Unknown keys are refused with the closest known key (a misspelt ``foregrond: true`` would
otherwise smoke-test and stop the server without a word). Each default is the value
``conf/base/parameters_serving.yml`` sets (``tests/test_parameters.py`` compares them);
``model_name`` has none in code: it is written once, in ``conf/base/globals.yml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, StrictBool, field_validator

from eyecatcher.parameters import Settings


class SmokeTestSettings(Settings):
    """What the staging smoke test sends and what it tolerates (``serving.smoke_test``).

    Attributes:
        split: The split whose images are sent (``test``: never seen in training).
        max_images: At most this many images, one request each, spread over classes;
            ``None``: all of them.
        min_images: Fewer readable test images fail the test.
        max_errors: Row errors tolerated among the test images (held-out images are valid).
        tolerance: Largest allowed ``|served - in-process|`` for any probability and the
            unsafe score.
        bad_request_probes: Send every malformed request and check the server still answers.
        max_image_bytes: The served model's per-image byte limit for the too-large probe;
            ``None``: read from the served model.
        max_p95_ms: Fail when the p95 latency exceeds this; ``None``: measured, not enforced.
    """

    kind = "serving.smoke_test"

    split: str = "test"
    max_images: int | None = 40
    min_images: int = 1
    max_errors: int = 0
    tolerance: float = 1e-4
    bad_request_probes: StrictBool = True
    max_image_bytes: int | None = None
    max_p95_ms: float | None = None

    @field_validator("max_images", "max_image_bytes", "max_p95_ms")
    @classmethod
    def _positive_or_none(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError(f"must be > 0 (or null), got {value}")
        return value

    @field_validator("min_images", "max_errors", "tolerance")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value


class ServingSettings(Settings):
    """The ``serving`` block: which champion, how its server runs, how it is smoke-tested.

    Attributes:
        model_name: The registered model (``${globals:model_name}``; no default in code).
        alias: The alias served (``champion``); resolved to a pinned version once.
        host: Address the server listens on.
        port: Port to serve on; ``None`` (or 0): a free one chosen at start-up.
        workers: Server worker processes.
        startup_timeout_s: How long the server may take to answer ``/ping`` (and the
            warm-up request).
        server_request_timeout_s: Per-request limit inside the server (it answers 504 beyond).
        client_timeout_s: Per-request limit of our HTTP client.
        server_env: Extra environment variables for the server process (values as text).
        storage_options: Non-secret fsspec options for reading ``s3://`` test images.
        foreground: After a passing smoke test, keep serving until Ctrl-C / SIGTERM.
        smoke_test: The smoke test's settings (:class:`SmokeTestSettings`).
    """

    kind = "serving"

    model_name: str
    alias: str = "champion"
    host: str = "127.0.0.1"
    port: int | None = None
    workers: int = 1
    startup_timeout_s: float = 300.0
    server_request_timeout_s: int = 60
    client_timeout_s: float = 60.0
    server_env: dict[str, str] = Field(default_factory=dict)
    storage_options: dict[str, Any] = Field(default_factory=dict)
    foreground: StrictBool = False
    smoke_test: SmokeTestSettings = Field(default_factory=SmokeTestSettings)

    @field_validator("port")
    @classmethod
    def _port(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value < 65536:
            raise ValueError(f"must be in 0..65535 (0 or null: a free port), got {value}")
        return value

    @field_validator("workers", "startup_timeout_s", "server_request_timeout_s", "client_timeout_s")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be > 0, got {value}")
        return value

    @field_validator("server_env", mode="before")
    @classmethod
    def _env_as_text(cls, value: Any) -> Any:
        # An environment holds text: YAML's `OMP_NUM_THREADS: 2` means "2"; null means none.
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return {str(key): str(item) for key, item in value.items()}
        return value

    @field_validator("storage_options", "smoke_test", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        # YAML's `storage_options:` (or `smoke_test:`) with nothing after it is null: no
        # options, every smoke-test default, as an empty block means.
        return {} if value is None else value
