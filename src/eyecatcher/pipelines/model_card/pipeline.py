"""Wiring: the model card after registration (it reads ``registration_report``, so Kedro runs
it after the registration node in the default pipeline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kedro.pipeline import Node, Pipeline

from eyecatcher.pipelines.model_card.nodes import publish_model_card, render_model_card

_PER_CANDIDATE = (
    "evaluation",
    "training_report",
    "test_predictions",
    "explanations",
    "explanations_index",
)


def create_pipeline(candidates: Sequence[str] | None = None, **kwargs: Any) -> Pipeline:
    """Create the model card pipeline.

    Args:
        candidates: Candidate names; ``None`` reads ``training.candidates`` from the run's
            configuration, as training does.
        **kwargs: Ignored.

    Returns:
        ``render_model_card`` then ``publish_model_card``.
    """
    if candidates is None:
        from eyecatcher.candidates import configured_candidates

        candidates = configured_candidates()
    per_candidate = {
        f"{dataset}__{name}": f"{name}.{dataset}"
        for name in candidates
        for dataset in _PER_CANDIDATE
    }
    return Pipeline(
        [
            Node(
                render_model_card,
                inputs={
                    "registration_report": "registration_report",
                    "candidate_selection": "candidate_selection",
                    "quantization_decision": "quantization_decision",
                    "split_manifest": "split_manifest",
                    "image_labels": "image_labels",
                    **per_candidate,
                },
                outputs="model_card",
                name="render_model_card",
            ),
            Node(
                publish_model_card,
                inputs={
                    "model_card": "model_card",
                    "registration_report": "registration_report",
                    "params": "params:model_card",
                    **{f"training_report__{n}": f"{n}.training_report" for n in candidates},
                },
                outputs="model_card_publication",
                name="publish_model_card",
            ),
        ],
        tags=["model_card", "reporting"],
    )
