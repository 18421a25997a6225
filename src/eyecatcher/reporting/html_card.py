"""One self-contained HTML page from the card's sections: inline CSS, images as data URIs,
no script and no network access, so it opens the same from MLflow, a laptop or an archive."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from html import escape
from typing import Any

import pandas as pd

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
.banner { background: #fde8e8; border: 2px solid #c0392b; padding: 0.8em 1em; font-weight: 600; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ddd;
        padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } .figures img { max-width: 48%; margin: 0.5%; }
.gallery figure { display: inline-block; margin: 0.4em; width: 47%; vertical-align: top; }
.gallery img { width: 100%; image-rendering: pixelated; } figcaption { font-size: 0.85em; }
.muted { color: #666; font-size: 0.9em; }
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _rows(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _frame(frame: pd.DataFrame, index: bool = False) -> str:
    if frame.empty:
        return "<p class='muted'>nothing recorded</p>"
    headers = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = ""
    for label, row in frame.iterrows():
        cells = ([str(label)] if index else []) + [str(v) for v in row.tolist()]
        body += "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _images(figures: Mapping[str, bytes]) -> str:
    return "".join(
        f"<img src='{_data_uri(png)}' alt='{escape(name)}'>" for name, png in figures.items()
    )


def render_card(sections: Mapping[str, Any], generated: str) -> str:
    """The HTML page of :func:`eyecatcher.reporting.card_sections`.

    Args:
        sections: The card's sections.
        generated: When and by what the card was made (shown in the footer).

    Returns:
        A complete HTML document.
    """
    banner = sections.get("banner")
    gallery = "".join(
        f"<figure><img src='{_data_uri(png)}' alt='heatmap'><figcaption>{escape(caption)}"
        "</figcaption></figure>"
        for png, caption in sections["gallery"]
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(sections['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(sections['title'])}</h1>",
        f"<p class='banner'>{escape(banner)}</p>" if banner else "",
        "<h2>What the model is</h2>",
        _rows(sections["identity"]),
        "<h2>The data it saw</h2>",
        _frame(sections["data"], index=True),
        _rows(sections["label_sources"]),
        "<h2>How good it is</h2>",
        _rows(sections["metrics"]),
        "<h3>Operating point</h3>",
        "".join(f"<p>{escape(text)}</p>" for text in sections["operating_words"]),
        _frame(sections["per_class"]),
        "<h3>Confusion matrix and curves (test)</h3>",
        f"<div class='figures'>{_images(sections['figures'])}</div>",
        "<h3>Quantization trade-off</h3>",
        _rows(sections["quantization"]),
        "<h2>Gate and lineage</h2>",
        _rows(sections["gate"]),
        "<h2>Where it looks: heatmaps</h2>",
        "<p class='muted'>Left: the image as the model saw it; right: Grad-CAM for the "
        "predicted class (bright = strongest evidence).</p>",
        f"<div class='gallery'>{gallery}</div>" if gallery else "<p>No heatmaps.</p>",
        "<h2>Known limitations</h2><ul>",
        "".join(f"<li>{escape(text)}</li>" for text in sections["limitations"]),
        "</ul>",
        f"<p class='muted'>{escape(generated)}</p></body></html>",
    ]
    return "\n".join(part for part in parts if part)
