"""Training the classification head of a frozen backbone, two ways with one optimiser.

* :func:`train_head_on_features` trains on cached backbone features: each epoch, every
  training image contributes one of its precomputed views, drawn at random (seeded). This is
  the default: the backbone never runs during training.
* :func:`train_head_reference` is the textbook loop: every epoch runs the frozen backbone on
  freshly augmented images and on the validation images. It exists to check the cached loop
  against and to measure what caching saves (``benchmarks/bench_training.py``).

Both share the optimiser, loss, batch order and validation, so they differ only in where the
features come from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from eyecatcher.models.factory import extract_features
from eyecatcher.preprocessing import eval_transform, train_transform
from eyecatcher.progress import progress_bar


@dataclass(frozen=True)
class HeadTrainingConfig:
    """Optimisation settings shared by both loops (no defaults here: the training pipeline's
    settings hold them, ``eyecatcher.pipelines.training.settings.head_config``).

    Attributes:
        epochs: Passes over the training split.
        batch_size: Images per optimisation step.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        label_smoothing: Cross-entropy label smoothing.
        seed: Seed for batch order and view choice.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    label_smoothing: float
    seed: int


def _optimiser(head: nn.Module, config: HeadTrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )


def _evaluate_head(
    head: nn.Module, features: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module
) -> tuple[float, float]:
    with torch.no_grad():
        logits = head(features)
        loss = float(loss_fn(logits, labels))
        accuracy = float((logits.argmax(dim=1) == labels).float().mean())
    return loss, accuracy


def _epoch_record(
    epoch: int,
    losses: list[float],
    correct: int,
    seen: int,
    *,
    val: tuple[float, float],
    seconds: float,
) -> dict[str, float]:
    return {
        "epoch": epoch,
        "train_loss": float(np.sum(losses) / max(seen, 1)),
        "train_accuracy": correct / max(seen, 1),
        "val_loss": val[0],
        "val_accuracy": val[1],
        "seconds": seconds,
    }


def train_head_on_features(
    head: nn.Module,
    train_views: Sequence[np.ndarray],
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    *,
    config: HeadTrainingConfig,
    device: str | torch.device = "cpu",
    description: str = "head",
) -> list[dict[str, float]]:
    """Train ``head`` in place on precomputed features.

    Args:
        head: The classifier module (``model.get_classifier()``), trainable.
        train_views: One array ``(n_train, n_features)`` per view, rows aligned with labels.
        train_labels: Integer class index per training image.
        val_features: ``(n_val, n_features)`` clean-view validation features.
        val_labels: Integer class index per validation image.
        config: Optimisation settings.
        device: Where to train.
        description: Progress-bar label.

    Returns:
        One record per epoch: ``epoch``, ``train_loss``, ``train_accuracy``, ``val_loss``,
        ``val_accuracy``, ``seconds``.
    """
    stacked = torch.as_tensor(np.stack(train_views), dtype=torch.float32, device=device)
    labels = torch.as_tensor(train_labels, dtype=torch.long, device=device)
    val_x = torch.as_tensor(val_features, dtype=torch.float32, device=device)
    val_y = torch.as_tensor(val_labels, dtype=torch.long, device=device)
    n_views, n_train = stacked.shape[0], stacked.shape[1]
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    optimiser = _optimiser(head, config)
    history = []
    for epoch in progress_bar(range(1, config.epochs + 1), desc=description, unit="epoch"):
        start = time.perf_counter()
        head.train()
        order = torch.randperm(n_train, generator=generator)
        chosen_view = torch.randint(n_views, (n_train,), generator=generator)
        losses, correct = [], 0
        for batch_start in range(0, n_train, config.batch_size):
            idx = order[batch_start : batch_start + config.batch_size]
            x = stacked[chosen_view[idx].to(device), idx.to(device)]
            y = labels[idx.to(device)]
            optimiser.zero_grad()
            logits = head(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimiser.step()
            losses.append(loss.item() * len(idx))
            correct += int((logits.argmax(dim=1) == y).sum())
        head.eval()
        val = _evaluate_head(head, val_x, val_y, loss_fn)
        history.append(
            _epoch_record(
                epoch, losses, correct, n_train, val=val, seconds=time.perf_counter() - start
            )
        )
    return history


def train_head_reference(
    model: nn.Module,
    load_image: Callable[[str, str], Image.Image],
    train_items: Sequence[tuple[int, str, str]],
    val_items: Sequence[tuple[int, str, str]],
    *,
    data_config: Mapping[str, Any],
    augmentation: Mapping[str, float],
    config: HeadTrainingConfig,
    feature_batch_size: int = 16,
    device: str | torch.device = "cpu",
    description: str = "reference",
) -> list[dict[str, float]]:
    """Train the head of ``model`` in place, running the frozen backbone every epoch.

    Args:
        model: A timm model with a frozen backbone, on ``device``.
        load_image: ``(uri, sha256) -> image`` (:func:`eyecatcher.features.read_image`);
            called every epoch, like a plain data loader.
        train_items: ``(label, sha256, uri)`` per training image.
        val_items: ``(label, sha256, uri)`` per validation image.
        data_config: Preprocessing config.
        augmentation: Keyword arguments of :func:`eyecatcher.preprocessing.train_transform`.
        config: Optimisation settings (shared with :func:`train_head_on_features`).
        feature_batch_size: Images per backbone pass for validation.
        device: Where to run.
        description: Progress-bar label.

    Returns:
        Epoch records as in :func:`train_head_on_features`.
    """
    head = model.get_classifier()
    augment = train_transform(data_config, **augmentation)
    clean = eval_transform(data_config)
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    optimiser = _optimiser(head, config)
    model.eval()
    history = []
    n_train = len(train_items)
    for epoch in progress_bar(range(1, config.epochs + 1), desc=description, unit="epoch"):
        start = time.perf_counter()
        order = torch.randperm(n_train, generator=generator)
        # Same random draws as the cached loop, so both see the same batch order.
        torch.randint(1, (n_train,), generator=generator)
        losses, correct = [], 0
        for batch_start in range(0, n_train, config.batch_size):
            idx = order[batch_start : batch_start + config.batch_size].tolist()
            images = [load_image(train_items[i][2], train_items[i][1]) for i in idx]
            batch = torch.stack([augment(image) for image in images]).to(device)
            y = torch.as_tensor([train_items[i][0] for i in idx], device=device)
            features = extract_features(model, batch)
            head.train()
            optimiser.zero_grad()
            logits = head(features)
            loss = loss_fn(logits, y)
            loss.backward()
            optimiser.step()
            head.eval()
            losses.append(loss.item() * len(idx))
            correct += int((logits.argmax(dim=1) == y).sum())
        val_features = []
        for batch_start in range(0, len(val_items), feature_batch_size):
            chunk = val_items[batch_start : batch_start + feature_batch_size]
            batch = torch.stack([clean(load_image(uri, sha)) for _, sha, uri in chunk]).to(device)
            val_features.append(extract_features(model, batch))
        val_y = torch.as_tensor([item[0] for item in val_items], device=device)
        val = _evaluate_head(head, torch.cat(val_features), val_y, loss_fn)
        history.append(
            _epoch_record(
                epoch, losses, correct, n_train, val=val, seconds=time.perf_counter() - start
            )
        )
    return history
