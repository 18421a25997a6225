"""Wiring of the ingestion pipeline."""

from kedro.pipeline import Node, Pipeline

from eyecatcher.pipelines.ingestion.nodes import ingest_images, log_ingestion_metrics


def create_pipeline(**kwargs) -> Pipeline:
    """Create the ingestion pipeline: sources → ``image_index`` + ``ingestion_quarantine``."""
    return Pipeline(
        [
            Node(
                ingest_images,
                inputs="params:ingestion",
                outputs=["image_index", "ingestion_quarantine", "ingestion_summary"],
                name="ingest_images",
                tags=["training"],
            ),
            Node(
                log_ingestion_metrics,
                inputs="ingestion_summary",
                outputs="ingestion_metrics",
                name="log_ingestion_metrics",
                tags=["training"],
            ),
        ]
    )
