"""Wiring of the batch-scoring pipeline (``kedro run --pipelines batch_scoring``)."""

from kedro.pipeline import Node, Pipeline

from eyecatcher.pipelines.batch_scoring.nodes import (
    batch_scoring_metrics,
    list_images_to_score,
    resolve_batch_scoring_champion,
    score_images,
)
from eyecatcher.pipelines.batch_scoring.shadow import resolve_shadow, score_shadow


def create_pipeline(**kwargs) -> Pipeline:
    """Create the batch-scoring pipeline: champion (+ shadow) + listed images → verdicts, metrics.

    ``batch_verdicts_history`` (the verdict table's folder, read before scoring and written
    batch by batch while scoring) makes the run incremental and resumable; ``batch_verdicts``
    appends this run's rows to the table. The run's metrics are over this run's rows only.
    Without ``batch_scoring.shadow_model`` the shadow nodes pass the champion's verdicts through
    and write no shadow output.
    """
    return Pipeline(
        [
            Node(
                resolve_batch_scoring_champion,
                inputs="params:batch_scoring",
                outputs="batch_scoring_champion",
                name="resolve_batch_scoring_champion",
                tags=["batch_scoring"],
            ),
            Node(
                resolve_shadow,
                inputs="params:batch_scoring",
                outputs="batch_scoring_shadow",
                name="resolve_batch_scoring_shadow",
                tags=["batch_scoring"],
            ),
            Node(
                list_images_to_score,
                inputs="params:batch_scoring",
                outputs="images_to_score",
                name="list_images_to_score",
                tags=["batch_scoring"],
            ),
            Node(
                score_images,
                inputs=[
                    "images_to_score",
                    "batch_scoring_champion",
                    "params:batch_scoring",
                    "batch_verdicts_history",
                ],
                outputs=["champion_verdicts", "batch_scoring_summary"],
                name="score_images",
                tags=["batch_scoring"],
            ),
            Node(
                score_shadow,
                inputs=[
                    "images_to_score",
                    "champion_verdicts",
                    "batch_scoring_champion",
                    "batch_scoring_shadow",
                    "params:batch_scoring",
                ],
                outputs=[
                    "batch_verdicts",
                    "shadow_report",
                    "shadow_metrics",
                    "shadow_disagreements",
                ],
                name="score_shadow",
                tags=["batch_scoring"],
            ),
            Node(
                batch_scoring_metrics,
                # This run's rows: batch_verdicts, once saved, loads the whole history.
                inputs=["champion_verdicts", "batch_scoring_summary"],
                outputs=["batch_scoring_metrics", "batch_scoring_monitoring"],
                name="batch_scoring_metrics",
                tags=["batch_scoring"],
            ),
        ]
    )
