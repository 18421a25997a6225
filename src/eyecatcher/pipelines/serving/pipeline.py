"""Wiring of the serving pipeline (``kedro run --pipelines serving``)."""

from kedro.pipeline import Node, Pipeline

from eyecatcher.pipelines.serving.nodes import (
    enforce_smoke_test,
    resolve_serving_champion,
    staging_smoke_test,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Create the serving pipeline: champion → scoring server → smoke-test report → verdict.

    The report is saved by its own node before :func:`enforce_smoke_test` can fail the run, so a
    failed smoke test still leaves its report in ``data/08_reporting`` and MLflow.
    """
    return Pipeline(
        [
            Node(
                resolve_serving_champion,
                inputs="params:serving",
                outputs="serving_champion",
                name="resolve_serving_champion",
                tags=["serving"],
            ),
            Node(
                staging_smoke_test,
                inputs=["serving_champion", "split_manifest", "params:serving"],
                outputs=[
                    "serving_smoke_test_report",
                    "serving_smoke_test_metrics",
                    "serving_latency_plot",
                    "serving_monitoring_metrics",
                ],
                name="staging_smoke_test",
                tags=["serving"],
            ),
            Node(
                enforce_smoke_test,
                inputs="serving_smoke_test_report",
                outputs=None,
                name="enforce_smoke_test",
                tags=["serving"],
            ),
        ]
    )
