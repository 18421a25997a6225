"""Training: one frozen-backbone transfer-learning pipeline per candidate, then selection."""

from eyecatcher.pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
