"""The steps of the staging smoke test, each a small function the node calls in turn.

See :func:`eyecatcher.pipelines.serving.nodes.staging_smoke_test` for the recipe and
``docs/serving.md`` for what each step checks.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import requests
from matplotlib.figure import Figure

from eyecatcher.monitoring.run_metrics import scoring_run_metrics
from eyecatcher.pipelines.serving.settings import ServingSettings, SmokeTestSettings
from eyecatcher.progress import progress_bar
from eyecatcher.redaction import redact_uri
from eyecatcher.serving.client import (
    compare_predictions,
    latency_summary,
    normalise_prediction,
    post_invocations,
    prediction_records,
    request_body,
    served_rows,
)
from eyecatcher.serving.in_process import InProcessScorer
from eyecatcher.serving.probes import bad_request_probes, good_request_works, run_probe, sample_jpeg
from eyecatcher.serving.process import ModelServer
from eyecatcher.storage import read_bytes

logger = logging.getLogger(__name__)

#: Rows per in-process reference request (well under any served model's ``max_rows``).
IN_PROCESS_CHUNK = 16


@dataclass
class Observations:
    """What the smoke test saw, request by request."""

    latencies: list[float] = field(default_factory=list)
    request_errors: list[dict[str, Any]] = field(default_factory=list)
    row_errors: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    #: One row per test image sent: the served answer, or the request's error.
    answers: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so `finally` blocks stop the server on `kill`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def new_report(
    champion: Mapping[str, Any], split: str, ids: list[str], unreadable: list[dict[str, Any]]
) -> dict[str, Any]:
    """The report's identity fields, before anything is sent."""
    return {
        "model_name": champion["name"],
        "model_alias": champion["alias"],
        "model_version": champion["version"],
        "model_uri": champion["model_uri"],
        "run_id": champion["run_id"],
        # Reports are shared and logged to MLflow: never with a `user:password@` in a URI.
        "tracking_uri": redact_uri(champion["tracking_uri"]),
        "split": split,
        "n_images": len(ids),
        "unreadable_images": unreadable,
        "failures": [],
    }


def server_for(champion: Mapping[str, Any], settings: ServingSettings, log_dir: str) -> ModelServer:
    """The (not yet started) scoring server for the pinned champion version."""
    env = dict(settings.server_env)
    registry_uri = champion.get("registry_uri")
    if registry_uri and registry_uri != champion["tracking_uri"]:
        env.setdefault("MLFLOW_REGISTRY_URI", str(registry_uri))
    return ModelServer(
        champion["model_uri"],
        tracking_uri=champion["tracking_uri"],
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        request_timeout_s=settings.server_request_timeout_s,
        extra_env=env,
        log_dir=log_dir,
    )


def start(server: ModelServer, report: dict[str, Any], startup_timeout_s: float) -> None:
    """Start the server, wait for ``/ping`` and send one warm-up request (not a sample)."""
    server.start()
    report["server_url"] = server.url
    report["server_pid"] = server.pid
    report["workers"] = server.workers
    report["startup_s"] = round(server.wait_until_ready(startup_timeout_s), 2)
    logger.info("Scoring server ready at %s in %.1f s", server.url, report["startup_s"])
    # The first call pays lazy imports.
    post_invocations(server.url, request_body([sample_jpeg()]), timeout_s=startup_timeout_s)


def read_smoke_images(
    images: pd.DataFrame, storage_options: Mapping[str, Any] | None
) -> tuple[list[str], list[bytes], list[dict[str, Any]]]:
    """The selected images' bytes by sha256, and the ones that could not be read."""
    ids, encoded, unreadable = [], [], []
    for row in images.itertuples(index=False):
        try:
            data = read_bytes(row.uri, storage_options)
        except (OSError, ValueError) as exc:
            unreadable.append({"id": row.sha256, "uri": row.uri, "error": repr(exc)})
            continue
        ids.append(str(row.sha256))
        encoded.append(data)
    return ids, encoded, unreadable


