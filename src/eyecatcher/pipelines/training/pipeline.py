"""Wiring: the candidate pipeline, instantiated once per configured candidate, then selection.

The candidate list comes from config (``training.candidates``) through
:func:`eyecatcher.candidates.configured_candidates`; adding a candidate is a config change only.
Each candidate's datasets live in its namespace (``resnet50.model_bundle``,
``resnet50.evaluation``, ...) and are declared by the dataset factories of
``conf/base/catalog_training.yml``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial, update_wrapper
from typing import Any

from kedro.pipeline import Node, Pipeline

from eyecatcher.candidates import configured_candidates
from eyecatcher.pipelines.training.nodes import (
    evaluate_candidate,
    explain_candidate,
    log_candidate_run,
    plot_candidate,
    select_candidate,
    train_candidate,
)

#: Inputs every candidate shares (not namespaced).
SHARED_INPUTS = {"split_manifest", "feature_cache"}


def _bind(func: Callable[..., Any], candidate: str) -> Callable[..., Any]:
    # update_wrapper keeps the function's name for Kedro's logs and kedro-viz.
    return update_wrapper(partial(func, candidate=candidate), func)


def create_candidate_pipeline(candidate: str) -> Pipeline:
    """The pipeline of one candidate, with its datasets in the ``candidate`` namespace.

    Args:
        candidate: A name from ``training.candidates``.

    Returns:
        Train -> evaluate -> plot, explain (heatmaps) and log to MLflow, for that candidate.
    """
    # The name is bound here because Kedro gives nodes no literal inputs; everything else
    # comes from `params:training`.
    base = Pipeline(
        [
            Node(
                _bind(train_candidate, candidate),
                inputs=["split_manifest", "feature_cache", "params:training"],
                outputs=["model_bundle", "training_report"],
                name="train_candidate",
            ),
            Node(
                _bind(evaluate_candidate, candidate),
                inputs=["model_bundle", "split_manifest", "feature_cache", "params:training"],
                outputs=["evaluation", "test_predictions"],
                name="evaluate_candidate",
            ),
            Node(
                _bind(explain_candidate, candidate),
                inputs=["model_bundle", "test_predictions", "evaluation", "params:training"],
                outputs=["explanations", "explanations_index"],
                name="explain_candidate",
            ),
            Node(
                plot_candidate,
                inputs=["evaluation", "training_report"],
                outputs=[
                    "confusion_matrix_plot",
                    "roc_curve_plot",
                    "pr_curve_plot",
                    "training_curves_plot",
                ],
                name="plot_candidate",
            ),
            Node(
                _bind(log_candidate_run, candidate),
                inputs={
                    "model_bundle": "model_bundle",
                    "training_report": "training_report",
                    "evaluation": "evaluation",
                    "explanations": "explanations",
                    "explanations_index": "explanations_index",
                    "training": "params:training",
                },
                outputs="mlflow_run",
                name="log_candidate_run",
            ),
        ]
    )
    return Pipeline(
        base,
        namespace=candidate,
        inputs=SHARED_INPUTS,
        parameters={"params:training"},
        tags=["training", f"candidate.{candidate}"],
    )


def create_pipeline(**kwargs: object) -> Pipeline:
    """The training pipeline for every configured candidate, and the selection among them.

    Args:
        **kwargs: Unused (Kedro's ``create_pipeline`` convention).

    Returns:
        The training pipeline.
    """
    candidates = configured_candidates()
    per_candidate = sum((create_candidate_pipeline(name) for name in candidates), Pipeline([]))
    selection = Pipeline(
        [
            Node(
                select_candidate,
                inputs=["params:training", *[f"{name}.evaluation" for name in candidates]],
                outputs="candidate_selection",
                name="select_candidate",
            )
        ],
        tags=["training"],
    )
    return per_candidate + selection
