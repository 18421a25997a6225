"""Wiring: one registration node over every candidate's outputs, then the CI switch.

Which candidate is registered is only known at run time (``candidate_selection``), so the
node receives the evaluation, bundle and MLflow run record of every configured candidate
(:func:`eyecatcher.candidates.configured_candidates`, the list training and quantization use)
and picks the selected one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kedro.pipeline import Node, Pipeline

from eyecatcher.pipelines.registration.nodes import enforce_gate, register_model


def create_pipeline(candidates: Sequence[str] | None = None, **kwargs: Any) -> Pipeline:
    """Create the registration pipeline.

    Args:
        candidates: Candidate names (Kedro namespaces); ``None`` reads ``training.candidates``
            from the configuration of the current run, as training does.
        **kwargs: Ignored (Kedro's ``find_pipelines`` passes none).

    Returns:
        ``register_model`` then ``enforce_registration_gate``.
    """
    if candidates is None:
        from eyecatcher.candidates import configured_candidates

        candidates = configured_candidates()
    per_candidate = {}
    for name in candidates:
        per_candidate[f"evaluation__{name}"] = f"{name}.evaluation"
        per_candidate[f"bundle__{name}"] = f"{name}.model_bundle"
        per_candidate[f"mlflow_run__{name}"] = f"{name}.mlflow_run"
    return Pipeline(
        [
            Node(
                register_model,
                inputs={
                    "candidate_selection": "candidate_selection",
                    "quantization_decision": "quantization_decision",
                    "split_manifest": "split_manifest",
                    "params": "params:registration",
                    "quantization_params": "params:quantization",
                    "shadow_evidence": "registration_shadow_evidence",
                    "image_phashes": "image_phashes",
                    "split_summary": "split_summary",
                    **per_candidate,
                },
                outputs=["registration_report", "registration_metrics"],
                name="register_model",
            ),
            Node(
                enforce_gate,
                inputs=["registration_report", "params:registration"],
                outputs=None,
                name="enforce_registration_gate",
            ),
        ],
        tags="registration",
    )
