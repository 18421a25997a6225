"""Labelling nodes: Rekognition answers (cached or fresh) → one training class per image."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from typing import Any

import matplotlib

matplotlib.use("Agg")  # nodes run headless (CI, servers)
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from eyecatcher.outcomes import DryRunDone
from eyecatcher.pipelines.labelling.label_sources import (
    merge_sources,
    rekognition_queue,
    source_counts,
)
from eyecatcher.pipelines.labelling.settings import LabellingSettings
from eyecatcher.rekognition.batch import BatchReport, ImageTask, RequestSettings, send_images
from eyecatcher.rekognition.cache import CachedAnswer, ResponseCache
from eyecatcher.rekognition.client import RekognitionCredentialsError, RekognitionEndpoint
from eyecatcher.rekognition.taxonomy import (
    TaxonomyMapping,
    UnknownModelVersionError,
    normalise_labels,
)

logger = logging.getLogger(__name__)

#: Columns of ``image_labels`` (docs/architecture.md).
IMAGE_LABELS_COLUMNS = [
    "sha256",
    "uri",
    "class",
    "included",
    "class_reason",
    "labels",
    "content_types",
    "moderation_model_version",
    "label_source",
    "error_code",
]

#: Columns of the intermediate ``rekognition_results`` table.
RESULTS_COLUMNS = [
    "sha256",
    "uri",
    "status",
    "response",
    "error_code",
    "label_source",
    "answer_min_confidence",
]

_LISTED = 20  # images named in an error message before "and N more"


class CacheMissError(RuntimeError):
    """Offline mode and some images have no cached answer."""


class LabellingDryRunError(DryRunDone):
    """A dry run stops the pipeline after printing its estimate; nothing was sent or written."""


class LabellingIncompleteError(RuntimeError):
    """Some images are still unlabelled after retries; a re-run sends only those."""


def metric_name(text: str) -> str:
    """Make a Rekognition label or class name usable in an MLflow metric name.

    MLflow accepts only alphanumerics, ``_ - . /``, spaces and colons, and real labels break that
    rule ("Drugs & Tobacco", "Blood & Gore"): logging them as they are fails the whole run
    after every answer has been paid for.

    Args:
        text: A label, class or reason name.

    Returns:
        The name with ``&`` spelled ``and`` and any other unsupported character as ``_``.
    """
    return re.sub(r"[^\w.\- ]", "_", str(text).replace("&", "and"))


def _name_images(rows: list[tuple[str, str]]) -> str:
    lines = [f"  {uri} (sha256 {sha[:16]}…)" for sha, uri in rows[:_LISTED]]
    if len(rows) > _LISTED:
        lines.append(f"  … and {len(rows) - _LISTED} more")
    return "\n".join(lines)


def _credentials_note(endpoint: RekognitionEndpoint) -> str:
    """Say whether a real run would find credentials (resolved locally, no AWS call)."""
    if endpoint.offline:
        return "Offline mode: a real run would fail on any uncached image."
    try:
        return f"Credentials: found ({endpoint.check_credentials()})."
    except RekognitionCredentialsError as exc:
        return f"Credentials: MISSING, a real run would stop here ({exc})"


def _check_index(image_index: pd.DataFrame) -> None:
    missing = {"sha256", "uri"} - set(image_index.columns)
    if missing:
        raise ValueError(f"image_index lacks columns {sorted(missing)} (see docs/architecture.md)")
    duplicated = image_index["sha256"][image_index["sha256"].duplicated()]
    if not duplicated.empty:
        raise ValueError(
            f"image_index has {duplicated.size} duplicated sha256 values, e.g. "
            f"{duplicated.iloc[0]}; ingestion must de-duplicate"
        )


def _optional(row: Any, name: str) -> Any:
    value = getattr(row, name, None)
    return None if value is None or pd.isna(value) else value


def _task(row: Any) -> ImageTask:
    size = _optional(row, "bytes")
    return ImageTask(
        str(row.sha256),
        str(row.uri),
        _optional(row, "format"),
        int(size) if size is not None else None,
        _optional(row, "etag"),
    )


def _cached_row(sha: str, uri: str, cached: CachedAnswer) -> dict[str, Any]:
    return {
        "sha256": sha,
        "uri": uri,
        "status": "answered" if cached.response is not None else "image_error",
        "response": json.dumps(cached.response) if cached.response is not None else None,
        "error_code": cached.error_code,
        "label_source": f"cache:{cached.record.get('source', 'unknown')}",
        "answer_min_confidence": cached.min_confidence,
    }


def _split_cached(
    image_index: pd.DataFrame,
    cache: ResponseCache,
    request: RequestSettings,
    settings: LabellingSettings,
) -> tuple[dict[str, dict[str, Any]], list[ImageTask], int]:
    """Rows answered by the cache, the images to send, and how many answers were cached at a
    higher ``MinConfidence`` (used as they are, or re-sent with ``resend_higher_min_confidence``).
    """
    resend = settings.resend_error_codes
    resend_higher = settings.resend_higher_min_confidence
    rows: dict[str, dict[str, Any]] = {}
    tasks: list[ImageTask] = []
    n_higher = 0
    for row in image_index.itertuples(index=False):
        sha, uri = str(row.sha256), str(row.uri)
        cached = cache.lookup(
            sha, request.min_confidence, request.project_version, resend, accept_higher=True
        )
        n_higher += bool(cached and cached.above_requested)
        if cached is None or (cached.above_requested and resend_higher):
            tasks.append(_task(row))
        else:
            rows[sha] = _cached_row(sha, uri, cached)
    return rows, tasks, n_higher


def request_moderation_labels(
    image_index: pd.DataFrame,
    response_cache: ResponseCache,
    rekognition_endpoint: RekognitionEndpoint,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Get a Rekognition answer for every indexed image, paying only for uncached ones.

    Images with a usable folder label are not asked about (``label_sources``). Cached answers
    (from earlier runs or the read-only seed) are reused; the rest are sent with
    bounded concurrency under the cache's inter-process lock, each answer appended to the cache
    the moment it arrives. Offline, a cache miss is an error naming the images. A dry run prints
    the count and estimated cost and stops without calling anything.

    Args:
        image_index: Ingestion's index (``sha256``, ``uri``, ``format``, ``bytes``, ...).
        response_cache: The paid-answer cache.
        rekognition_endpoint: Where to send requests, or the offline marker.
        params: The ``labelling`` parameter block.

    Returns:
        One row per image (``sha256``, ``uri``, ``status``, ``response`` as JSON with labels
        under ``min_confidence`` removed, ``error_code``, ``label_source``,
        ``answer_min_confidence``), and request statistics (counts, cost, throughput).

    Raises:
        CacheMissError: Offline with images missing from the cache.
        LabellingDryRunError: After printing a dry run's estimate.
        RekognitionCredentialsError: When credentials are missing or rejected.
        CacheLockedError: When another run is writing the cache (nothing was sent).
        CacheWriteError: When the cache could not be written (unwritten answers are spilled).
        LabellingIncompleteError: When images stay unanswered after retries (all answers that
            did arrive are cached; a re-run sends only the rest).
    """
    settings = LabellingSettings.parse(params)
    _check_index(image_index)
    # Images labelled by their folder are never paid for (labelling.label_sources).
    image_index = rekognition_queue(image_index, settings.label_sources)
    request = RequestSettings(
        min_confidence=settings.min_confidence,
        project_version=settings.project_version or None,
        price_per_image_usd=settings.price_per_image_usd,
        limits=settings.payload_limits,
        storage_options=dict(settings.storage_options),
    )
    rows, tasks, n_higher = _split_cached(image_index, response_cache, request, settings)
    _announce(
        tasks,
        request,
        settings,
        rekognition_endpoint,
        n_images=len(image_index),
        n_cached=len(rows),
        n_higher=n_higher,
    )
    stats = _initial_stats(len(image_index), len(rows), n_higher, len(tasks))
    if tasks:
        fresh, report = _send_uncached(
            image_index,
            tasks,
            response_cache=response_cache,
            rekognition_endpoint=rekognition_endpoint,
            request=request,
            settings=settings,
        )
        rows.update(fresh)
        stats["n_cached"] += len(fresh)
        rows.update(_sent_rows(report, request.min_confidence))
        stats.update(_report_stats(report))
        _raise_if_incomplete(report)
    ordered = [rows[str(sha)] for sha in image_index["sha256"]]
    return pd.DataFrame(ordered, columns=RESULTS_COLUMNS), stats


