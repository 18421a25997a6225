"""The shadow period: may the ``champion`` alias move to a candidate the shadow has not proven?

Evidence is the shadow report batch scoring writes when it scores with
``batch_scoring.shadow_model`` (:func:`eyecatcher.monitoring.shadow.shadow_comparison` plus
which versions were compared). It counts for a candidate only when the version scored as
the shadow serves exactly what the candidate would (the same ``model_fingerprint`` tag) and
the champion it was compared with is still the champion. See docs/registry.md. The catalog
reads the report with :class:`~eyecatcher.datasets.optional_json_dataset.OptionalJSONDataset`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from eyecatcher.monitoring.shadow import CHAMPION_VERSION_KEY, SHADOW_VERSION_KEY, ShadowPeriod
from eyecatcher.pipelines.registration.report import FINGERPRINT_TAG


def shadow_status(
    period: ShadowPeriod | None,
    evidence: Mapping[str, Any] | None,
    *,
    fingerprint: str,
    champion: ModelVersion | None,
    version_fingerprint: Callable[[str], str | None],
) -> dict[str, Any]:
    """Whether the shadow period lets this candidate become champion, and why, in sentences.

    Args:
        period: The required period (``None``: not required).
        evidence: The shadow report, or ``None`` when batch scoring has written none.
        fingerprint: The candidate's model fingerprint.
        champion: The current champion (``None``: there is nothing to shadow).
        version_fingerprint: ``f(version) -> fingerprint or None`` for a registered version.

    Returns:
        ``required``, ``passed``, ``reasons`` (what held or what is missing) and ``evidence``
        (which versions the report compared, when it named them).
    """
    status: dict[str, Any] = {"required": period is not None, "passed": True, "reasons": []}
    if period is None:
        status["reasons"].append("no shadow period required (registration.shadow.required)")
    elif period.approved:
        status["reasons"].append("shadow period explicitly approved (registration.shadow.approved)")
    elif champion is None:
        status["reasons"].append("no champion to shadow: the first version needs no shadow period")
    else:
        status["passed"], status["reasons"] = _judge(
            period, evidence, fingerprint, str(champion.version), version_fingerprint
        )
        if evidence is not None:
            status["evidence"] = {
                "shadow": evidence.get(SHADOW_VERSION_KEY),
                "champion": evidence.get(CHAMPION_VERSION_KEY),
            }
    return status


def _judge(
    period: ShadowPeriod,
    evidence: Mapping[str, Any] | None,
    fingerprint: str,
    champion: str,
    version_fingerprint: Callable[[str], str | None],
) -> tuple[bool, list[str]]:
    """The period against the evidence: the first missing piece, or the checks' results."""
    if evidence is None:
        return False, [
            "no shadow report exists: score with batch_scoring.shadow_model first "
            "(kedro run --pipelines batch_scoring --params batch_scoring.shadow_model=challenger)"
        ]
    shadow = evidence.get(SHADOW_VERSION_KEY)
    compared = evidence.get(CHAMPION_VERSION_KEY)
    if shadow is None:
        return False, [
            f"the shadow report does not name the shadow's version ({SHADOW_VERSION_KEY})"
        ]
    if version_fingerprint(str(shadow)) != fingerprint:
        return False, [
            f"the shadow report is about v{shadow}, which does not serve this candidate "
            "(another model fingerprint); shadow this candidate's challenger version"
        ]
    if compared is not None and str(compared) != champion:
        return False, [
            f"the shadow report compared with v{compared}, but the champion is now "
            f"v{champion}; shadow again"
        ]
    passed, checks = period.check(evidence)
    return passed, [f"shadow v{shadow}: {check}" for check in checks]


def fingerprint_of(registry_client: MlflowClient, model_name: str) -> Callable[[str], str | None]:
    """``f(version) -> model_fingerprint tag`` (``None`` for an unknown version)."""

    def lookup(version: str) -> str | None:
        try:
            return registry_client.get_model_version(model_name, version).tags.get(FINGERPRINT_TAG)
        except MlflowException:
            return None

    return lookup
