"""Grad-CAM heatmaps on timm's tiny random-init models: shapes, and that a map follows the
image region that drives the explained class."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from eyecatcher.explain import (
    UnsupportedArchitectureError,
    display_image,
    explainer_for,
    overlay_heatmap,
)
from eyecatcher.models.factory import freeze_backbone, model_kwargs_for_size

SIZE = 64
PATCH = 16  # one ViT patch at 64 px, a quarter of a side


def _model(architecture: str, n_classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(
        architecture, num_classes=n_classes, **model_kwargs_for_size(architecture, SIZE)
    )
    return freeze_backbone(model).eval()


def _patch_image(top: int, left: int) -> torch.Tensor:
    """A flat image with one textured square: the only thing in it a model can respond to."""
    image = torch.zeros(1, 3, SIZE, SIZE)
    texture = torch.randn(3, PATCH, PATCH, generator=torch.Generator().manual_seed(1)) * 2
    image[0, :, top : top + PATCH, left : left + PATCH] = texture
    return image


def _quadrant_means(heatmap: np.ndarray) -> np.ndarray:
    cells = SIZE // PATCH
    return heatmap.reshape(cells, PATCH, cells, PATCH).mean(axis=(1, 3))


@pytest.mark.parametrize("architecture", ["test_resnet", "test_vit"])
def test_heatmaps_have_the_input_shape_and_unit_range(architecture: str) -> None:
    explainer = explainer_for(_model(architecture))
    batch = torch.randn(3, 3, SIZE, SIZE)
    maps = explainer.heatmaps(batch, [0, 1, 2])
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    # Each map peaks at 1, or is all zero when nothing in the image speaks for that class
    # (Grad-CAM keeps positive evidence only).
    peaks = maps.reshape(3, -1).max(axis=1)
    assert all(p in {0.0, 1.0} for p in peaks) and peaks.max() == 1.0
    assert ("ViT" in explainer.method) == (architecture == "test_vit")
    with pytest.raises(ValueError, match="2 targets for 3 images"):
        explainer.heatmaps(batch, [0, 1])


@pytest.mark.parametrize("architecture", ["test_resnet", "test_vit"])
def test_the_heatmap_follows_the_region_that_drives_the_prediction(architecture: str) -> None:
    model = _model(architecture, n_classes=2)
    # Class 0's weights point along what the textured square adds to the pooled features, so
    # its logit is driven by that square and by nothing else in the image.
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(_patch_image(0, 0)), pre_logits=True)
        blank = model.forward_head(
            model.forward_features(torch.zeros(1, 3, SIZE, SIZE)), pre_logits=True
        )
        direction = (pooled - blank)[0]
        head = model.get_classifier()
        head.weight.zero_()
        head.bias.zero_()
        head.weight[0] = direction / direction.norm()
    explainer = explainer_for(model)
    last = SIZE - PATCH
    for top, left in ((0, 0), (last, last), (0, last), (last, 0)):
        cells = _quadrant_means(explainer.heatmaps(_patch_image(top, left), [0])[0])
        assert np.unravel_index(cells.argmax(), cells.shape) == (top // PATCH, left // PATCH)
    first = explainer.heatmaps(_patch_image(0, 0), [0])[0]
    moved = explainer.heatmaps(_patch_image(last, last), [0])[0]
    assert np.abs(first - moved).mean() > 0.1


def test_explaining_a_vit_leaves_the_model_untouched() -> None:
    model = _model("test_vit")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(x)
    explainer_for(model).heatmaps(x, [0, 1])
    assert type(model.blocks[-1]).__name__ == "Block"
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_model_without_a_heatmap_method_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedArchitectureError, match="no heatmap method"):
        explainer_for(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)))


def test_overlay_is_the_image_beside_its_blend_with_a_caption() -> None:
    data_config = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    image = display_image(torch.zeros(3, SIZE, SIZE), data_config)
    assert image.size == (SIZE, SIZE) and image.getpixel((0, 0)) == (128, 128, 128)
    heatmap = np.zeros((SIZE, SIZE), dtype=np.float32)
    heatmap[:PATCH, :PATCH] = 1.0
    panel = overlay_heatmap(image, heatmap, caption="true safe | predicted safe", min_side=0)
    assert isinstance(panel, Image.Image) and panel.size == (2 * SIZE, SIZE + 2 * 14 + 4)
    assert panel.getpixel((5, 5)) == (128, 128, 128)  # left: the image as the model saw it
    assert panel.getpixel((SIZE + 5, 5)) != panel.getpixel((SIZE + PATCH + 5, PATCH + 5))
    # A small input is enlarged by a whole factor, the heatmap with it.
    large = overlay_heatmap(image, heatmap, min_side=224)
    assert large.size == (2 * 256, 256)
    assert large.getpixel((256 + 60, 60)) == panel.getpixel((SIZE + 15, 15))
    with pytest.raises(ValueError, match="does not match"):
        overlay_heatmap(image, heatmap[:10])
