"""Wiring of the labelling pipeline."""

from kedro.pipeline import Node, Pipeline

from eyecatcher.pipelines.labelling.nodes import (
    assign_classes,
    merge_label_sources,
    report_label_distribution,
    request_moderation_labels,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    """Create the labelling pipeline.

    The project registers it with the feedback pipeline in front
    (:func:`eyecatcher.pipeline_registry.register_pipelines`), so ``feedback_verdicts`` are
    validated in the same run.

    Returns:
        ``image_index`` (+ ``feedback_verdicts``) → ``image_labels`` (human, folder and
        Rekognition labels), the label-distribution plot and metrics.
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
                outputs=["rekognition_labels", "labelling_mapping_stats"],
                name="assign_classes",
                tags=["training"],
            ),
            Node(
                merge_label_sources,
                inputs=[
                    "rekognition_labels",
                    "image_index",
                    "feedback_verdicts",
                    "params:labelling",
                ],
                outputs=["image_labels", "label_source_stats"],
                name="merge_label_sources",
                tags=["training"],
            ),
            Node(
                report_label_distribution,
                inputs=[
                    "image_labels",
                    "labelling_request_stats",
                    "labelling_mapping_stats",
                    "label_source_stats",
                ],
                outputs=["label_distribution_plot", "labelling_metrics"],
                name="report_label_distribution",
                tags=["training"],
            ),
        ]
    )