def _initial_stats(n_images: int, n_cached: int, n_higher: int, n_to_send: int) -> dict[str, float]:
    """Request statistics before anything is sent (nothing sent: zero requests and cost)."""
    return {
        "n_images": float(n_images),
        "n_cached": float(n_cached),
        "n_cached_above_min_confidence": float(n_higher),
        "n_to_send": float(n_to_send),
        "n_requests": 0.0,
        "estimated_cost_usd": 0.0,
        "images_per_s": 0.0,
        "n_converted": 0.0,
        "n_downscaled": 0.0,
    }


def _send_uncached(
    image_index: pd.DataFrame,
    tasks: list[ImageTask],
    *,
    response_cache: ResponseCache,
    rekognition_endpoint: RekognitionEndpoint,
    request: RequestSettings,
    settings: LabellingSettings,
) -> tuple[dict[str, dict[str, Any]], BatchReport]:
    """Send the uncached images under the cache's lock (the effect step; offline: refused).

    Returns:
        The rows another run answered while this one waited for the lock, and the send report.
    """
    if rekognition_endpoint.offline:
        raise CacheMissError(
            f"Offline mode: {len(tasks)} images have no cached Rekognition answer "
            f"(MinConfidence {request.min_confidence:g}) and offline mode never calls the "
            f"API:\n{_name_images([(t.sha256, t.uri) for t in tasks])}\n"
            "Label them with `kedro run --env aws --pipelines labelling`, or add their "
            "answers to the seed cache."
        )
    method = rekognition_endpoint.check_credentials()
    logger.info("AWS credentials resolved (%s); sending %d images", method, len(tasks))
    with response_cache.exclusive():
        # Another run may have answered some of these while we waited for nothing: the
        # lock refreshed the cache, so look again before paying.
        fresh, tasks, _ = _split_cached(
            image_index[image_index["sha256"].isin({t.sha256 for t in tasks})],
            response_cache,
            request,
            settings,
        )
        report = send_images(
            tasks,
            client=rekognition_endpoint.client(max_pool_connections=settings.workers),
            cache=response_cache,
            settings=request,
            workers=settings.workers,
            max_consecutive_failures=settings.max_consecutive_failures,
        )
    return fresh, report


