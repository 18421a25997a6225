"""The registered version's description: what a reviewer reads first in the registry."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from eyecatcher.reporting.card_content import review_threshold


def version_description(
    report: Mapping[str, Any], training_report: Mapping[str, Any], card_url: str
) -> str:
    """Markdown: what the model is, the gate outcome, the operating point, the card's link.

    Args:
        report: The registration report.
        training_report: The registered candidate's training report.
        card_url: Where the model card opens.

    Returns:
        A few lines of Markdown.
    """
    threshold = review_threshold(report)
    operating = (
        f"review when 1 - p({training_report.get('safe_class', 'safe')}) > {float(threshold):.3f}"
        if threshold is not None and math.isfinite(float(threshold))
        else "no finite operating threshold (every image is flagged)"
    )
    lines = [
        f"**{training_report.get('architecture')}** ({report.get('precision')}), candidate "
        f"`{report.get('candidate')}`, classes: {', '.join(training_report.get('classes', []))}.",
        f"Gate: {report.get('gate', {}).get('summary')}.",
        f"Operating point: {operating}.",
        f"Model card: [{card_url}]({card_url}) (artifact of run `{report.get('run_id')}`).",
    ]
    if training_report.get("random_weights"):
        lines.insert(0, "**DEMO MODEL: random backbone weights, not fit for moderation.**")
    return "\n\n".join(lines)
