"""Wiring of the labelling pipeline."""

from kedro.pipeline import Node, Pipeline

from eyecatcher.pipelines.labelling.nodes import (
    assign_classes,
    report_label_distribution,
    request_moderation_labels,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    """Create the labelling pipeline.

    Returns:
        ``image_index`` → ``image_labels``, the label-distribution plot and metrics.
    """
    return Pipeline(
        [
            Node(
                request_moderation_labels,
                inputs=[
                    "image_index",
                    "rekognition_response_cache",
                    "rekognition_endpoint",
                    "params:labelling",
                ],
                outputs=["rekognition_results", "labelling_request_stats"],
                name="request_moderation_labels",
                tags=["training"],
            ),
            Node(
                assign_classes,
                inputs=["rekognition_results", "params:labelling"],
                outputs=["image_labels", "labelling_mapping_stats"],
                name="assign_classes",
                tags=["training"],
            ),
            Node(
                report_label_distribution,
                inputs=["image_labels", "labelling_request_stats", "labelling_mapping_stats"],
                outputs=["label_distribution_plot", "labelling_metrics"],
                name="report_label_distribution",
                tags=["training"],
            ),
        ]
    )