def in_process_rows(
    scorer: InProcessScorer, ids: list[str], images: list[bytes]
) -> list[dict[str, Any]]:
    """The in-process answers, in requests no larger than the served model's row limit."""
    if not ids:
        return []
    answers = scorer.score_bytes(images, ids, chunk=IN_PROCESS_CHUNK)
    return [normalise_prediction(r) for r in prediction_records(answers)]


def send_test_images(
    url: str,
    ids: list[str],
    images: list[bytes],
    local_rows: list[dict[str, Any]],
    seen: Observations,
    *,
    tolerance: float,
    timeout_s: float,
) -> None:
    """One request per test image; record latency, errors and differences from in-process."""
    for position, (image_id, image) in enumerate(
        progress_bar(list(zip(ids, images, strict=True)), desc="smoke test", unit="request")
    ):
        try:
            status, text, elapsed_ms = post_invocations(
                url, request_body([image], ids=[image_id]), timeout_s=timeout_s
            )
        except requests.RequestException as exc:
            seen.request_errors.append({"id": image_id, "status": None, "error": repr(exc)})
            seen.answers.append({"id": image_id, "error": repr(exc)})
            continue
        if status != 200:
            seen.request_errors.append({"id": image_id, "status": status, "error": text[:500]})
            seen.answers.append({"id": image_id, "error": f"HTTP {status}"})
            continue
        seen.latencies.append(elapsed_ms)
        served = normalise_prediction(served_rows(text)[0])
        seen.answers.append({**served, "id": image_id})
        if served["error"] is not None:
            seen.row_errors.append({"id": image_id, "error": served["error"]})
        problems = compare_predictions(served, local_rows[position], tolerance)
        if problems:
            seen.mismatches.append({"id": image_id, "problems": problems})


def send_probes(
    url: str,
    seen: Observations,
    timeout_s: float,
    *,
    max_image_bytes: int | None,
    max_rows: int | None,
) -> None:
    """Every malformed request, each followed by a good one (the point of the probe)."""
    for probe in bad_request_probes(max_image_bytes, max_rows):
        result = run_probe(url, probe, timeout_s)
        result["server_alive_after"] = good_request_works(url, timeout_s)
        seen.probes.append(result)


def assemble(report: dict[str, Any], seen: Observations) -> dict[str, Any]:
    """Add the counts, latency figures and examples to ``report`` (in place) and return it."""
    report.update(
        {
            "latency_ms": latency_summary(seen.latencies),
            "n_ok": len(seen.latencies) - len(seen.row_errors),
            "n_request_errors": len(seen.request_errors),
            "n_row_errors": len(seen.row_errors),
            "n_errors": len(seen.request_errors)
            + len(seen.row_errors)
            + len(report["unreadable_images"]),
            "n_mismatches": len(seen.mismatches),
            "request_errors": seen.request_errors[:20],
            "row_errors": seen.row_errors[:20],
            "mismatches": seen.mismatches[:20],
            "bad_request_probes": seen.probes,
        }
    )
    return report


def judge(report: dict[str, Any], smoke: SmokeTestSettings, n_selected: int) -> dict[str, Any]:
    """List every failure in ``report`` and set ``passed`` (in place); return the report."""
    failures = report["failures"]
    min_images = smoke.min_images
    if report["n_images"] < min_images:
        failures.append(f"only {report['n_images']} readable test images (< {min_images})")
    if report.get("startup_s") is None and not any("mlflow models serve" in f for f in failures):
        failures.append("the scoring server did not start")
    if report["n_request_errors"]:
        failures.append(f"{report['n_request_errors']} requests failed at the HTTP level")
    max_errors = smoke.max_errors
    if report["n_errors"] > max_errors:
        failures.append(f"{report['n_errors']} errors (> {max_errors} allowed)")
    if report["n_mismatches"]:
        failures.append(f"{report['n_mismatches']} predictions differ from the in-process model's")
    for probe in report["bad_request_probes"]:
        if not probe["handled"]:
            failures.append(f"bad request '{probe['name']}' was not handled: {probe['answer']}")
        if not probe["server_alive_after"]:
            failures.append(f"a good request failed after the bad request '{probe['name']}'")
    slo = smoke.max_p95_ms
    p95 = report["latency_ms"]["p95_ms"]
    if slo is not None and not math.isnan(p95) and p95 > slo:
        failures.append(f"latency p95 {p95:.1f} ms > {slo:.1f} ms")
    report["n_selected"] = n_selected
    report["passed"] = not failures
    return report