def _announce(
    tasks: list[ImageTask],
    request: RequestSettings,
    settings: LabellingSettings,
    endpoint: RekognitionEndpoint,
    *,
    n_images: int,
    n_cached: int,
    n_higher: int,
) -> None:
    """Log what will be sent and what it costs; in a dry run, print it and stop."""
    price = request.price_per_image_usd
    estimate = len(tasks) * price
    logger.info(
        "Labelling %d images: %d answered from the cache, %d to send (estimated USD %.3f at "
        "USD %.4f per image)",
        n_images,
        n_cached,
        len(tasks),
        estimate,
        price,
    )
    higher = ""
    if n_higher:
        resend = settings.resend_higher_min_confidence
        higher = (
            f" {n_higher} cached answers were requested at a MinConfidence above "
            f"{request.min_confidence:g}: they cannot prove an image safe; "
            + (
                "they are re-sent (included above)."
                if resend
                else f"re-sending them would cost USD {n_higher * price:.3f} "
                "(labelling.resend_higher_min_confidence: true)."
            )
        )
        logger.warning(higher.strip())
    if settings.dry_run:
        message = (
            f"DRY RUN: {len(tasks)} of {n_images} images are not in the cache and would "
            f"be sent to Rekognition; estimated cost USD {estimate:.3f} (USD {price} per image, "
            f"MinConfidence {request.min_confidence:g}).{higher} Nothing was called; no answer, "
            f"no label written. {_credentials_note(endpoint)}"
        )
        print(message)  # the estimate is the product of a dry run: show it even without logging
        raise LabellingDryRunError(message)


