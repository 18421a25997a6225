"""Reviewer-facing reports: the model card of a registered version (self-contained HTML)."""

from eyecatcher.reporting.card_content import CardInputs, card_sections
from eyecatcher.reporting.html_card import render_card

__all__ = ["CardInputs", "card_sections", "render_card"]
