"""Batch scoring: moderate a folder or S3 prefix of images with the registered champion."""

from eyecatcher.pipelines.batch_scoring.pipeline import create_pipeline

__all__ = ["create_pipeline"]
