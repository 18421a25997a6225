"""The served moderation model (MLflow pyfunc): request/response contract, backends, packaging.

See ``docs/registry.md`` for the request and response format.
"""

from eyecatcher.serving_model.contract import (
    DECISIONS,
    ID_COLUMN,
    IMAGE_COLUMN,
    OUTPUT_COLUMNS,
    DecisionThresholds,
    ServingConfig,
    decode_base64_image,
    encode_image,
)

__all__ = [
    "DECISIONS",
    "ID_COLUMN",
    "IMAGE_COLUMN",
    "OUTPUT_COLUMNS",
    "DecisionThresholds",
    "ServingConfig",
    "decode_base64_image",
    "encode_image",
]
