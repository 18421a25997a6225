"""Serving: the registered champion behind ``mlflow models serve``, smoke-tested like staging."""

from eyecatcher.pipelines.serving.pipeline import create_pipeline

__all__ = ["create_pipeline"]