def serve_in_foreground(server: ModelServer, interim: Mapping[str, Any]) -> str:
    """Keep a server that passed serving until Ctrl-C/SIGTERM; say how serving ended."""
    if not interim["passed"]:
        logger.error("Not serving in the foreground: %s", "; ".join(interim["failures"]))
        return "not served: smoke test failed"
    try:
        # Logged inside the try: a Ctrl-C that lands while the message is being written is
        # still a clean stop of a server that passed its smoke test.
        logger.info(
            "Serving %s at %s (foreground mode). Press Ctrl-C to stop.",
            interim["model_uri"],
            server.url,
        )
        while server.is_running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        logger.info("Interrupted: stopping the scoring server")
        return "interrupted"
    logger.error("The scoring server exited on its own:\n%s", server.log_tail())
    return "server exited"


def smoke_metrics(report: Mapping[str, Any], seen: Observations) -> dict[str, Any]:
    """The MLflow metrics of a finished smoke test (NaN figures are left out)."""
    summary = report["latency_ms"]
    metrics = {
        "latency_p50_ms": summary["p50_ms"],
        "latency_p95_ms": summary["p95_ms"],
        "latency_mean_ms": summary["mean_ms"],
        "n_images": float(report["n_images"]),
        "n_errors": float(report["n_errors"]),
        "n_mismatches": float(report["n_mismatches"]),
        "probes_handled": float(sum(p["handled"] and p["server_alive_after"] for p in seen.probes)),
        "passed": float(report["passed"]),
    }
    return {k: {"value": v, "step": 0} for k, v in metrics.items() if not math.isnan(v)}


def monitoring_metrics(seen: Observations) -> dict[str, Any]:
    """The champion's behaviour on the test images, as ``monitoring.*`` metrics for MLflow.

    The same numbers every scoring run records (:func:`scoring_run_metrics`): decision rates,
    the unsafe-score distribution, the error rate (failed requests included) and latency
    p50/p95 over the answered requests. The bad-request probes are not scored images and are
    left out.
    """
    verdicts = pd.DataFrame(
        seen.answers, columns=["id", "class", "unsafe_score", "decision", "error"]
    )
    values = scoring_run_metrics(verdicts, seen.latencies)
    return {k: {"value": v, "step": 0} for k, v in values.items() if math.isfinite(v)}


def latency_figure(latencies_ms: list[float], summary: Mapping[str, float], title: str) -> Figure:
    # A bare Figure (no pyplot): no GUI backend, no global figure registry to leak into.
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    if latencies_ms:
        axis.hist(latencies_ms, bins=min(30, max(5, len(latencies_ms) // 2)), color="#4c72b0")
        for key, colour in (("p50_ms", "#2ca02c"), ("p95_ms", "#d62728")):
            axis.axvline(
                summary[key],
                color=colour,
                linestyle="--",
                label=f"{key[:3]} = {summary[key]:.1f} ms",
            )
        axis.legend()
    else:
        axis.text(0.5, 0.5, "no successful requests", ha="center", va="center")
    axis.set_xlabel("request latency, batch 1 (ms)")
    axis.set_ylabel("requests")
    axis.set_title(title)
    figure.tight_layout()
    return figure
