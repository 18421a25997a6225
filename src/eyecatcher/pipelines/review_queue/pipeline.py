"""Wiring of the review queue (``kedro run --pipelines review_queue``; not in the default run)."""

from kedro.pipeline import Node, Pipeline

from eyecatcher.pipelines.review_queue.nodes import build_review_queue


def create_pipeline(**kwargs: object) -> Pipeline:
    """Create the review-queue pipeline.

    Returns:
        ``batch_verdicts`` + ``image_index`` → Label Studio tasks, the labelling config and
        the queue's report.
    """
    return Pipeline(
        [
            Node(
                build_review_queue,
                inputs=[
                    "batch_verdicts",
                    "image_index",
                    "params:review_queue",
                    "params:labelling",
                ],
                outputs=["review_queue_tasks", "review_queue_config", "review_queue_report"],
                name="build_review_queue",
                tags=["review_queue"],
            )
        ]
    )
