"""Nodes of the splitting pipeline.

``image_labels`` → perceptual hashes → near-duplicate groups → balanced, leakage-free split
(``split_manifest``) and a dataset report (table, chart, summary, metrics) for MLflow.
The splitting rules and their guarantees live in :mod:`.balanced_split`; hashing and grouping in
:mod:`eyecatcher.near_duplicates` (shared with the drift populations).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

# A bare Figure (no pyplot) needs no GUI backend and is not kept alive by pyplot's registry.
from matplotlib.figure import Figure

from eyecatcher.images import (
    decode_image,
    sha256_bytes,
)
from eyecatcher.near_duplicates import (
    HASH_DECODE_MIN_SIDE,
    hashes_to_uint64,
    near_duplicate_components,
    perceptual_hash,
)
from eyecatcher.pipelines.splitting.balanced_split import (
    SPLITS,
    SplitConfig,
    SplitResult,
    SplittingError,
    balanced_split,
)
from eyecatcher.pipelines.splitting.settings import SplittingSettings
from eyecatcher.progress import progress_bar
from eyecatcher.storage import read_bytes

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["sha256", "uri", "class", "split", "group", "label_source"]
REPORT_COLUMNS = [
    "class",
    "status",
    "available",
    "sampled",
    *SPLITS,
    "near_duplicate_images",
    "max_ratio_deviation",
    "label_sources",
]
_LABEL_COLUMNS = ("sha256", "uri", "class", "included")
#: How many examples an error or a summary lists before it says "and N more".
_EXAMPLES = 10


class PerceptualHashError(SplittingError):
    """Some labelled images could not be read or decoded to compute their perceptual hash."""


def usable_images(image_labels: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``image_labels`` that can be trained on: ``included`` and with a class.

    Args:
        image_labels: The labelling pipeline's table (see ``docs/architecture.md``).

    Returns:
        ``sha256``, ``uri``, ``class`` and ``label_source`` (``human``, ``folder``,
        ``rekognition``; ``unknown`` when the table has no such column) of the usable images.

    Raises:
        SplittingError: When a required column is missing.
    """
    missing = [c for c in _LABEL_COLUMNS if c not in image_labels.columns]
    if missing:
        raise SplittingError(f"image_labels lacks the column(s) {missing}")
    included = image_labels["included"].fillna(False).astype(bool)
    without_class = included & image_labels["class"].isna()
    if without_class.any():
        # The contract says excluded images have a null class; an included one without a
        # class cannot be trained on, so it is left out, loudly.
        logger.warning(
            "%d image(s) are marked included but have no class; they are left out of the split",
            int(without_class.sum()),
        )
    usable = image_labels.loc[included & image_labels["class"].notna()].copy()
    if "label_source" not in usable.columns:
        usable["label_source"] = "unknown"
    usable["label_source"] = usable["label_source"].fillna("unknown")
    usable = usable[["sha256", "uri", "class", "label_source"]]
    return usable.astype(
        {"sha256": str, "uri": str, "class": str, "label_source": str}
    ).reset_index(drop=True)


def _hash_one(uri: str, sha256: str, options: Mapping[str, Any], max_pixels: int) -> str:
    data = read_bytes(uri, options)
    actual = sha256_bytes(data)
    if actual != sha256:
        raise SplittingError(
            f"the file changed since ingestion (sha256 {actual[:12]}…, expected {sha256[:12]}…)"
        )
    # pHash looks at a 32x32 downscale, so decoding large JPEGs at reduced scale loses nothing
    # that matters and is several times faster.
    return perceptual_hash(
        decode_image(data, max_pixels=max_pixels, draft_min_side=HASH_DECODE_MIN_SIDE)
    )


