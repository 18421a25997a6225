"""Training nodes: train a frozen-backbone classifier per candidate, evaluate and explain it,
record it in MLflow, pick the best.

Each node is a short recipe over the sibling modules: ``manifest`` (what a split is),
``backbone`` (the frozen model and its cache key), ``fitting`` (the head's training),
``report`` (the training report), ``evaluation`` (metrics and the operating threshold),
``plots``, :mod:`eyecatcher.explain` (heatmaps), ``tracking`` (the MLflow child run) and
``selection``. Each node receives the whole ``training`` parameter block and the candidate's
name (bound when the pipeline is built, see ``pipeline.py``);
:func:`eyecatcher.candidates.candidate_config` merges the shared settings with the candidate's
overrides.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import mlflow
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image

from eyecatcher import mlflow_log
from eyecatcher.candidates import candidate_config
from eyecatcher.explain import pick_examples
from eyecatcher.features.cache import FeatureCache
from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.pipelines.training import tracking
from eyecatcher.pipelines.training.backbone import (
    build_frozen_model,
    bundle_backbone_key,
    configured_views,
    frozen_model_key,
    resolve_device,
    seed_everything,
    warn_if_random,
)
from eyecatcher.pipelines.training.evaluation import (
    evaluation_record,
    predict_probabilities,
    prediction_table,
)
from eyecatcher.pipelines.training.fitting import fit_head
from eyecatcher.pipelines.training.gallery import explain_examples
from eyecatcher.pipelines.training.manifest import ManifestError, check_manifest, split_items
from eyecatcher.pipelines.training.report import bundle_metadata, json_safe, training_report
from eyecatcher.pipelines.training.selection import rank_candidates
from eyecatcher.pipelines.training.settings import (
    CandidateSettings,
    TrainingSettings,
    candidate_settings,
    feature_runtime,
)
from eyecatcher.reporting.plots import candidate_figures

logger = logging.getLogger(__name__)


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
    settings = CandidateSettings.parse(config)
    classes = check_manifest(split_manifest, settings.safe_class)
    weights_seed = settings.random_init_seed
    device = resolve_device(settings.device)
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    seed_everything(settings.seed)
    start = time.perf_counter()
    built = build_frozen_model(settings, len(classes), weights_seed)
    built.model.to(device)
    build_seconds = time.perf_counter() - start
    warn_if_random(candidate, built, settings.architecture)
    key = frozen_model_key(built, settings.architecture, weights_seed, feature_runtime(settings))
    train = split_items(split_manifest, "train", classes)
    validation = split_items(split_manifest, "validation", classes)
    fit = fit_head(
        built.model,
        key,
        train,
        validation,
        settings,
        views=configured_views(settings),
        feature_cache=feature_cache,
        device=device,
        candidate=candidate,
    )
    built.model.eval()
    report = training_report(
        settings,
        config,
        built=built,
        key=key,
        fit=fit,
        classes=classes,
        counts={"n_train": len(train[0]), "n_validation": len(validation[0])},
        weights_seed=weights_seed,
        device=device,
        build_seconds=build_seconds,
    )
    bundle = ClassifierBundle.from_model(
        built.model.cpu(),
        architecture=settings.architecture,
        classes=classes,
        data_config=built.data_config,
        weights_source=built.weights_source,
        safe_class=report["safe_class"],
        model_kwargs=built.model_kwargs,
        metadata=bundle_metadata(report, settings.seed, weights_seed, settings.epochs),
    )
    return bundle, report


def evaluate_candidate(
    model_bundle: ClassifierBundle,
    split_manifest: pd.DataFrame,
    feature_cache: FeatureCache,
    training: dict[str, Any],
    *,
    candidate: str,
) -> tuple[dict[str, Any], pd.DataFrame]:
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
        it, curve points, timings; and the per-image test predictions.
    """
    start = time.perf_counter()
    settings = candidate_settings(training, candidate)
    features = settings.features
    classes = list(model_bundle.classes)
    model = model_bundle.build_model()
    key = bundle_backbone_key(model_bundle, model, feature_runtime(settings))
    device = resolve_device(settings.device)
    model.to(device)
    results = {}
    for split in ("validation", "test"):
        images, labels = split_items(split_manifest, split, classes)
        probabilities = predict_probabilities(
            model,
            key,
            images,
            cache=feature_cache if features.cache else None,
            batch_size=features.batch_size,
            device=device,
            description=f"{candidate}: {split} features",
            storage_options=settings.storage_options,
        )
        results[split] = (labels, probabilities, images)
    record = evaluation_record(
        results,
        classes,
        model_bundle.safe_class,
        settings.evaluation.target_fpr,
        candidate=candidate,
    )
    evaluation = {
        "candidate": candidate,
        "architecture": model_bundle.architecture,
        "weights_source": model_bundle.weights_source,
        "classes": classes,
        "safe_class": model_bundle.safe_class,
        **record,
        "timings_s": {"evaluation": time.perf_counter() - start},
    }
    threshold = record["operating_threshold"]["threshold"]
    predictions = prediction_table(results["test"], classes, model_bundle.safe_class, threshold)
    return json_safe(evaluation), predictions


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
    figures = candidate_figures(evaluation, training_report)
    return (
        figures["confusion_matrix"],
        figures["roc_curve"],
        figures["pr_curve"],
        figures["training_curves"],
    )


