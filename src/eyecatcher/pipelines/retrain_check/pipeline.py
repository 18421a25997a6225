"""Wiring of the retrain check (not part of the default ``kedro run``: it may exit non-zero)."""

from kedro.pipeline import Node, Pipeline

from eyecatcher.pipelines.retrain_check.nodes import (
    champion_verdicts,
    compute_online_metrics,
    decide_retraining,
    enforce_retrain_decision,
    mark_training_images,
    measure_disagreement,
    measure_drift,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    """Create the retrain-check pipeline.

    The project registers it with the feedback pipeline in front
    (:func:`eyecatcher.pipeline_registry.register_pipelines`), so the verdicts it reads are
    validated in the same run.

    Returns:
        The champion's verdicts, marked where they are on images it saw in training → drift
        report and plot, online metrics, disagreement (each on the unseen images) and the
        retrain decision; the last node fails the run when retraining is due.
    """
    return Pipeline(
        [
            Node(
                champion_verdicts,
                inputs=["champion", "monitoring_batch_verdicts", "image_index"],
                outputs="champion_batch_verdicts",
                name="champion_verdicts",
            ),
            Node(
                mark_training_images,
                inputs=["champion", "champion_batch_verdicts", "params:retrain_check"],
                outputs="monitored_verdicts",
                name="mark_training_images",
            ),
            Node(
                measure_drift,
                inputs=["champion", "monitored_verdicts", "params:retrain_check"],
                outputs=["drift_report", "drift_plot"],
                name="measure_drift",
            ),
            Node(
                compute_online_metrics,
                inputs=["monitored_verdicts", "feedback_items", "params:labelling", "champion"],
                outputs="monitoring_online_metrics",
                name="compute_online_metrics",
            ),
            Node(
                measure_disagreement,
                inputs=[
                    "monitored_verdicts",
                    "feedback_verdicts",
                    "params:retrain_check",
                    "champion",
                ],
                outputs="human_disagreement",
                name="measure_disagreement",
            ),
            Node(
                decide_retraining,
                inputs=[
                    "champion",
                    "feedback_items",
                    "human_disagreement",
                    "drift_report",
                    "params:retrain_check",
                ],
                outputs=["retrain_decision", "retrain_check_metrics"],
                name="decide_retraining",
            ),
            Node(
                enforce_retrain_decision,
                inputs=["retrain_decision", "params:retrain_check"],
                outputs=None,
                name="enforce_retrain_decision",
            ),
        ]
    )
