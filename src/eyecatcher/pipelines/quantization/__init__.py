"""Quantization: int8 vs fp32 per candidate, benchmarked side by side, with the accuracy rule."""

from eyecatcher.pipelines.quantization.pipeline import create_pipeline

__all__ = ["create_pipeline"]