def explain_candidate(
    model_bundle: ClassifierBundle,
    test_predictions: pd.DataFrame,
    evaluation: dict[str, Any],
    training: dict[str, Any],
    *,
    candidate: str,
) -> tuple[dict[str, Image.Image], dict[str, Any]]:
    """Heatmaps of the test images a reviewer should look at, overlaid on the images.

    Grad-CAM for the predicted class (:func:`eyecatcher.explain.explainer_for` picks the
    method by architecture) on the most confident errors, the images nearest the operating
    threshold and the most confident correct image of each class (``explanations``
    settings).

    Args:
        model_bundle: The trained candidate.
        test_predictions: Per-image test predictions from :func:`evaluate_candidate`.
        evaluation: The evaluation record (operating threshold).
        training: The ``training`` parameters.
        candidate: Candidate name.

    Returns:
        ``{file stem: overlay image}`` and the index (method, threshold, one record per
        image: why it was chosen, truth, prediction, scores).
    """
    settings = candidate_settings(training, candidate)
    wanted = settings.explanations
    threshold = evaluation["operating_threshold"]["threshold"]
    examples = pick_examples(
        test_predictions,
        threshold,
        errors=wanted.errors,
        near_threshold=wanted.near_threshold,
        correct_per_class=wanted.correct_per_class,
    )
    overlays, records = explain_examples(
        model_bundle, examples, alpha=wanted.alpha, storage_options=settings.storage_options
    )
    logger.info("Candidate %s: %d heatmaps of test images.", candidate, len(overlays))
    index = {
        "candidate": candidate,
        "split": "test",
        "method": records[0]["method"] if records else None,
        "operating_threshold": threshold,
        "random_weights": model_bundle.weights_source == "random",
        "examples": records,
    }
    return overlays, json_safe(index)


def log_candidate_run(
    model_bundle: ClassifierBundle,
    training_report: dict[str, Any],
    evaluation: dict[str, Any],
    *,
    explanations: dict[str, Any],
    explanations_index: dict[str, Any],
    training: dict[str, Any],
    candidate: str,
) -> dict[str, Any]:
    """Record the candidate in its own MLflow run, nested under the ``kedro run``'s run.

    One child run per candidate lets a reviewer compare candidates side by side. It holds the
    candidate's settings, per-epoch and summary metrics, plots, heatmaps (``explanations/``),
    the weights source (tagged loudly when random) and the trained head as an MLflow model
    (``log_full_bundle: true`` adds the whole bundle as an artifact).

    Args:
        model_bundle: The trained candidate.
        training_report: Output of :func:`train_candidate`.
        evaluation: Output of :func:`evaluate_candidate`.
        explanations: Overlays from :func:`explain_candidate` (images, or loaders of images
            when read back from the catalog).
        explanations_index: Their index.
        training: The ``training`` parameters.
        candidate: Candidate name.

    Returns:
        ``candidate``, ``run_id``, ``experiment_id``, ``parent_run_id``, ``artifact_uri`` and
        ``model_id`` (the logged head).
    """
    config = candidate_config(training, candidate)
    settings = CandidateSettings.parse(config)
    parent = mlflow.active_run()
    tags = tracking.candidate_tags(candidate, model_bundle, training_report, evaluation)
    with mlflow.start_run(run_name=candidate, nested=parent is not None, tags=tags) as run:
        params = tracking.flatten("", {k: v for k, v in config.items() if k != "name"}, {})
        mlflow_log.log_params(params)
        tracking.log_history(training_report["history"])
        model_id = tracking.log_head_model(
            model_bundle,
            candidate,
            full_bundle=settings.mlflow.log_full_bundle,
        )
        mlflow.log_metrics(tracking.summary_metrics(training_report, evaluation), model_id=model_id)
        tracking.log_figures(candidate_figures(evaluation, training_report))
        tracking.log_explanations(explanations, explanations_index)
        mlflow_log.log_dict(evaluation, "evaluation.json")
        mlflow_log.log_dict(training_report, "training_report.json")
        return {
            "candidate": candidate,
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "parent_run_id": parent.info.run_id if parent is not None else None,
            "artifact_uri": run.info.artifact_uri,
            "model_id": model_id,
        }


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
    selection = TrainingSettings.parse(training).selection
    metric, greater = selection.metric, selection.greater_is_better
    ranked = rank_candidates(evaluations, metric, greater)
    logger.info("Selected candidate %s: %s.", ranked["selected"], ranked["reason"])
    return json_safe(
        {
            "selected": ranked["selected"],
            "metric": metric,
            "split": "validation",
            "greater_is_better": greater,
            "values": ranked["values"],
            "test_values": {e["candidate"]: e["test"].get(metric) for e in evaluations},
            "ranking": ranked["ranking"],
            "reason": ranked["reason"],
        }
    )


__all__ = [
    "ManifestError",
    "check_manifest",
    "evaluate_candidate",
    "explain_candidate",
    "log_candidate_run",
    "plot_candidate",
    "select_candidate",
    "train_candidate",
]
