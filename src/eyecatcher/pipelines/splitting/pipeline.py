"""Wiring of the splitting pipeline."""

from kedro.pipeline import Node, Pipeline

from eyecatcher.pipelines.splitting.nodes import (
    compute_perceptual_hashes,
    group_near_duplicates,
    plot_split_report,
    split_dataset,
    split_metrics,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Create the splitting pipeline: ``image_labels`` → ``split_manifest`` + dataset report."""
    return Pipeline(
        [
            Node(
                compute_perceptual_hashes,
                inputs=["image_labels", "params:splitting"],
                outputs="image_phashes",
                name="compute_perceptual_hashes",
            ),
            Node(
                group_near_duplicates,
                inputs=["image_phashes", "params:splitting"],
                outputs="near_duplicate_groups",
                name="group_near_duplicates",
            ),
            Node(
                split_dataset,
                inputs=["image_labels", "near_duplicate_groups", "params:splitting"],
                outputs=["split_manifest", "split_report", "split_summary"],
                name="split_dataset",
            ),
            Node(
                plot_split_report,
                inputs="split_report",
                outputs="split_report_chart",
                name="plot_split_report",
            ),
            Node(
                split_metrics,
                inputs="split_summary",
                outputs="split_metrics",
                name="log_split_metrics",
            ),
        ],
        tags=["training"],
    )
