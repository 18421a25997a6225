"""Serving: the champion behind ``mlflow models serve``, smoke-tested like a staging deploy.

The staging smoke test is the original design's "inference test on the staging endpoint":
start the real scoring server on 127.0.0.1, send held-out test images one per request, check
the answers equal the in-process model's, measure latency, check that malformed requests get
clear errors without taking the server down, and stop the server on every path out.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from eyecatcher.pipelines.serving.settings import ServingSettings
from eyecatcher.pipelines.serving.staging import (
    Observations,
    assemble,
    in_process_rows,
    judge,
    latency_figure,
    monitoring_metrics,
    new_report,
    read_smoke_images,
    send_probes,
    send_test_images,
    serve_in_foreground,
    server_for,
    sigterm_as_interrupt,
    smoke_metrics,
    start,
)
from eyecatcher.registry.resolve import resolve_champion
from eyecatcher.serving.in_process import InProcessScorer
from eyecatcher.serving.process import ServerStartError

logger = logging.getLogger(__name__)


class SmokeTestFailedError(RuntimeError):
    """The staging smoke test found a problem; the report says which."""


class _NothingToSend(Exception):
    """No test image could be read: starting a server would test nothing."""


def resolve_serving_champion(params: Mapping[str, Any]) -> dict[str, Any]:
    """The champion to serve, pinned to its version; the whole block is validated first.

    Validating here, the pipeline's first node, makes a misspelt key fail before the registry
    is asked or a server started, not after.

    Args:
        params: The ``serving`` parameter block (:class:`ServingSettings`).

    Returns:
        :func:`eyecatcher.registry.resolve.resolve_champion`'s record for
        ``models:/<model_name>@<alias>``.
    """
    settings = ServingSettings.parse(params)
    return resolve_champion({"model_name": settings.model_name, "alias": settings.alias})


def select_smoke_test_images(
    split_manifest: pd.DataFrame, split: str, max_images: int | None
) -> pd.DataFrame:
    """Pick the held-out images the smoke test sends, deterministically.

    Args:
        split_manifest: The ``split_manifest`` table (``sha256``, ``uri``, ``class``, ``split``).
        split: Which split to draw from (``test``: never seen in training or calibration).
        max_images: At most this many, spread over classes in turn (None: all of them).

    Returns:
        The chosen rows, ordered by class then sha256.

    Raises:
        ValueError: If the manifest lacks the needed columns or the split is empty.
    """
    missing = {"sha256", "uri", "class", "split"} - set(split_manifest.columns)
    if missing:
        raise ValueError(f"split_manifest lacks the columns {sorted(missing)}")
    chosen = split_manifest[split_manifest["split"] == split].sort_values(["class", "sha256"])
    if chosen.empty:
        raise ValueError(
            f"split_manifest has no '{split}' images to smoke-test with; run the splitting "
            "pipeline first."
        )
    if max_images is not None and len(chosen) > max_images:
        # Round-robin over classes so a small budget still covers every class.
        chosen = chosen.assign(_rank=chosen.groupby("class").cumcount())
        chosen = chosen.sort_values(["_rank", "class", "sha256"]).head(max_images)
        chosen = chosen.drop(columns="_rank").sort_values(["class", "sha256"])
    return chosen.reset_index(drop=True)


def staging_smoke_test(
    champion: Mapping[str, Any], split_manifest: pd.DataFrame, params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], Figure, dict[str, Any]]:
    """Start the scoring server, smoke-test it, stop it (or keep serving in foreground mode).

    Args:
        champion: Output of :func:`eyecatcher.registry.resolve.resolve_champion`.
        split_manifest: The split table; images of ``smoke_test.split`` are sent.
        params: The ``serving`` parameter block (:class:`ServingSettings`; unknown keys are
            refused before anything is read or started).

    Returns:
        The report (also the reason when the test fails), metrics for MLflow, a latency
        histogram, and the champion's monitoring metrics on the test images (decision rates,
        unsafe-score distribution, error rate, latency p50/p95; ``monitoring.*`` in MLflow).
        A failed smoke test is *reported* here and raised by
        :func:`enforce_smoke_test`, so the report is saved before the run exits non-zero.
    """
    settings = ServingSettings.parse(params)
    smoke = settings.smoke_test
    split = smoke.split
    selected = select_smoke_test_images(split_manifest, split, smoke.max_images)
    ids, images, unreadable = read_smoke_images(selected, settings.storage_options)
    for item in unreadable:
        logger.warning("Smoke-test image %s could not be read: %s", item["uri"], item["error"])
    report = new_report(champion, split, ids, unreadable)
    # The in-process reference: the same registered version, loaded the way users load it.
    local_model = InProcessScorer(champion["model_uri"])
    local_rows = in_process_rows(local_model, ids, images)
    seen = Observations()
    server_log = _serve_and_send(
        champion,
        settings,
        report,
        seen,
        ids=ids,
        images=images,
        local_rows=local_rows,
        local_model=local_model,
        n_selected=len(selected),
    )
    judge(assemble(report, seen), smoke, len(selected))
    if not report["passed"]:
        report["server_log_tail"] = server_log
    summary = report["latency_ms"]
    logger.info(
        "Smoke test %s: %d images, %d errors, %d mismatches, latency p50 %.1f ms, p95 %.1f ms",
        "PASSED" if report["passed"] else "FAILED",
        report["n_images"],
        report["n_errors"],
        report["n_mismatches"],
        summary["p50_ms"],
        summary["p95_ms"],
    )
    title = f"{champion['name']} v{champion['version']} served, batch 1"
    return (
        report,
        smoke_metrics(report, seen),
        latency_figure(seen.latencies, summary, title),
        monitoring_metrics(seen),
    )


def _serve_and_send(
    champion: Mapping[str, Any],
    settings: ServingSettings,
    report: dict[str, Any],
    seen: Observations,
    *,
    ids: list[str],
    images: list[bytes],
    local_rows: list[dict[str, Any]],
    local_model: InProcessScorer,
    n_selected: int,
) -> str:
    """Start the server, send the images and probes, stop it on every path; its log tail.

    Failures are recorded in ``report`` (not raised) so that the report is always saved.
    """
    smoke = settings.smoke_test
    timeout_s = settings.client_timeout_s
    log_dir = tempfile.mkdtemp(prefix="eyecatcher-serve-")
    server = server_for(champion, settings, log_dir)
    with sigterm_as_interrupt():
        try:
            if not ids:
                raise _NothingToSend
            start(server, report, settings.startup_timeout_s)
            send_test_images(
                server.url,
                ids,
                images,
                local_rows,
                seen,
                tolerance=smoke.tolerance,
                timeout_s=timeout_s,
            )
            if smoke.bad_request_probes:
                send_probes(
                    server.url,
                    seen,
                    timeout_s,
                    max_image_bytes=smoke.max_image_bytes or local_model.max_image_bytes,
                    max_rows=local_model.max_rows,
                )
            report["served_until"] = None
            if settings.foreground:
                interim = judge(assemble(dict(report), seen), smoke, n_selected)
                report["served_until"] = serve_in_foreground(server, interim)
        except _NothingToSend:
            logger.error("No readable test image: the scoring server was not started")
        except ServerStartError as exc:
            # Reported (with the server's own log) rather than raised, so the report is saved;
            # enforce_smoke_test then fails the run.
            report["failures"].append(str(exc))
            logger.error("%s", exc)
        except KeyboardInterrupt:
            report["failures"].append("interrupted before the smoke test finished")
            logger.warning("Interrupted: stopping the scoring server")
        except Exception as exc:  # recorded as a failure so the report still gets saved
            report["failures"].append(f"unexpected error: {type(exc).__name__}: {exc}")
            logger.exception("The smoke test stopped on an unexpected error")
        finally:
            server.stop()
            # MLflow's CLI prints a traceback when its uvicorn is stopped by SIGTERM: that is
            # our stop, not a failure, so the log goes into the report only when one happened.
            server_log = server.log_tail(4000)
            shutil.rmtree(log_dir, ignore_errors=True)
    return server_log


def enforce_smoke_test(report: Mapping[str, Any]) -> None:
    """Fail the run (non-zero exit) when the saved smoke-test report did not pass.

    Args:
        report: The report written by :func:`staging_smoke_test`.

    Raises:
        SmokeTestFailedError: Listing every failure, when ``report["passed"]`` is false.
    """
    if not report["passed"]:
        raise SmokeTestFailedError(
            f"Staging smoke test of {report['model_uri']} FAILED: "
            + "; ".join(report["failures"])
            + " (full report in data/08_reporting/serving_smoke_test.json)"
        )
    logger.info(
        "Staging smoke test of %s passed: p50 %.1f ms, p95 %.1f ms over %d images",
        report["model_uri"],
        report["latency_ms"]["p50_ms"],
        report["latency_ms"]["p95_ms"],
        report["n_images"],
    )
