"""The model card of the registered version: published to its run and description, complete,
and rendered by a real browser (Debian's headless chromium) with every image loaded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import escape
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from eyecatcher.pipelines.model_card.nodes import (
    ModelCardInputError,
    publish_model_card,
    render_model_card,
)

pytestmark = pytest.mark.slow

MODEL = "eyecatcher-moderation"


def _report(project: Path) -> dict:
    return json.loads((project / "data" / "08_reporting" / "registration_report.json").read_text())


def test_the_champion_carries_its_card_heatmaps_and_a_description(demo_run: Path) -> None:
    report = _report(demo_run)
    assert report["outcome"] == "registered" and report["version"] == "1"
    client = MlflowClient()
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == "1"
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "model_card")}
    assert artifacts == {"model_card/model_card.html"}
    candidate = report["candidate"]
    heatmaps = [
        a.path
        for a in client.list_artifacts(version.run_id, f"{candidate}/explanations")
        if a.path.endswith(".png")
    ]
    assert len(heatmaps) >= 3, heatmaps
    description = version.description
    assert "DEMO MODEL" in description and candidate in description
    assert report["gate"]["summary"] in description
    assert "Operating point: review when 1 - p(safe) >" in description
    publication = json.loads(
        (demo_run / "data" / "08_reporting" / "model_card_publication.json").read_text()
    )
    assert publication["published"] is True
    assert publication["url"] in description
    assert f"/runs/{version.run_id}/artifacts/model_card/model_card.html" in publication["url"]
    # The logged card is the local one, byte for byte.
    logged = Path(client.download_artifacts(version.run_id, "model_card/model_card.html"))
    local = demo_run / "data" / "08_reporting" / "model_card.html"
    assert logged.read_text() == local.read_text()


def test_the_card_is_self_contained_and_says_what_a_reviewer_needs(demo_run: Path) -> None:
    html = (demo_run / "data" / "08_reporting" / "model_card.html").read_text()
    report = _report(demo_run)
    # No network: no external URL is fetched, every image is inline.
    sources = re.findall(r"src='([^']*)'", html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(href|src)=['\"]https?:", html) and "<script" not in html
    explanations = json.loads(
        (
            demo_run / "data" / "08_reporting" / report["candidate"] / "explanations_index.json"
        ).read_text()
    )
    n_heatmaps = len(explanations["examples"])
    assert len(sources) == 4 + n_heatmaps  # confusion matrix, ROC, PR, training + gallery
    for needle in (
        f"Model card: {MODEL} v1",
        "Demo model: random backbone weights",
        "The data it saw",
        "Labels from",
        "95% Wilson interval",
        "An image is sent to review when its unsafe score",
        "rate at the operating point",
        "Quantization trade-off",
        "Chosen precision",
        report["gate"]["summary"],
        report["run_id"],
        *[str(v) for v in report.get("fingerprints", {}).values()],
        "Known limitations",
        "Grad-CAM",
    ):
        assert escape(needle, quote=False) in html, needle


def test_chromium_renders_the_card_with_every_image_loaded(demo_run: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    html = (demo_run / "data" / "08_reporting" / "model_card.html").read_text()
    # The card has no script; this copy adds one that reports, after load, whether each image
    # decoded (naturalWidth > 0), so the browser itself says what loaded.
    probe = (
        "<script>window.addEventListener('load', () => { const imgs = [...document.images];"
        "document.title = 'IMAGES ' + imgs.length + ' LOADED ' +"
        " imgs.filter(i => i.complete && i.naturalWidth > 0).length; });</script>"
    )
    page = tmp_path / "card.html"
    page.write_text(html.replace("</body>", probe + "</body>"))
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions"]
    dom = subprocess.run(
        [*common, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    counts = re.search(r"<title>IMAGES (\d+) LOADED (\d+)</title>", dom)
    assert counts is not None, dom[:500]
    assert int(counts[1]) >= 5 and counts[1] == counts[2]
    screenshot = tmp_path / "card.png"
    subprocess.run(
        [*common, f"--screenshot={screenshot}", "--window-size=1200,2400", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=float)
    assert pixels.std() > 10  # text, tables and figures, not a blank page


def test_nothing_registered_leaves_the_registry_alone(demo_run: Path) -> None:
    client = MlflowClient()
    before = client.get_model_version(MODEL, "1")
    report = _report(demo_run) | {"outcome": "rejected", "version": None}
    record = publish_model_card("<html></html>", report, {"artifact_path": "elsewhere"})
    assert record == {
        "published": False,
        "reason": "nothing registered in this run (outcome: rejected)",
    }
    after = client.get_model_version(MODEL, "1")
    assert after.description == before.description
    assert not client.list_artifacts(before.run_id, "elsewhere")


def test_a_registered_candidate_without_its_reports_is_a_clear_error(demo_run: Path) -> None:
    report = _report(demo_run) | {"candidate": "convnext_tiny"}
    with pytest.raises(ModelCardInputError, match="candidate 'convnext_tiny' has no"):
        render_model_card(report, {}, {}, None, None)
    assert mlflow.get_tracking_uri().endswith("mlflow.db")
