"""Serving: the champion behind ``mlflow models serve``, smoke-tested like a staging deploy.

The staging smoke test is the original design's "inference test on the staging endpoint":
start the real scoring server on 127.0.0.1, send held-out test images one per request, check
the answers equal the in-process model's, measure latency, check that malformed requests get
clear errors without taking the server down, and stop the server on every path out.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pandas as pd
import requests
from matplotlib.figure import Figure
from tqdm.auto import tqdm

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
from eyecatcher.serving.probes import bad_request_probes, good_request_works, run_probe, sample_jpeg
from eyecatcher.serving.process import ModelServer, ServerStartError
from eyecatcher.serving.registry import served_image_limit
from eyecatcher.serving_model.contract import encode_image

logger = logging.getLogger(__name__)

#: Rows per in-process reference request (well under any served model's ``max_rows``).
IN_PROCESS_CHUNK = 16


class SmokeTestFailedError(RuntimeError):
    """The staging smoke test found a problem; the report says which."""


class _NothingToSend(Exception):
    """No test image could be read: starting a server would test nothing."""


# -- test images ------------------------------------------------------------------------------


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


def read_image_bytes(uri: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """Read one image from a local path (relative to the project root) or an ``s3://`` URI."""
    with fsspec.open(uri, "rb", **dict(storage_options or {})) as handle:
        return handle.read()


# -- the smoke test ---------------------------------------------------------------------------


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
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


def _server_env(champion: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, str]:
    env = {str(k): str(v) for k, v in (params.get("server_env") or {}).items()}
    registry_uri = champion.get("registry_uri")
    if registry_uri and registry_uri != champion["tracking_uri"]:
        env.setdefault("MLFLOW_REGISTRY_URI", str(registry_uri))
    return env


def _smoke_images(
    images: pd.DataFrame, storage_options: Mapping[str, Any] | None
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    ids, encoded, unreadable = [], [], []
    for row in images.itertuples(index=False):
        try:
            data = read_image_bytes(row.uri, storage_options)
        except (OSError, ValueError) as exc:
            unreadable.append({"id": row.sha256, "uri": row.uri, "error": repr(exc)})
            continue
        ids.append(str(row.sha256))
        encoded.append(data)
    return ids, encoded, unreadable


def _in_process_rows(model: Any, ids: list[str], images: list[bytes]) -> list[dict[str, Any]]:
    """The in-process answers, in requests no larger than the served model's row limit."""
    rows: list[dict[str, Any]] = []
    for start in range(0, len(ids), IN_PROCESS_CHUNK):
        frame = pd.DataFrame(
            {
                "id": ids[start : start + IN_PROCESS_CHUNK],
                "image": [encode_image(i) for i in images[start : start + IN_PROCESS_CHUNK]],
            }
        )
        rows.extend(normalise_prediction(r) for r in prediction_records(model.predict(frame)))
    return rows


def _latency_figure(latencies_ms: list[float], summary: Mapping[str, float], title: str) -> Figure:
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


def staging_smoke_test(
    champion: Mapping[str, Any], split_manifest: pd.DataFrame, params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], Figure]:
    """Start the scoring server, smoke-test it, stop it (or keep serving in foreground mode).

    Args:
        champion: Output of :func:`resolve_champion`.
        split_manifest: The split table; images of ``smoke_test.split`` are sent.
        params: The ``serving`` parameter block (see ``conf/base/parameters_serving.yml``).

    Returns:
        The report (also the reason when the test fails), metrics for MLflow, and a latency
        histogram. A failed smoke test is *reported* here and raised by
        :func:`enforce_smoke_test`, so the report is saved before the run exits non-zero.
    """
    import mlflow.pyfunc

    smoke = dict(params.get("smoke_test", {}))
    tolerance = float(smoke.get("tolerance", 1e-4))
    timeout_s = float(params.get("client_timeout_s", 60))
    storage_options = params.get("storage_options") or {}
    images = select_smoke_test_images(
        split_manifest, smoke.get("split", "test"), smoke.get("max_images")
    )
    ids, encoded, unreadable = _smoke_images(images, storage_options)
    for item in unreadable:
        logger.warning("Smoke-test image %s could not be read: %s", item["uri"], item["error"])

    report: dict[str, Any] = {
        "model_name": champion["name"],
        "model_alias": champion["alias"],
        "model_version": champion["version"],
        "model_uri": champion["model_uri"],
        "run_id": champion["run_id"],
        # Reports are shared and logged to MLflow: never with a `user:password@` in a URI.
        "tracking_uri": redact_uri(champion["tracking_uri"]),
        "split": smoke.get("split", "test"),
        "n_images": len(ids),
        "unreadable_images": unreadable,
        "failures": [],
    }

    # The in-process reference: the same registered version, loaded the way users load it.
    local_model = mlflow.pyfunc.load_model(champion["model_uri"])
    local_rows = _in_process_rows(local_model, ids, encoded)

    log_dir = tempfile.mkdtemp(prefix="eyecatcher-serve-")
    server = ModelServer(
        champion["model_uri"],
        tracking_uri=champion["tracking_uri"],
        host=str(params.get("host", "127.0.0.1")),
        port=params.get("port"),
        workers=int(params.get("workers", 1)),
        request_timeout_s=int(params.get("server_request_timeout_s", 60)),
        extra_env=_server_env(champion, params),
        log_dir=log_dir,
    )
    seen = _Observations()
    with _sigterm_as_interrupt():
        try:
            if not ids:
                raise _NothingToSend
            server.start()
            report["server_url"] = server.url
            report["server_pid"] = server.pid
            report["workers"] = server.workers
            report["startup_s"] = round(
                server.wait_until_ready(float(params.get("startup_timeout_s", 300))), 2
            )
            logger.info("Scoring server ready at %s in %.1f s", server.url, report["startup_s"])
            # Warm-up request: the first call pays lazy imports; it is not a latency sample.
            post_invocations(
                server.url,
                request_body([sample_jpeg()]),
                timeout_s=timeout_s,
            )
            for position, (image_id, image) in enumerate(
                tqdm(list(zip(ids, encoded, strict=True)), desc="smoke test", unit="request")
            ):
                body = request_body([image], ids=[image_id])
                try:
                    status, text, elapsed_ms = post_invocations(
                        server.url, body, timeout_s=timeout_s
                    )
                except requests.RequestException as exc:
                    seen.request_errors.append({"id": image_id, "status": None, "error": repr(exc)})
                    continue
                if status != 200:
                    seen.request_errors.append(
                        {"id": image_id, "status": status, "error": text[:500]}
                    )
                    continue
                seen.latencies.append(elapsed_ms)
                served = normalise_prediction(served_rows(text)[0])
                if served["error"] is not None:
                    seen.row_errors.append({"id": image_id, "error": served["error"]})
                problems = compare_predictions(served, local_rows[position], tolerance)
                if problems:
                    seen.mismatches.append({"id": image_id, "problems": problems})
            if smoke.get("bad_request_probes", True):
                max_bytes = smoke.get("max_image_bytes") or served_image_limit(local_model)
                for probe in bad_request_probes(max_bytes):
                    result = run_probe(server.url, probe, timeout_s)
                    # The point of the probe: the server still answers a good request after it.
                    result["server_alive_after"] = good_request_works(server.url, timeout_s)
                    seen.probes.append(result)
            report["served_until"] = None
            if params.get("foreground", False):
                interim = _assemble(dict(report), seen)
                _judge(interim, smoke, len(images))
                report["served_until"] = _serve_in_foreground(server, interim)
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

    _assemble(report, seen)
    summary = report["latency_ms"]
    _judge(report, smoke, len(images))
    if not report["passed"]:
        report["server_log_tail"] = server_log
    logger.info(
        "Smoke test %s: %d images, %d errors, %d mismatches, latency p50 %.1f ms, p95 %.1f ms",
        "PASSED" if report["passed"] else "FAILED",
        report["n_images"],
        report["n_errors"],
        report["n_mismatches"],
        summary["p50_ms"],
        summary["p95_ms"],
    )
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
    metrics = {k: {"value": v, "step": 0} for k, v in metrics.items() if not math.isnan(v)}
    figure = _latency_figure(
        seen.latencies, summary, f"{champion['name']} v{champion['version']} served, batch 1"
    )
    return report, metrics, figure


