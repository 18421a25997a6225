"""Ingestion: gather images from folders and S3 prefixes, validate, quarantine, de-duplicate."""

from eyecatcher.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
