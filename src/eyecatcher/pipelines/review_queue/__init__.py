"""Review queue: the champion's ``review`` verdicts and an audit sample as Label Studio tasks."""

from eyecatcher.pipelines.review_queue.pipeline import create_pipeline

__all__ = ["create_pipeline"]
