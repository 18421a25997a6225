"""Wiring of the feedback pipeline."""

from kedro.pipeline import Node, Pipeline

from eyecatcher.pipelines.feedback.nodes import validate_feedback


def create_pipeline(**kwargs: object) -> Pipeline:
    """Create the feedback pipeline.

    Returns:
        ``feedback_files`` + ``image_index`` → ``feedback_items``, ``feedback_verdicts``, the
        ``feedback_report`` and its metrics.
    """
    return Pipeline(
        [
            Node(
                validate_feedback,
                inputs=["feedback_files", "image_index", "params:feedback", "params:labelling"],
                outputs=[
                    "feedback_items",
                    "feedback_verdicts",
                    "feedback_report",
                    "feedback_metrics",
                ],
                name="validate_feedback",
                tags=["training"],
            )
        ]
    )