def compute_perceptual_hashes(image_labels: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Read every usable image from its ``uri`` and compute its 64-bit perceptual hash.

    Every image is attempted; failures are collected and reported together, so one bad file
    does not hide the next.

    Args:
        image_labels: The labelling pipeline's table.
        params: The ``splitting`` parameters; uses ``near_duplicates.workers`` (threads),
            ``near_duplicates.max_pixels`` and ``near_duplicates.storage_options`` (fsspec).

    Returns:
        ``image_phashes``: ``sha256``, ``uri``, ``phash`` (16 hex digits).

    Raises:
        PerceptualHashError: When any image is unreadable, no longer matches its sha256, or
            cannot be decoded; the message lists them.
    """
    settings = SplittingSettings.parse(params).near_duplicates
    options = dict(settings.storage_options)
    max_pixels, workers = settings.max_pixels, settings.workers
    usable = usable_images(image_labels)

    def attempt(row: tuple[str, str]) -> tuple[str | None, str | None]:
        uri, sha = row
        try:
            return _hash_one(uri, sha, options, max_pixels), None
        except Exception as exc:  # e.g. botocore's NoCredentialsError: collect, report all
            return None, f"{type(exc).__name__}: {exc}"

    rows = list(zip(usable["uri"], usable["sha256"], strict=True))
    # Decoding dominates; Pillow and the DCT release the GIL often enough for threads to help.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            progress_bar(
                pool.map(attempt, rows), total=len(rows), desc="perceptual hashes", unit="img"
            )
        )
    failures = [(uri, error) for (uri, _), (_, error) in zip(rows, results, strict=True) if error]
    if failures:
        listing = "\n".join(f"  {uri}: {error}" for uri, error in failures[:_EXAMPLES])
        more = f"\n  … and {len(failures) - _EXAMPLES} more" if len(failures) > _EXAMPLES else ""
        raise PerceptualHashError(
            f"{len(failures)} of {len(rows)} labelled image(s) could not be hashed; re-run "
            f"ingestion if files moved or changed:\n{listing}{more}"
        )
    return pd.DataFrame(
        {
            "sha256": usable["sha256"],
            "uri": usable["uri"],
            "phash": [phash for phash, _ in results],
        }
    )


def group_near_duplicates(image_phashes: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Group images whose perceptual hashes are within ``max_distance`` bits, transitively.

    Args:
        image_phashes: ``sha256`` and ``phash`` per image.
        params: The ``splitting`` parameters; uses ``near_duplicates.max_distance``.

    Returns:
        ``near_duplicate_groups``: ``sha256``, ``phash``, ``group`` (the smallest sha256 of
        the group, so the id does not depend on row order) and ``group_size``.
    """
    max_distance = SplittingSettings.parse(params).near_duplicates.max_distance
    labels = near_duplicate_components(hashes_to_uint64(image_phashes["phash"]), max_distance)
    groups = image_phashes[["sha256", "phash"]].copy()
    groups["_component"] = labels
    groups["group"] = groups.groupby("_component")["sha256"].transform("min")
    groups["group_size"] = groups.groupby("_component")["sha256"].transform("size").astype(int)
    groups = groups.drop(columns="_component")
    n_multi = groups.loc[groups["group_size"] > 1, "group"].nunique()
    logger.info(
        "%d image(s) form %d near-duplicate group(s) of two or more (max_distance=%d bits)",
        int((groups["group_size"] > 1).sum()),
        n_multi,
        max_distance,
    )
    return groups.sort_values(["group", "sha256"]).reset_index(drop=True)


def _cross_class_groups(manifest: pd.DataFrame) -> list[dict[str, Any]]:
    n_classes = manifest.groupby("group")["class"].nunique()
    mixed = manifest[manifest["group"].isin(n_classes[n_classes > 1].index)]
    return [
        {
            "group": str(group),
            "classes": sorted(set(rows["class"])),
            "sha256": sorted(rows["sha256"]),
        }
        for group, rows in mixed.groupby("group", sort=True)
    ]


def split_dataset(
    image_labels: pd.DataFrame, near_duplicate_groups: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Sample up to ``max_per_class`` images per class and split them without leakage.

    Args:
        image_labels: The labelling pipeline's table.
        near_duplicate_groups: ``sha256`` → ``group`` for every usable image.
        params: The ``splitting`` parameters (``seed``, ``max_per_class``, ``ratios``,
            ``min_per_class``, ``on_small_class``).

    Returns:
        ``split_manifest`` (``sha256``, ``uri``, ``class``, ``split``, ``group``,
        ``label_source``), the report table (one row per class: counts before and after
        sampling and per split, label sources) and a summary (configuration, dropped classes,
        deviations, cross-class groups, label sources per split, warnings).

    Raises:
        SplittingError: On an empty or single-class result, small classes with
            ``on_small_class: fail``, or images without a near-duplicate group.
    """
    settings = SplittingSettings.parse(params)
    config = settings.split_config()
    images, n_usable = _groupable_images(image_labels, near_duplicate_groups)
    result = balanced_split(images, config)
    manifest = result.manifest[MANIFEST_COLUMNS].reset_index(drop=True)
    included = image_labels["included"].fillna(False).astype(bool)
    without_class = int((included & image_labels["class"].isna()).sum())
    mixed = _cross_class_groups(manifest)
    warnings = _split_warnings(result, config, without_class, mixed)
    report = _report_table(result, config, manifest)
    summary: dict[str, Any] = {
        "config": {
            "seed": config.seed,
            "max_per_class": config.max_per_class,
            "ratios": dict(config.ratios),
            "min_per_class": config.min_per_class,
            "on_small_class": config.on_small_class,
            "near_duplicate_max_distance": settings.near_duplicates.max_distance,
        },
        "labelled_rows": len(image_labels),
        "excluded_images": int((~included).sum()),
        "included_without_class": without_class,
        "usable_images": n_usable,
        **_split_counts(result, manifest),
        "cross_class_groups": mixed,
        "label_sources": _label_sources(manifest),
        "warnings": warnings,
    }
    logger.info(
        "Split %d images of %d classes: %s",
        len(manifest),
        len(result.quotas),
        ", ".join(f"{s} {summary['per_split'][s]}" for s in SPLITS),
    )
    return manifest, report, summary


def _groupable_images(
    image_labels: pd.DataFrame, near_duplicate_groups: pd.DataFrame
) -> tuple[pd.DataFrame, int]:
    """The usable images with their near-duplicate group, and how many images are usable.

    Raises:
        SplittingError: With nothing to split, or images without a group (stale groups).
    """
    usable = usable_images(image_labels)
    if usable.empty:
        raise SplittingError(
            f"nothing to split: none of the {len(image_labels)} labelled image(s) is included "
            "with a class (see the labelling report for why images were excluded)"
        )
    images = usable.merge(near_duplicate_groups[["sha256", "group"]], on="sha256", how="left")
    if images["group"].isna().any():
        stale = images.loc[images["group"].isna(), "sha256"]
        raise SplittingError(
            f"{len(stale)} labelled image(s) have no near-duplicate group (stale "
            f"near_duplicate_groups? re-run the splitting pipeline from its first node), "
            f"e.g. {', '.join(stale.head(3))}"
        )
    return images, len(usable)


def _split_warnings(
    result: SplitResult, config: SplitConfig, without_class: int, mixed: list[dict[str, Any]]
) -> list[str]:
    """What the split could not do as configured, logged and returned for MLflow."""
    warnings: list[str] = []
    if without_class:
        # Already logged by usable_images; recorded here so MLflow has it too.
        warnings.append(f"{without_class} image(s) marked included have no class: left out")
    if result.dropped:
        warnings.append(
            f"dropped {len(result.dropped)} class(es) under min_per_class="
            f"{config.min_per_class}: " + ", ".join(f"{c} ({n})" for c, n in result.dropped.items())
        )
    logged = []
    deviations = result.deviations()
    if deviations:
        logged.append(
            "near-duplicate groups kept together moved some classes off their quota "
            "(images vs quota per split): " + "; ".join(f"{c} {d}" for c, d in deviations.items())
        )
    missing = result.missing()
    if missing:
        logged.append("classes absent from a split: " + ", ".join(f"{c}/{s}" for c, s in missing))
    if mixed:
        logged.append(
            f"{len(mixed)} near-duplicate group(s) hold images of different classes (label "
            "noise, or a max_distance too loose for this data): "
            + "; ".join(f"{g['group'][:12]}… {g['classes']}" for g in mixed[:_EXAMPLES])
        )
    for message in logged:
        logger.warning(message)
    return warnings + logged


def _split_counts(result: SplitResult, manifest: pd.DataFrame) -> dict[str, Any]:
    """The summary's counts: per class, per split, quotas and near-duplicate groups."""
    totals = manifest["split"].value_counts()
    return {
        "classes": sorted(result.quotas),
        "dropped_classes": result.dropped,
        "available_per_class": result.available,
        "sampled_per_class": {c: sum(v.values()) for c, v in result.counts.items()},
        "per_split": {s: int(totals.get(s, 0)) for s in SPLITS},
        "per_class_split": result.counts,
        "quotas": result.quotas,
        "deviations_from_quota": result.deviations(),
        "missing_class_splits": [list(pair) for pair in result.missing()],
        "near_duplicate_groups": int(
            manifest.groupby("group").size().gt(1).sum() if len(manifest) else 0
        ),
        "near_duplicate_images": int(sum(result.grouped.values())),
    }


def _label_sources(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images per label source in each split and overall (``{split: {source: n}}``)."""
    table = pd.crosstab(manifest["label_source"], manifest["split"])
    sources = {
        split: {str(src): int(n) for src, n in table[split].items() if n}
        for split in SPLITS
        if split in table.columns
    }
    sources["all"] = {str(k): int(v) for k, v in manifest["label_source"].value_counts().items()}
    return sources


def _report_table(result: SplitResult, config: SplitConfig, manifest: pd.DataFrame) -> pd.DataFrame:
    rows = []
    ratios = [float(r) for r in config.exact_ratios()]
    for cls, available in result.available.items():
        counts = result.counts.get(cls, dict.fromkeys(SPLITS, 0))
        sampled = sum(counts.values())
        deviation = max(abs(counts[s] - sampled * r) for s, r in zip(SPLITS, ratios, strict=True))
        rows.append(
            {
                "class": cls,
                "status": "dropped_below_min" if cls in result.dropped else "kept",
                "available": available,
                "sampled": sampled,
                **counts,
                "near_duplicate_images": result.grouped.get(cls, 0),
                "max_ratio_deviation": round(deviation, 4),
                "label_sources": ", ".join(
                    f"{source} {n}"
                    for source, n in manifest.loc[manifest["class"] == cls, "label_source"]
                    .value_counts()
                    .sort_index()
                    .items()
                ),
            }
        )
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def plot_split_report(split_report: pd.DataFrame) -> Figure:
    """Draw the dataset report: images per class before/after sampling, and per split.

    Args:
        split_report: The report table from :func:`split_dataset`.

    Returns:
        A figure with two panels (counts are written on the bars).
    """
    report = split_report.sort_values("available", ascending=False)
    classes = report["class"].tolist()
    y = np.arange(len(classes))
    height = max(3.5, 0.45 * len(classes) + 2.0)
    fig = Figure(figsize=(13, height))
    ax_sample, ax_split = fig.subplots(1, 2, sharey=True)

    bar = 0.4
    ax_sample.barh(y - bar / 2, report["available"], bar, label="available", color="#b0b7c3")
    ax_sample.barh(y + bar / 2, report["sampled"], bar, label="sampled", color="#3b6fb6")
    for yi, (avail, samp) in enumerate(zip(report["available"], report["sampled"], strict=True)):
        ax_sample.text(avail, yi - bar / 2, f" {avail}", va="center", fontsize=8)
        ax_sample.text(samp, yi + bar / 2, f" {samp}", va="center", fontsize=8)
    dropped = report["status"] != "kept"
    for yi in np.flatnonzero(dropped.to_numpy()):
        ax_sample.text(0, yi, "  dropped (below minimum)", va="center", color="#b22", fontsize=8)
    ax_sample.set_yticks(y, classes)
    ax_sample.invert_yaxis()
    ax_sample.set_xlabel("images")
    ax_sample.set_title("Before and after sampling")
    # Room on the right for the count labels, legends under the axes so they hide no bar.
    ax_sample.set_xlim(0, max(1, int(report["available"].max())) * 1.15)
    ax_sample.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)

    left = np.zeros(len(classes))
    colours = {"train": "#3b6fb6", "validation": "#e39b2d", "test": "#4a9c5d"}
    for split in SPLITS:
        values = report[split].to_numpy()
        ax_split.barh(y, values, 0.6, left=left, label=split, color=colours[split])
        for yi, (start, value) in enumerate(zip(left, values, strict=True)):
            if value:
                ax_split.text(
                    start + value / 2,
                    yi,
                    str(value),
                    va="center",
                    ha="center",
                    fontsize=7,
                    color="white",
                )
        left += values
    ax_split.set_xlabel("images")
    ax_split.set_title("Per split")
    ax_split.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    fig.suptitle("EyeCatcher dataset split")
    fig.tight_layout()
    return fig


def split_metrics(split_summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Headline numbers of the split, in the format of kedro-mlflow's metrics history dataset.

    Args:
        split_summary: The summary from :func:`split_dataset`.

    Returns:
        ``{name: {"value": v, "step": 0}}`` for image and class counts, dropped classes,
        near-duplicates and quota deviations.
    """
    values: dict[str, float] = {
        "classes": len(split_summary["classes"]),
        "dropped_classes": len(split_summary["dropped_classes"]),
        "usable_images": split_summary["usable_images"],
        "sampled_images": sum(split_summary["sampled_per_class"].values()),
        "near_duplicate_groups": split_summary["near_duplicate_groups"],
        "near_duplicate_images": split_summary["near_duplicate_images"],
        "cross_class_groups": len(split_summary["cross_class_groups"]),
        "classes_off_quota": len(split_summary["deviations_from_quota"]),
        "missing_class_splits": len(split_summary["missing_class_splits"]),
    }
    values.update({f"{s}_images": n for s, n in split_summary["per_split"].items()})
    values.update(
        {
            f"label_source.{source}": n
            for source, n in split_summary.get("label_sources", {}).get("all", {}).items()
        }
    )
    return {name: {"value": float(v), "step": 0} for name, v in values.items()}
