"""Wiring of the quantization pipeline: one build-and-benchmark slice per training candidate.

Each candidate's slice runs in the candidate's namespace (``<candidate>.model_bundle`` in,
``<candidate>.onnx_models`` and ``<candidate>.quantization_report`` out), like training, so the
candidate list is the one training uses (:func:`eyecatcher.candidates.configured_candidates`).
One summary node then writes the single ``quantization_decision`` that registration reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kedro.pipeline import Node, Pipeline

from eyecatcher.pipelines.quantization.nodes import (
    benchmark_candidate,
    build_onnx_models,
    summarise_quantization,
)
from eyecatcher.pipelines.quantization.report import table_markdown


def candidate_pipeline() -> Pipeline:
    """The per-candidate slice, before namespacing (datasets without a candidate prefix)."""
    return Pipeline(
        [
            Node(
                build_onnx_models,
                inputs=["model_bundle", "split_manifest", "params:quantization"],
                outputs=["onnx_models", "quantization_attempt"],
                name="build_onnx_models",
            ),
            Node(
                benchmark_candidate,
                inputs=[
                    "onnx_models",
                    "model_bundle",
                    "split_manifest",
                    "quantization_attempt",
                    "params:quantization",
                ],
                outputs="quantization_report",
                name="benchmark_candidate",
            ),
        ]
    )


def create_pipeline(candidates: Sequence[str] | None = None, **kwargs: Any) -> Pipeline:
    """Create the quantization pipeline.

    Args:
        candidates: Candidate names (Kedro namespaces); ``None`` reads ``training.candidates``
            from the configuration of the current run, exactly as the training pipeline does.
        **kwargs: Ignored (Kedro's ``find_pipelines`` passes none).

    Returns:
        One namespaced build-and-benchmark slice per candidate, and the summary node.
    """
    if candidates is None:
        from eyecatcher.candidates import configured_candidates

        candidates = configured_candidates()
    if "params" in candidates:
        # The summary node takes the parameters and the reports as keyword arguments.
        raise ValueError("A training candidate cannot be called 'params'.")
    slices = [
        Pipeline(
            candidate_pipeline(),
            namespace=candidate,
            inputs={"split_manifest"},
            parameters={"params:quantization"},
        )
        for candidate in candidates
    ]
    summary = Pipeline(
        [
            Node(
                summarise_quantization,
                inputs={
                    "params": "params:quantization",
                    **{candidate: f"{candidate}.quantization_report" for candidate in candidates},
                },
                outputs=[
                    "quantization_decision",
                    "quantization_table",
                    "quantization_chart",
                    "quantization_metrics",
                ],
                name="summarise_quantization",
            ),
            Node(
                table_markdown,
                inputs="quantization_table",
                outputs="quantization_table_markdown",
                name="quantization_table_markdown",
            ),
        ]
    )
    return Pipeline([*slices, summary], tags="quantization")