def _sent_rows(report: BatchReport, min_confidence: float) -> dict[str, dict[str, Any]]:
    rows = {}
    for outcome in report.outcomes:
        if outcome.status == "failed":
            continue
        task = outcome.task
        rows[task.sha256] = {
            "sha256": task.sha256,
            "uri": task.uri,
            "status": outcome.status,
            "response": json.dumps(outcome.response) if outcome.response else None,
            "error_code": outcome.error_code,
            "label_source": "rekognition" if outcome.payload_kind else "none",
            "answer_min_confidence": min_confidence,
        }
    return rows


def _report_stats(report: BatchReport) -> dict[str, float]:
    stats = {
        "n_requests": float(report.n_requests),
        "estimated_cost_usd": round(report.cost_usd, 6),
        "images_per_s": report.n_requests / report.elapsed_s if report.elapsed_s else 0.0,
        "n_converted": float(report.prepared_counts.get("converted", 0)),
        "n_downscaled": float(report.prepared_counts.get("downscaled", 0)),
    }
    converted = Counter(o.converted_from for o in report.outcomes if o.converted_from)
    for reason, count in converted.items():
        stats[f"converted_from.{metric_name(reason)}"] = float(count)
    logger.info(
        "Rekognition: %d requests in %.1f s (%.1f images/s), estimated USD %.3f; converted: %s",
        report.n_requests,
        report.elapsed_s,
        stats["images_per_s"],
        report.cost_usd,
        dict(converted) or "none",
    )
    return stats


def _raise_if_incomplete(report: BatchReport) -> None:
    failed = [o for o in report.outcomes if o.status == "failed"]
    if failed:
        codes = Counter(o.error_code for o in failed)
        raise LabellingIncompleteError(
            f"{len(failed)} images are still unlabelled after botocore's retries "
            f"({dict(codes)}). Every answer that arrived is cached; re-run to send only "
            f"these:\n{_name_images([(o.task.sha256, o.task.uri) for o in failed])}"
        )


