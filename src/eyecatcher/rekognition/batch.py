"""Sending many images: bounded concurrency, a progress bar with cost, and durable answers.

Each worker writes its own answer to the cache the moment it arrives, so a Ctrl-C or a crash
in the main thread can never drop an answer that was already paid for. On any interruption the
queue of unsent images is cancelled and the requests already in flight are allowed to finish
(and be cached) before the exception propagates.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions

from eyecatcher.progress import progress_bar
from eyecatcher.rekognition.cache import ResponseCache
from eyecatcher.rekognition.client import (
    CREDENTIAL_ERROR_CODES,
    IMAGE_ERROR_CODES,
    RekognitionCredentialsError,
    error_code,
    error_message,
)
from eyecatcher.rekognition.payload import PayloadError, PayloadLimits, build_payload

logger = logging.getLogger(__name__)


class LabellingAbortedError(RuntimeError):
    """Too many consecutive failures: the service or the configuration is broken."""


@dataclass(frozen=True)
class ImageTask:
    """One image to label.

    Attributes:
        sha256: The image's identity.
        uri: Where to read it (local path or ``s3://``).
        image_format: Pillow format from ingestion.
        size_bytes: File size from ingestion.
        etag: The S3 object's ETag from ingestion, when it recorded one.
    """

    sha256: str
    uri: str
    image_format: str | None = None
    size_bytes: int | None = None
    etag: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What happened to one image.

    Attributes:
        task: The image.
        status: ``answered``, ``image_error`` (the API rejected this image; cached),
            ``prepare_error`` (could not build a request; nothing sent) or ``failed`` (retries
            exhausted or an unexpected error; not cached, a re-run retries it).
        response: The API's answer when ``answered``.
        error_code: The API error code or ``prepare:<reason>``.
        error_message: Human-readable detail.
        payload_kind: ``bytes`` or ``s3object`` when a request was built.
        prepared: ``as_is``, ``converted`` or ``downscaled`` when a request was built.
        converted_from: Why the original was converted (``JPEG CMYK``, ``WEBP``, ...).
    """

    task: ImageTask
    status: str
    response: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    payload_kind: str | None = None
    prepared: str | None = None
    converted_from: str | None = None


@dataclass
class BatchReport:
    """The result of :func:`send_images`.

    Attributes:
        outcomes: One per image, in completion order.
        n_requests: Requests that reached the API (answers and API errors).
        cost_usd: Estimated cost of the answered requests.
        elapsed_s: Wall time.
        prepared_counts: How many payloads were sent as-is, converted or downscaled.
    """

    outcomes: list[Outcome] = field(default_factory=list)
    n_requests: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    prepared_counts: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class RequestSettings:
    """The settings of every request in a batch.

    Attributes:
        min_confidence: ``MinConfidence``.
        project_version: Custom-moderation adapter ARN, or ``None``.
        price_per_image_usd: Price of one answered image, for the running estimate.
        limits: Payload limits.
        storage_options: fsspec options for reading remote images (never credentials).
    """

    min_confidence: float = 50.0
    project_version: str | None = None
    price_per_image_usd: float = 0.001
    limits: PayloadLimits = field(default_factory=PayloadLimits)
    storage_options: dict[str, Any] = field(default_factory=dict)


def _label_one(
    task: ImageTask, client: Any, cache: ResponseCache, settings: RequestSettings
) -> Outcome:
    try:
        payload = build_payload(
            task.uri,
            task.image_format,
            task.size_bytes,
            settings.limits,
            settings.storage_options,
            sha256=task.sha256,
            etag=task.etag,
        )
    except PayloadError as exc:
        return Outcome(
            task, "prepare_error", error_code=f"prepare:{exc.reason}", error_message=str(exc)
        )
    except Exception as exc:
        # One odd image (a decoder limit, an s3fs NoCredentialsError) must not stop the batch
        # on every re-run: it is this image's error, and nothing was sent for it.
        return Outcome(
            task,
            "prepare_error",
            error_code="prepare:error",
            error_message=f"{type(exc).__name__}: {exc}",
        )
    request: dict[str, Any] = {"Image": payload.image, "MinConfidence": settings.min_confidence}
    if settings.project_version:
        request["ProjectVersion"] = settings.project_version
    base = {
        "sha256": task.sha256,
        "min_confidence": settings.min_confidence,
        "project_version": settings.project_version,
        "source": "rekognition",
        "uri": task.uri,
        "request": {
            "image": payload.kind,
            "prepared": payload.prepared,
            "converted_from": payload.converted_from,
            # Sent under the format check: an InvalidImageFormatException is then final.
            "format_checked": True,
            **({"s3_object": payload.s3_object} if payload.s3_object else {}),
        },
    }
    kind = {
        "payload_kind": payload.kind,
        "prepared": payload.prepared,
        "converted_from": payload.converted_from,
    }
    try:
        response = client.detect_moderation_labels(**request)
    except botocore.exceptions.ClientError as exc:
        code, message = error_code(exc), error_message(exc)
        if code in CREDENTIAL_ERROR_CODES:
            raise RekognitionCredentialsError(
                f"Rekognition rejected the credentials ({code}: {message}); stopping. Every "
                "answer received so far is in the cache."
            ) from exc
        if code in IMAGE_ERROR_CODES:
            cache.append({**base, "error": {"code": code, "message": message}})
            return Outcome(task, "image_error", error_code=code, error_message=message, **kind)
        return Outcome(task, "failed", error_code=code, error_message=message, **kind)
    except botocore.exceptions.BotoCoreError as exc:
        # Connection errors and timeouts, after botocore's own retries.
        return Outcome(
            task, "failed", error_code=type(exc).__name__, error_message=str(exc), **kind
        )
    cache.append({**base, "response": response})
    return Outcome(task, "answered", response=response, **kind)


def send_images(
    tasks: Sequence[ImageTask],
    *,
    client: Any,
    cache: ResponseCache,
    settings: RequestSettings,
    workers: int = 8,
    max_consecutive_failures: int = 25,
) -> BatchReport:
    """Label ``tasks`` with at most ``workers`` requests in flight.

    Args:
        tasks: The images to send (already known to be missing from the cache).
        client: A Rekognition client (thread-safe; see
            :meth:`~eyecatcher.rekognition.client.RekognitionEndpoint.client`).
        cache: Where each answer is written as it arrives; its write lock is held throughout.
        settings: Request settings and the price for the running cost estimate.
        workers: Maximum concurrent requests.
        max_consecutive_failures: Stop after this many failures in a row (any status but
            ``answered``): a broken configuration should not be paid for image by image.

    Returns:
        Every outcome and the totals.

    Raises:
        RekognitionCredentialsError: When the API rejects the credentials.
        LabellingAbortedError: After ``max_consecutive_failures`` failures in a row.
        KeyboardInterrupt: Propagated after in-flight requests finish and are cached.
        CacheLockedError: When another process is writing the cache (nothing is sent).
        CacheWriteError: When the cache cannot be written: sending stops, the answers in
            flight are spilled to a side file that the next load merges.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    report = BatchReport()
    started = time.perf_counter()
    queue: Iterator[ImageTask] = iter(tasks)
    pending: set[Future[Outcome]] = set()
    consecutive_failures = 0
    errors = 0

    def submit_more(pool: ThreadPoolExecutor) -> None:
        # A small window instead of all futures at once keeps memory flat for 100k images and
        # keeps the work that an interruption has to cancel small.
        while len(pending) < workers * 2:
            task = next(queue, None)
            if task is None:
                return
            pending.add(pool.submit(_label_one, task, client, cache, settings))

    with (
        cache.exclusive(),
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rekognition") as pool,
        progress_bar(total=len(tasks), unit="img", desc="Rekognition", mininterval=0.5) as bar,
    ):
        try:
            submit_more(pool)
            while pending:
                done, still = wait(pending, return_when=FIRST_COMPLETED)
                pending.clear()
                pending.update(still)
                for future in done:
                    if _tally(report, future.result(), settings):
                        consecutive_failures = 0
                    else:
                        errors += 1
                        consecutive_failures += 1
                    bar.update(1)
                    bar.set_postfix(cost=f"${report.cost_usd:.3f}", errors=errors, refresh=False)
                _stop_after_a_failure_streak(report, consecutive_failures, max_consecutive_failures)
                submit_more(pool)
        except BaseException:
            # Unsent images are cancelled; requests in flight finish and cache themselves.
            for future in pending:
                future.cancel()
            wait(pending)
            raise
    report.elapsed_s = time.perf_counter() - started
    return report


def _tally(report: BatchReport, outcome: Outcome, settings: RequestSettings) -> bool:
    """Add ``outcome`` to ``report`` (a failure is logged); whether it was answered."""
    report.outcomes.append(outcome)
    if outcome.status in {"answered", "image_error"}:
        report.n_requests += 1
    if outcome.prepared:
        report.prepared_counts[outcome.prepared] += 1
    if outcome.status == "answered":
        report.cost_usd += settings.price_per_image_usd
        return True
    logger.warning(
        "%s (%s): %s %s",
        outcome.task.uri,
        outcome.task.sha256[:12],
        outcome.error_code,
        outcome.error_message,
    )
    return False


def _stop_after_a_failure_streak(report: BatchReport, streak: int, limit: int) -> None:
    """Raise :class:`LabellingAbortedError` once ``streak`` failures in a row reach ``limit``."""
    if streak >= limit:
        raise LabellingAbortedError(
            f"{streak} failures in a row (last: "
            f"{report.outcomes[-1].error_code}); stopping so that a broken setup is "
            "not paid for image by image. Every answer received so far is cached."
        )
