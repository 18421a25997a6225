"""Grad-CAM through captum, for timm CNNs (last feature stage) and ViTs (tokens as a grid).

captum's ``LayerGradCam`` averages gradients over the spatial dimensions of a ``(B, C, H, W)``
activation. A ViT's activations are tokens ``(B, N, C)``, so for ViTs a copy of the model gets
a tap before its last block that lays the patch tokens out as a ``(B, C, h, w)`` grid and back;
Grad-CAM then runs on that grid. The tap sits at the input of the last block because with a
class-token head the last block's own patch outputs never reach the logits (zero gradient);
its input does, through the block's attention (the layer pytorch-grad-cam recommends too).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn


class UnsupportedArchitectureError(ValueError):
    """The model is neither a timm ViT (``blocks``, ``patch_embed``) nor a CNN with stages."""


class _TokenGrid(nn.Module):
    """Identity on the tokens, with the patch tokens passing through ``grid`` as an image."""

    def __init__(self, num_prefix_tokens: int, grid_size: tuple[int, int]) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.grid_size = grid_size
        self.grid = nn.Identity()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        prefix, patches = tokens[:, : self.num_prefix_tokens], tokens[:, self.num_prefix_tokens :]
        batch, n, channels = patches.shape
        height, width = self.grid_size
        if n != height * width:
            raise UnsupportedArchitectureError(
                f"{n} patch tokens do not form the {height}x{width} grid of patch_embed"
            )
        grid = self.grid(patches.transpose(1, 2).reshape(batch, channels, height, width))
        return torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)


@dataclass
class HeatmapExplainer:
    """Grad-CAM on one layer of a model; build it with :func:`explainer_for`.

    Attributes:
        model: The model Grad-CAM differentiates (a tapped copy for ViTs).
        layer: The layer whose activations and gradients make the map.
        method: What the map is, in words (for reports and the model card).
    """

    model: nn.Module
    layer: nn.Module
    method: str

    def heatmaps(self, batch: torch.Tensor, targets: list[int]) -> np.ndarray:
        """One heatmap per image for its target class, upsampled to the input size.

        Args:
            batch: Preprocessed images ``(B, 3, H, W)``.
            targets: Class index to explain, per image.

        Returns:
            ``(B, H, W)`` float32 in ``[0, 1]``: 1 where the evidence for the target class is
            strongest in that image; an all-zero map when nothing speaks for it.
        """
        if len(targets) != batch.shape[0]:
            raise ValueError(f"{len(targets)} targets for {batch.shape[0]} images")
        inputs = batch.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            attribution = LayerGradCam(self.model, self.layer).attribute(
                inputs, target=list(targets), relu_attributions=True
            )
        upsampled = LayerAttribution.interpolate(
            attribution.detach(), tuple(batch.shape[-2:]), interpolate_mode="bilinear"
        )[:, 0]
        maps = upsampled.clamp(min=0).cpu().numpy().astype(np.float32)
        peaks = maps.reshape(len(maps), -1).max(axis=1)
        scale = np.where(peaks > 0, peaks, 1.0)[:, None, None]
        return maps / scale


def _is_vit(model: nn.Module) -> bool:
    return hasattr(model, "blocks") and hasattr(model, "patch_embed")


def explainer_for(model: nn.Module) -> HeatmapExplainer:
    """The Grad-CAM explainer suited to ``model``'s architecture.

    Args:
        model: A timm classifier (its weights are not modified; ViTs are copied).

    Returns:
        An explainer; ``method`` names the layer used.

    Raises:
        UnsupportedArchitectureError: For a model that is neither a ViT nor a staged CNN.
    """
    if _is_vit(model):
        tapped = copy.deepcopy(model).eval()
        blocks: Any = tapped.blocks
        tap = _TokenGrid(
            int(getattr(tapped, "num_prefix_tokens", 1)), tuple(tapped.patch_embed.grid_size)
        )
        last = len(blocks) - 1
        blocks[last] = nn.Sequential(tap, blocks[last])
        return HeatmapExplainer(
            tapped, tap.grid, f"Grad-CAM on the patch tokens entering ViT block {last}"
        )
    feature_info = getattr(model, "feature_info", None)
    if not feature_info:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has neither ViT blocks nor timm feature_info stages; "
            "no heatmap method is defined for it"
        )
    name = feature_info[-1]["module"]
    return HeatmapExplainer(
        model.eval(), model.get_submodule(name), f"Grad-CAM on the last CNN stage ({name})"
    )
