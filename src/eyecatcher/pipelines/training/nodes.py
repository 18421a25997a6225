"""Training nodes: train a frozen-backbone classifier per candidate, evaluate it, pick the best.

Each node receives the whole ``training`` parameter block and the candidate's name (bound when
the pipeline is built, see ``pipeline.py``); :func:`eyecatcher.candidates.candidate_config`
merges the shared settings with the candidate's overrides.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from eyecatcher.candidates import candidate_config
from eyecatcher.features import (
    CLEAN_VIEW,
    BackboneKey,
    FeatureCache,
    FeatureStats,
    ViewSpec,
    backbone_fingerprint,
    compute_features,
    read_image,
    training_views,
)
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.factory import create_classifier, freeze_backbone, model_kwargs_for_size
from eyecatcher.models.head_training import (
    HeadTrainingConfig,
    train_head_on_features,
    train_head_reference,
)
from eyecatcher.pipelines.training import metrics, plots
from eyecatcher.preprocessing import data_config_for

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_REQUIRED_COLUMNS = ("sha256", "uri", "class", "split")


class ManifestError(ValueError):
    """The split manifest cannot be trained on."""


def check_manifest(split_manifest: pd.DataFrame, safe_class: str) -> list[str]:
    """Check the split manifest and return the class names in logit order (sorted).

    Args:
        split_manifest: Rows ``sha256, uri, class, split[, group]``.
        safe_class: The class that means "nothing to moderate".

    Returns:
        Sorted class names.

    Raises:
        ManifestError: On missing columns, unknown or empty splits, missing classes, an image
            in two splits, or a missing safe class.
    """
    missing = [c for c in _REQUIRED_COLUMNS if c not in split_manifest.columns]
    if missing:
        raise ManifestError(f"split_manifest lacks columns {missing}")
    unknown = sorted(set(split_manifest["split"]) - set(SPLITS))
    if unknown:
        raise ManifestError(f"split_manifest has unknown splits {unknown}; expected {SPLITS}")
    empty = [s for s in SPLITS if not (split_manifest["split"] == s).any()]
    if empty:
        raise ManifestError(
            f"split_manifest has no {empty} rows: training needs train, validation (model "
            "selection, threshold calibration) and test (evaluation) images."
        )
    if split_manifest["class"].isna().any():
        raise ManifestError("split_manifest has rows without a class")
    duplicated = split_manifest["sha256"].duplicated(keep=False)
    if duplicated.any():
        shas = sorted(split_manifest.loc[duplicated, "sha256"].unique())
        raise ManifestError(
            f"{len(shas)} images appear more than once in split_manifest (e.g. {shas[:3]}); an "
            "image in two splits would leak test data into training."
        )
    classes = sorted(str(c) for c in split_manifest["class"].unique())
    if safe_class not in classes:
        raise ManifestError(
            f"safe_class '{safe_class}' is not among the classes {classes}; the moderation "
            "metrics (unsafe score = 1 - p(safe)) need it. Set training.safe_class."
        )
    return classes


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _split_items(
    manifest: pd.DataFrame, split: str, classes: list[str]
) -> tuple[list[tuple[str, str]], np.ndarray]:
    rows = manifest[manifest["split"] == split].sort_values("sha256")
    images = list(zip(rows["sha256"].astype(str), rows["uri"].astype(str), strict=True))
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[str(c)] for c in rows["class"]], dtype=np.int64)
    return images, labels


def _build_model(
    config: Mapping[str, Any], n_classes: int
) -> tuple[torch.nn.Module, str, dict[str, Any], dict[str, Any]]:
    architecture = config["architecture"]
    image_size = config.get("image_size")
    model_kwargs = model_kwargs_for_size(architecture, image_size)
    # Seed right before construction: a random backbone is then the same network every run,
    # which is what makes its cached features reusable.
    torch.manual_seed(int(config.get("weights_seed", config.get("seed", 0))))
    model, weights_source = create_classifier(
        architecture, n_classes, str(config.get("weights", "imagenet")), **model_kwargs
    )
    freeze_backbone(model)
    model.eval()
    return model, weights_source, data_config_for(model, image_size), model_kwargs


def _backbone_key(
    model: torch.nn.Module,
    *,
    architecture: str,
    weights_source: str,
    weights_seed: int,
    data_config: Mapping[str, Any],
    model_kwargs: Mapping[str, Any],
) -> BackboneKey:
    return BackboneKey(
        architecture=architecture,
        weights_source=weights_source,
        weights_seed=weights_seed,
        fingerprint=backbone_fingerprint(model),
        data_config=data_config,
        model_kwargs=model_kwargs,
    )


def _views(config: Mapping[str, Any]) -> list[ViewSpec]:
    features = config.get("features", {})
    return training_views(
        int(features.get("views", 2)),
        dict(config.get("augmentation", {})),
        int(features.get("augmentation_seed", config.get("seed", 0))),
        include_clean=bool(features.get("clean_view", True)),
    )


def train_candidate(
    split_manifest: pd.DataFrame,
    feature_cache: FeatureCache,
    training: dict[str, Any],
    *,
    candidate: str,
) -> tuple[ClassifierBundle, dict[str, Any]]:
    """Train one candidate's head on its frozen backbone.

    With ``features.cache: true`` (default) the backbone runs once per image and view and
    the head trains on cached features; with ``false`` the reference loop runs the backbone
    on freshly augmented images every epoch.

    Args:
        split_manifest: The split manifest (see ``docs/architecture.md``).
        feature_cache: Handle on the feature cache directory.
        training: The ``training`` parameters.
        candidate: Candidate name (a key of ``training.candidates``).

    Returns:
        The trained :class:`ClassifierBundle` and a training report (settings, per-epoch
        history, timings, cache statistics, model size).
    """
    config = candidate_config(training, candidate)
    safe_class = str(config.get("safe_class", "safe"))
    classes = check_manifest(split_manifest, safe_class)
    seed = int(config.get("seed", 0))
    weights_seed = int(config.get("weights_seed", seed))
    device = resolve_device(str(config.get("device", "auto")))
    if config.get("num_threads"):
        torch.set_num_threads(int(config["num_threads"]))
    _seed_everything(seed)
    start = time.perf_counter()
    model, weights_source, data_config, model_kwargs = _build_model(
        {**config, "weights_seed": weights_seed}, len(classes)
    )
    model.to(device)
    build_seconds = time.perf_counter() - start
    if weights_source == "random":
        logger.warning(
            "Candidate %s trains on a RANDOMLY INITIALISED %s backbone (weights: random); "
            "its metrics describe the demo, not a pretrained model.",
            candidate,
            config["architecture"],
        )

    train_images, train_labels = _split_items(split_manifest, "train", classes)
    val_images, val_labels = _split_items(split_manifest, "validation", classes)
    feature_settings = dict(config.get("features", {}))
    use_cache = bool(feature_settings.get("cache", True))
    batch_size = int(feature_settings.get("batch_size", 16))
    head_config = HeadTrainingConfig.from_params(config)
    stats = FeatureStats()
    views = _views(config)
    key = _backbone_key(
        model,
        architecture=config["architecture"],
        weights_source=weights_source,
        weights_seed=weights_seed,
        data_config=data_config,
        model_kwargs=model_kwargs,
    )
    start = time.perf_counter()
    if use_cache:
        train_features, train_stats = compute_features(
            model,
            key,
            train_images,
            views,
            cache=feature_cache,
            batch_size=batch_size,
            device=device,
            description=f"{candidate}: train features",
        )
        val_features, val_stats = compute_features(
            model,
            key,
            val_images,
            [ViewSpec(CLEAN_VIEW)],
            cache=feature_cache,
            batch_size=batch_size,
            device=device,
            description=f"{candidate}: validation features",
        )
        stats.add(train_stats)
        stats.add(val_stats)
        feature_seconds = time.perf_counter() - start
        start = time.perf_counter()
        history = train_head_on_features(
            model.get_classifier(),
            [train_features[view.name] for view in views],
            train_labels,
            val_features[CLEAN_VIEW],
            val_labels,
            config=head_config,
            device=device,
            description=f"{candidate}: head epochs",
        )
    else:
        feature_seconds = 0.0
        history = train_head_reference(
            model,
            read_image,
            [(int(y), sha, uri) for (sha, uri), y in zip(train_images, train_labels, strict=True)],
            [(int(y), sha, uri) for (sha, uri), y in zip(val_images, val_labels, strict=True)],
            data_config=data_config,
            augmentation=dict(config.get("augmentation", {})),
            config=head_config,
            feature_batch_size=batch_size,
            device=device,
            description=f"{candidate}: reference epochs",
        )
    training_seconds = time.perf_counter() - start
    model.eval()

    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    report = {
        "candidate": candidate,
        "architecture": config["architecture"],
        "weights_source": weights_source,
        "weights_seed": weights_seed if weights_source == "random" else None,
        "random_weights": weights_source == "random",
        "classes": classes,
        "safe_class": safe_class,
        "data_config": data_config,
        "model_kwargs": model_kwargs,
        "mode": "cached_features" if use_cache else "reference",
        "views": [view.name for view in views] if use_cache else ["on_the_fly"],
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "n_train": len(train_images),
        "n_validation": len(val_images),
        "n_parameters": n_params,
        "n_trainable_parameters": n_trainable,
        "model_size_bytes": size_bytes,
        "head_size_bytes": sum(
            t.numel() * t.element_size() for t in model.get_classifier().state_dict().values()
        ),
        "timings_s": {
            "model_build": build_seconds,
            "features": feature_seconds,
            "head_training": training_seconds,
        },
        "cache": {
            "enabled": use_cache,
            "hits": stats.hits,
            "misses": stats.misses,
            "key_digests": stats.digests,
            "backbone_fingerprint": key.fingerprint,
        },
        "history": history,
        "config": config,
    }
    bundle = ClassifierBundle.from_model(
        model.cpu(),
        architecture=config["architecture"],
        classes=classes,
        data_config=data_config,
        weights_source=weights_source,
        safe_class=safe_class,
        model_kwargs=model_kwargs,
        metadata={
            "candidate": candidate,
            "seed": seed,
            "weights_seed": weights_seed,
            "epochs": head_config.epochs,
            "mode": report["mode"],
            "views": report["views"],
            "final_val_accuracy": history[-1]["val_accuracy"] if history else None,
        },
    )
    return bundle, _json_safe(report)


def _predict(
    model: torch.nn.Module,
    key: BackboneKey,
    images: list[tuple[str, str]],
    *,
    cache: FeatureCache | None,
    batch_size: int,
    device: torch.device,
    description: str,
) -> np.ndarray:
    features, _ = compute_features(
        model,
        key,
        images,
        [ViewSpec(CLEAN_VIEW)],
        cache=cache,
        batch_size=batch_size,
        device=device,
        description=description,
    )
    with torch.no_grad():
        inputs = torch.as_tensor(features[CLEAN_VIEW], device=device)
        logits = model.get_classifier()(inputs)
    return torch.softmax(logits, dim=1).cpu().numpy()


def _headline(classification: Mapping[str, Any], moderation: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "accuracy": classification["accuracy"],
        "macro_f1": classification["macro_f1"],
        "roc_auc": moderation["roc_auc"],
        "pr_auc": moderation["pr_auc"],
    }


def evaluate_candidate(
    model_bundle: ClassifierBundle,
    split_manifest: pd.DataFrame,
    feature_cache: FeatureCache,
    training: dict[str, Any],
    *,
    candidate: str,
) -> dict[str, Any]:
    """Evaluate a trained candidate on the validation and test splits.

    The operating threshold (unsafe score ``1 - p(safe)`` above which an image is flagged) is
    calibrated on validation for ``evaluation.target_fpr`` and then measured on test, so the
    test numbers are what a deployment with that threshold would see.

    Args:
        model_bundle: The trained candidate.
        split_manifest: The split manifest.
        feature_cache: Handle on the feature cache (the clean-view features of validation and
            test images are usually already there from training).
        training: The ``training`` parameters.
        candidate: Candidate name.

    Returns:
        The evaluation record (see ``docs/training.md``): ``test`` and ``validation`` headline
        metrics, per-class metrics, confusion matrices, the operating threshold and rates at
        it, curve points, timings.
    """
    start = time.perf_counter()
    config = candidate_config(training, candidate)
    classes = list(model_bundle.classes)
    model = model_bundle.build_model()
    key = _backbone_key(
        model,
        architecture=model_bundle.architecture,
        weights_source=model_bundle.weights_source,
        weights_seed=int(model_bundle.metadata.get("weights_seed", 0)),
        data_config=model_bundle.data_config,
        model_kwargs=model_bundle.model_kwargs,
    )
    feature_settings = dict(config.get("features", {}))
    cache = feature_cache if feature_settings.get("cache", True) else None
    batch_size = int(feature_settings.get("batch_size", 16))
    safe_index = classes.index(model_bundle.safe_class)
    device = resolve_device(str(config.get("device", "auto")))
    model.to(device)
    target_fpr = float(config.get("evaluation", {}).get("target_fpr", 0.01))

    results: dict[str, Any] = {}
    for split in ("validation", "test"):
        images, labels = _split_items(split_manifest, split, classes)
        unknown = set(split_manifest.loc[split_manifest["split"] == split, "class"]) - set(classes)
        if unknown:
            raise ManifestError(f"{split} has classes {sorted(unknown)} the model never saw")
        probabilities = _predict(
            model,
            key,
            images,
            cache=cache,
            batch_size=batch_size,
            device=device,
            description=f"{candidate}: {split} features",
        )
        results[split] = (labels, probabilities)

    evaluation: dict[str, Any] = {
        "candidate": candidate,
        "architecture": model_bundle.architecture,
        "weights_source": model_bundle.weights_source,
        "classes": classes,
        "safe_class": model_bundle.safe_class,
    }
    val_labels, val_probs = results["validation"]
    val_unsafe = val_labels != safe_index
    val_scores = metrics.unsafe_scores(val_probs, safe_index)
    calibration = metrics.calibrate_threshold(val_scores, val_unsafe, target_fpr)
    if calibration["warning"]:
        logger.warning("Candidate %s: %s.", candidate, calibration["warning"])
    for split, (labels, probs) in results.items():
        classification = metrics.classification_metrics(labels, probs.argmax(axis=1), classes)
        is_unsafe = labels != safe_index
        scores = metrics.unsafe_scores(probs, safe_index)
        moderation = metrics.moderation_curves(scores, is_unsafe)
        at_threshold = metrics.rates_at_threshold(scores, is_unsafe, calibration["threshold"])
        evaluation[split] = {
            **_headline(classification, moderation),
            "recall_at_threshold": at_threshold["recall"],
            "fpr_at_threshold": at_threshold["fpr"],
            "n": classification["n"],
            "per_class": classification["per_class"],
            "confusion_matrix": classification["confusion_matrix"],
            "curves": {"roc": moderation["roc"], "pr": moderation["pr"]},
        }
    evaluation["operating_threshold"] = {
        "unsafe_score": "1 - p(safe)",
        "rule": "flag when unsafe_score > threshold",
        "calibrated_on": "validation",
        **calibration,
        "test_recall": evaluation["test"]["recall_at_threshold"],
        "test_fpr": evaluation["test"]["fpr_at_threshold"],
    }
    evaluation["timings_s"] = {"evaluation": time.perf_counter() - start}
    return _json_safe(evaluation)


def plot_candidate(
    evaluation: dict[str, Any], training_report: dict[str, Any]
) -> tuple[Figure, Figure, Figure, Figure]:
    """Confusion matrix, ROC and PR curves on test, and per-epoch training curves.

    Args:
        evaluation: Output of :func:`evaluate_candidate`.
        training_report: Output of :func:`train_candidate`.

    Returns:
        The four figures, in that order.
    """
    figures = _figures(evaluation, training_report)
    return (
        figures["confusion_matrix"],
        figures["roc_curve"],
        figures["pr_curve"],
        figures["training_curves"],
    )


def _figures(evaluation: Mapping[str, Any], training_report: Mapping[str, Any]) -> dict[str, Any]:
    name = evaluation["candidate"]
    test = evaluation["test"]
    operating = {
        "fpr": test["fpr_at_threshold"],
        "recall": test["recall_at_threshold"],
        "threshold": evaluation["operating_threshold"]["threshold"],
    }
    moderation = {**test["curves"], "roc_auc": test["roc_auc"], "pr_auc": test["pr_auc"]}
    return {
        "confusion_matrix": plots.confusion_matrix_figure(
            test["confusion_matrix"], evaluation["classes"], f"{name}: test confusion matrix"
        ),
        "roc_curve": plots.roc_figure(moderation, operating, f"{name}: safe vs unsafe ROC (test)"),
        "pr_curve": plots.pr_figure(moderation, f"{name}: safe vs unsafe PR (test)"),
        "training_curves": plots.training_curves_figure(
            training_report["history"], f"{name}: training ({training_report['mode']})"
        ),
    }


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def log_candidate_run(
    model_bundle: ClassifierBundle,
    training_report: dict[str, Any],
    evaluation: dict[str, Any],
    training: dict[str, Any],
    *,
    candidate: str,
) -> dict[str, Any]:
    """Record the candidate in its own MLflow run, nested under the ``kedro run``'s run.

    kedro-mlflow opens one run per ``kedro run`` (``tracking.run.nested: true``); one child
    run per candidate lets a reviewer compare candidates side by side in the MLflow UI. It
    holds the candidate's settings, per-epoch metrics, validation and test metrics, plots,
    model size, time spent, the weights source (tagged loudly when random) and the trained
    head (``log_full_bundle: true`` adds the whole bundle).

    Args:
        model_bundle: The trained candidate.
        training_report: Output of :func:`train_candidate`.
        evaluation: Output of :func:`evaluate_candidate`.
        training: The ``training`` parameters.
        candidate: Candidate name.

    Returns:
        ``candidate``, ``run_id``, ``experiment_id``, ``parent_run_id`` and ``artifact_uri``.
    """
    config = candidate_config(training, candidate)
    parent = mlflow.active_run()
    tags = {
        "eyecatcher.stage": "training",
        "candidate": candidate,
        "architecture": model_bundle.architecture,
        "weights_source": model_bundle.weights_source,
        "random_weights": str(model_bundle.weights_source == "random").lower(),
        "training_mode": training_report["mode"],
    }
    if model_bundle.weights_source == "random":
        tags["warning"] = (
            "RANDOM WEIGHTS: the backbone is randomly initialised; these metrics say nothing "
            "about an ImageNet-pretrained model."
        )
    if evaluation["operating_threshold"].get("warning"):
        tags["operating_threshold_warning"] = evaluation["operating_threshold"]["warning"]
    with mlflow.start_run(run_name=candidate, nested=parent is not None, tags=tags) as run:
        params = _flatten("", {k: v for k, v in config.items() if k != "name"}, {})
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        for record in training_report["history"]:
            mlflow.log_metrics(
                {k: v for k, v in record.items() if k != "epoch" and _finite(v)},
                step=int(record["epoch"]),
            )
        summary: dict[str, float] = {}
        for split in ("validation", "test"):
            for name in ("accuracy", "macro_f1", "roc_auc", "pr_auc"):
                summary[f"{split}.{name}"] = evaluation[split][name]
            summary[f"{split}.recall_at_threshold"] = evaluation[split]["recall_at_threshold"]
            summary[f"{split}.fpr_at_threshold"] = evaluation[split]["fpr_at_threshold"]
            for cls, values in evaluation[split]["per_class"].items():
                summary[f"{split}.recall.{cls}"] = values["recall"]
                summary[f"{split}.precision.{cls}"] = values["precision"]
        summary["operating_threshold"] = evaluation["operating_threshold"]["threshold"]
        summary["model_size_mb"] = training_report["model_size_bytes"] / 1e6
        summary["head_size_kb"] = training_report["head_size_bytes"] / 1e3
        summary["n_parameters"] = training_report["n_parameters"]
        summary["n_trainable_parameters"] = training_report["n_trainable_parameters"]
        summary["feature_cache_hits"] = training_report["cache"]["hits"]
        summary["feature_cache_misses"] = training_report["cache"]["misses"]
        for name, seconds in training_report["timings_s"].items():
            summary[f"time_s.{name}"] = seconds
        summary["time_s.evaluation"] = evaluation["timings_s"]["evaluation"]
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if _finite(v)})
        for name, figure in _figures(evaluation, training_report).items():
            mlflow.log_figure(figure, f"plots/{name}.png")
        mlflow.log_dict(evaluation, "evaluation.json")
        mlflow.log_dict(training_report, "training_report.json")
        with tempfile.TemporaryDirectory() as tmp:
            head = model_bundle.build_model().get_classifier().state_dict()
            head_path = Path(tmp) / "head_state_dict.pt"
            torch.save(head, head_path)
            mlflow.log_artifact(str(head_path), "model")
            bundle_info = {
                "architecture": model_bundle.architecture,
                "classes": model_bundle.classes,
                "safe_class": model_bundle.safe_class,
                "data_config": model_bundle.data_config,
                "weights_source": model_bundle.weights_source,
                "model_kwargs": model_bundle.model_kwargs,
                "metadata": model_bundle.metadata,
            }
            mlflow.log_dict(bundle_info, "model/bundle_info.json")
            if config.get("mlflow", {}).get("log_full_bundle", False):
                bundle_path = Path(tmp) / "model_bundle.pt"
                model_bundle.save(bundle_path)
                mlflow.log_artifact(str(bundle_path), "model")
        info = {
            "candidate": candidate,
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "parent_run_id": parent.info.run_id if parent is not None else None,
            "artifact_uri": run.info.artifact_uri,
        }
    import matplotlib.pyplot as plt

    plt.close("all")
    return info


def select_candidate(training: dict[str, Any], *evaluations: dict[str, Any]) -> dict[str, Any]:
    """Choose the best candidate on the VALIDATION split by ``selection.metric``.

    Test metrics are never used to choose (that would make them optimistic); they stay an
    unbiased estimate for the chosen model. Ties go to the candidate listed first in config.

    Args:
        training: The ``training`` parameters (``selection.metric``,
            ``selection.greater_is_better``).
        *evaluations: Outputs of :func:`evaluate_candidate`, in config order.

    Returns:
        ``selected``, ``metric``, ``split``, ``greater_is_better``, ``values`` (per
        candidate), ``test_values`` (for information), ``ranking`` and ``reason``.

    Raises:
        ValueError: If no candidate has a finite value for the metric.
    """
    selection = dict(training.get("selection", {}))
    metric = str(selection.get("metric", "macro_f1"))
    greater = bool(selection.get("greater_is_better", True))
    values = {e["candidate"]: e["validation"].get(metric) for e in evaluations}
    if any(metric not in e["validation"] for e in evaluations):
        raise ValueError(
            f"selection.metric '{metric}' is not a validation metric; choose one of "
            f"{sorted(k for k, v in evaluations[0]['validation'].items() if _finite(v))}"
        )
    usable = {name: v for name, v in values.items() if _finite(v)}
    if not usable:
        raise ValueError(f"No candidate has a finite validation {metric}: {values}")
    order = list(values)
    ranking = sorted(usable, key=lambda n: ((-usable[n] if greater else usable[n]), order.index(n)))
    best = ranking[0]
    tied = [n for n in ranking if usable[n] == usable[best]]
    reason = (
        f"highest validation {metric}" if greater else f"lowest validation {metric}"
    ) + f" ({usable[best]:.4f}"
    if len(ranking) > 1:
        runner_up = next((n for n in ranking if n not in tied), None)
        if runner_up is not None:
            reason += f" vs {usable[runner_up]:.4f} for {runner_up}"
    reason += ")"
    if len(tied) > 1:
        reason += f"; tied with {tied[1:]}, first in config order wins"
    skipped = sorted(set(values) - set(usable))
    if skipped:
        reason += f"; {skipped} had no finite value and were not considered"
        logger.warning("Candidates %s have no finite validation %s.", skipped, metric)
    logger.info("Selected candidate %s: %s.", best, reason)
    return _json_safe(
        {
            "selected": best,
            "metric": metric,
            "split": "validation",
            "greater_is_better": greater,
            "values": values,
            "test_values": {e["candidate"]: e["test"].get(metric) for e in evaluations},
            "ranking": ranking,
            "reason": reason,
        }
    )


def _json_safe(value: Any) -> Any:
    """NaN and infinities become ``None`` so that the JSON files stay standard JSON."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


__all__ = [
    "ManifestError",
    "check_manifest",
    "evaluate_candidate",
    "log_candidate_run",
    "plot_candidate",
    "select_candidate",
    "train_candidate",
]
