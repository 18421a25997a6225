"""Labelling: Amazon Rekognition moderation labels become training classes (docs/labelling.md)."""

from eyecatcher.pipelines.labelling.pipeline import create_pipeline

__all__ = ["create_pipeline"]