@dataclass
class _Observations:
    """What the smoke test saw, request by request."""

    latencies: list[float] = field(default_factory=list)
    request_errors: list[dict[str, Any]] = field(default_factory=list)
    row_errors: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)


def _assemble(report: dict[str, Any], seen: _Observations) -> dict[str, Any]:
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


def _serve_in_foreground(server: ModelServer, interim: Mapping[str, Any]) -> str:
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


def _judge(report: dict[str, Any], smoke: Mapping[str, Any], n_selected: int) -> None:
    failures = report["failures"]
    min_images = int(smoke.get("min_images", 1))
    if report["n_images"] < min_images:
        failures.append(f"only {report['n_images']} readable test images (< {min_images})")
    if report.get("startup_s") is None and not any("mlflow models serve" in f for f in failures):
        failures.append("the scoring server did not start")
    if report["n_request_errors"]:
        failures.append(f"{report['n_request_errors']} requests failed at the HTTP level")
    max_errors = int(smoke.get("max_errors", 0))
    if report["n_errors"] > max_errors:
        failures.append(f"{report['n_errors']} errors (> {max_errors} allowed)")
    if report["n_mismatches"]:
        failures.append(f"{report['n_mismatches']} predictions differ from the in-process model's")
    for probe in report["bad_request_probes"]:
        if not probe["handled"]:
            failures.append(f"bad request '{probe['name']}' was not handled: {probe['answer']}")
        if not probe["server_alive_after"]:
            failures.append(f"a good request failed after the bad request '{probe['name']}'")
    slo = smoke.get("max_p95_ms")
    p95 = report["latency_ms"]["p95_ms"]
    if slo is not None and not math.isnan(p95) and p95 > float(slo):
        failures.append(f"latency p95 {p95:.1f} ms > {float(slo):.1f} ms")
    report["n_selected"] = n_selected
    report["passed"] = not failures


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
