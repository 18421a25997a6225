"""Model card pipeline: one self-contained HTML card per registered version."""

from eyecatcher.pipelines.model_card.pipeline import create_pipeline

__all__ = ["create_pipeline"]
