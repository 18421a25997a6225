"""Registration: accuracy-gated registration of the selected candidate, champion by alias."""

from eyecatcher.pipelines.registration.pipeline import create_pipeline

__all__ = ["create_pipeline"]
