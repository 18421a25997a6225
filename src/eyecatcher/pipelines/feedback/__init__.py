"""Feedback pipeline: moderator verdicts (appeals, user reports, reviews) → validated labels."""

from eyecatcher.pipelines.feedback.pipeline import create_pipeline

__all__ = ["create_pipeline"]
