"""Splitting: balanced sampling and a leakage-free train/validation/test split."""

from eyecatcher.pipelines.splitting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