def assign_classes(
    rekognition_results: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Map each image's answer to a training class with the configured taxonomy scheme.

    Args:
        rekognition_results: Output of :func:`request_moderation_labels`.
        params: The ``labelling`` parameter block (``taxonomy`` inside).

    Returns:
        ``image_labels`` as specified in docs/architecture.md, and mapping statistics (images
        whose out-of-scheme labels were ignored, per label) for MLflow.

    Raises:
        UnknownModelVersionError: When answers come from a model version without a scheme
            (naming the images).
    """
    mapping = LabellingSettings.parse(params).mapping
    records = []
    unknown: list[tuple[str, str]] = []
    ignored_labels: Counter[str] = Counter()  # images per ignored out-of-scheme label
    images_with_ignored = 0
    for row in rekognition_results.itertuples(index=False):
        try:
            record, ignored = _class_record(row, mapping)
        except UnknownModelVersionError:
            unknown.append((row.sha256, row.uri))
            continue
        records.append(record)
        ignored_labels.update(ignored)
        images_with_ignored += bool(ignored)
    if unknown:
        raise UnknownModelVersionError(
            f"{len(unknown)} answers come from a moderation model version without a taxonomy "
            "scheme; add it to labelling.taxonomy.scheme_by_model_version:\n"
            f"{_name_images(unknown)}"
        )
    labels = pd.DataFrame(records, columns=IMAGE_LABELS_COLUMNS)
    labels["included"] = labels["included"].astype(bool)
    _warn_excluded(labels, ignored_labels)
    mapping_stats = {
        f"ignored_out_of_scheme.{metric_name(name)}": float(n) for name, n in ignored_labels.items()
    }
    mapping_stats["n_images_with_ignored_out_of_scheme"] = float(images_with_ignored)
    return labels, mapping_stats


def _class_record(row: Any, mapping: TaxonomyMapping) -> tuple[dict[str, Any], set[str]]:
    """One ``image_labels`` row from one answer, and the out-of-scheme labels it ignored.

    Raises:
        UnknownModelVersionError: When the answer's model version has no scheme.
    """
    base = {"sha256": row.sha256, "uri": row.uri, "label_source": row.label_source}
    if row.status != "answered":
        return {
            **base,
            "class": None,
            "included": False,
            "class_reason": f"error: {row.error_code}",
            "labels": "[]",
            "content_types": "[]",
            "moderation_model_version": None,
            "error_code": row.error_code,
        }, set()
    response = json.loads(row.response)
    threshold = getattr(row, "answer_min_confidence", None)
    decision = mapping.decide(
        response, None if threshold is None or pd.isna(threshold) else float(threshold)
    )
    return {
        **base,
        "class": decision.label_class,
        "included": decision.included,
        "class_reason": decision.reason,
        "labels": json.dumps(normalise_labels(response.get("ModerationLabels", []) or [])),
        # v6's illustrated label shows here as the content type it stands for.
        "content_types": json.dumps(mapping.content_types(response)),
        "moderation_model_version": response.get("ModerationModelVersion"),
        "error_code": None,
    }, set(decision.ignored_out_of_scheme)


def _warn_excluded(labels: pd.DataFrame, ignored_labels: Counter[str]) -> None:
    """Say how many images got no class (and why), and which out-of-scheme labels were ignored."""
    excluded = labels[~labels["included"]]
    if not excluded.empty:
        reasons = Counter(str(reason).split(":")[0] for reason in excluded["class_reason"])
        # Excluded images change what the model learns from: say so (and MLflow records it).
        logger.warning(
            "%d of %d images get no class from their Rekognition answer: %s (a human verdict "
            "can still label them: see the label-source count)",
            len(excluded),
            len(labels),
            dict(reasons),
        )
    if ignored_labels:
        logger.warning(
            "Out-of-scheme labels ignored by configuration (the images keep their in-scheme "
            "class): %s",
            dict(ignored_labels),
        )


def merge_label_sources(
    rekognition_labels: pd.DataFrame,
    image_index: pd.DataFrame,
    feedback_verdicts: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Combine human verdicts, folder labels and Rekognition's classes into ``image_labels``.

    A human verdict overrides any other label (and brings back an image the taxonomy
    excluded); what it replaced stays in ``replaced_class`` / ``replaced_reason``.

    Args:
        rekognition_labels: Output of :func:`assign_classes`.
        image_index: Ingestion's index (``folder_label``).
        feedback_verdicts: The feedback pipeline's one verdict per image.
        params: The ``labelling`` block (``label_sources``, ``taxonomy``).

    Returns:
        ``image_labels`` and label-source statistics for MLflow.
    """
    settings = LabellingSettings.parse(params)
    classes = set(settings.mapping.class_names())
    labels = merge_sources(
        rekognition_labels, image_index, feedback_verdicts, settings.label_sources, classes
    )
    counts = source_counts(labels)
    per_source = counts["included_per_source"]
    human = per_source["human"]
    message = (
        f"Training labels by source: {human} human, {per_source['folder']} folder, "
        f"{per_source['rekognition']} Rekognition"
    )
    if human:
        # Human verdicts change what the model learns: said on the console and in MLflow.
        logger.warning(
            "%s (human verdicts: %d changed a class, %d confirmed one, %d labelled an image "
            "that had no class)",
            message,
            counts["human_changed_class"],
            counts["human_confirmed_class"],
            counts["human_brought_back"],
        )
    else:
        logger.info(message)
    unknown_folders = labels["class_reason"].astype(str).str.startswith("excluded_unknown_folder")
    if unknown_folders.any():
        logger.warning(
            "%d folder-labelled image(s) are excluded because their folder name is not a class "
            "(map it in labelling.label_sources.folder_classes): %s",
            int(unknown_folders.sum()),
            "; ".join(sorted(set(labels.loc[unknown_folders, "class_reason"]))[:5]),
        )
    stats = {f"label_source.{name}": float(n) for name, n in per_source.items()}
    stats.update(
        {
            "human_changed_class": float(counts["human_changed_class"]),
            "human_confirmed_class": float(counts["human_confirmed_class"]),
            "human_brought_back": float(counts["human_brought_back"]),
        }
    )
    return labels, stats


def report_label_distribution(
    image_labels: pd.DataFrame,
    request_stats: dict[str, float],
    mapping_stats: dict[str, float],
    source_stats: dict[str, float] | None = None,
) -> tuple[Figure, dict[str, dict[str, float]]]:
    """Plot the class distribution and gather the labelling metrics for MLflow.

    Args:
        image_labels: Output of :func:`assign_classes`.
        request_stats: Request statistics from :func:`request_moderation_labels`.
        mapping_stats: Mapping statistics from :func:`assign_classes`.
        source_stats: Label-source statistics from :func:`merge_label_sources`.

    Returns:
        The figure (classes, with excluded images by reason) and metrics in kedro-mlflow's
        ``{name: {"value": v, "step": 0}}`` form.
    """
    included = image_labels[image_labels["included"]]
    class_counts = included["class"].value_counts().sort_values(ascending=True)
    excluded = image_labels[~image_labels["included"]]
    reason_counts = excluded["class_reason"].map(lambda r: str(r).split(":")[0]).value_counts()
    label_counts: Counter[str] = Counter()
    for labels in image_labels["labels"]:
        label_counts.update(label["Name"] for label in json.loads(labels))

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    bars = axes[0].barh(class_counts.index.astype(str), class_counts.values, color="#3b7dd8")
    axes[0].bar_label(bars, padding=2)
    axes[0].set_title(f"Training classes ({len(included)} images)")
    axes[0].set_xlabel("images")
    if not reason_counts.empty:
        extra = axes[0].barh(
            [f"excluded ({str(r).removeprefix('excluded_')})" for r in reason_counts.index],
            reason_counts.values,
            color="#bbbbbb",
        )
        axes[0].bar_label(extra, padding=2)
    top = label_counts.most_common(15)[::-1]
    if top:
        lbars = axes[1].barh([name for name, _ in top], [n for _, n in top], color="#d8843b")
        axes[1].bar_label(lbars, padding=2)
    axes[1].set_title("Most frequent Rekognition labels")
    axes[1].set_xlabel("images carrying the label")
    for axis in axes:
        axis.margins(x=0.15)  # room for the count printed after each bar

    merged = {**request_stats, **mapping_stats, **(source_stats or {})}
    metrics = {key: float(value) for key, value in merged.items()}
    metrics.update(
        n_labelled_images=float(len(image_labels)),
        n_included=float(len(included)),
        n_excluded=float(len(excluded)),
        n_errors=float(image_labels["error_code"].notna().sum()),
    )
    for name, count in class_counts.items():
        metrics[f"class_count.{metric_name(name)}"] = float(count)
    for reason, count in reason_counts.items():
        metrics[f"excluded.{metric_name(reason)}"] = float(count)
    return figure, {key: {"value": value, "step": 0} for key, value in metrics.items()}
