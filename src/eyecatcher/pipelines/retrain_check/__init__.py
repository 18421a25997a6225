"""Retrain check: new feedback, the champion's disagreement with humans, drift → a decision."""

from eyecatcher.pipelines.retrain_check.pipeline import create_pipeline

__all__ = ["create_pipeline"]
