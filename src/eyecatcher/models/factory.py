"""One factory for every candidate architecture, with an explicit weights policy.

The architecture is a timm model name from config (``resnet50``, ``vit_base_patch16_224``,
``convnext_tiny``, or the tiny ``test_resnet`` / ``test_vit`` used in tests); nothing else in the
code depends on which one it is.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = (
    "RANDOM WEIGHTS: %s is randomly initialised (weights: random). Its features are not "
    "ImageNet features; metrics from this model say nothing about a pretrained one."
)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for and could not be obtained."""


_CONVERT_HINT = (
    "Only .safetensors files and plain tensor checkpoints (torch.load(weights_only=True)) are "
    "loaded: unpickling any other object can run arbitrary code. If you trust the file, "
    "convert it once and point `weights` at the result:\n"
    '  python -c "import torch; from safetensors.torch import save_file; '
    "sd = torch.load('{path}', map_location='cpu', weights_only=False); "
    "sd = sd.get('state_dict', sd) if isinstance(sd, dict) else sd.state_dict(); "
    "save_file({{k: v.contiguous() for k, v in sd.items()}}, '{stem}.safetensors')\""
)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local checkpoint's state dict without executing anything from the file.

    Args:
        path: A ``.safetensors`` file, or a ``.pth``/``.pt``/``.bin`` file holding only tensors
            (possibly under a ``state_dict``/``model`` key), read with ``weights_only=True``.

    Returns:
        Parameter name to tensor, on CPU.

    Raises:
        WeightsUnavailableError: If the file is a pickle of other objects (refused, with the
            command that converts it), unreadable, or holds no tensors.
    """
    from timm.models import load_state_dict

    path = Path(path)
    try:
        # timm reads .safetensors with safetensors, anything else with torch.load; both
        # unwrap training checkpoints (state_dict / model / EMA keys, "module." prefixes).
        payload: object = load_state_dict(str(path), device="cpu", weights_only=True)
    except Exception as exc:
        # timm re-raises torch's refusal (an UnpicklingError) as a RuntimeError.
        if not isinstance(exc, pickle.UnpicklingError) and not isinstance(
            exc.__cause__, pickle.UnpicklingError
        ):
            raise WeightsUnavailableError(f"Checkpoint {path} could not be read: {exc}") from exc
        raise WeightsUnavailableError(
            f"Checkpoint {path} was refused: it is a pickle of Python objects, not only "
            f"tensors. " + _CONVERT_HINT.format(path=path, stem=path.with_suffix(""))
        ) from exc
    if not isinstance(payload, Mapping) or not payload:
        raise WeightsUnavailableError(f"Checkpoint {path} holds no state dict of tensors")
    state = {str(k): v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsUnavailableError(f"Checkpoint {path} holds no tensors")
    return state


def create_classifier(
    architecture: str, num_classes: int, weights: str = "imagenet", **model_kwargs: Any
) -> tuple[torch.nn.Module, str]:
    """Create a timm classifier with a fresh ``num_classes`` head and the requested weights.

    Args:
        architecture: A timm model name.
        num_classes: Size of the new classification head.
        weights: ``"imagenet"`` (timm's pretrained weights, fetched or from the local cache),
            ``"random"`` (random initialisation, only for offline demos and tests), or a path to
            a local checkpoint file for air-gapped machines: ``.safetensors``, or a tensors-only
            ``.pth``/``.bin`` (see :func:`read_checkpoint`; pickled objects are refused).
        **model_kwargs: Extra keyword arguments for ``timm.create_model`` (for example
            ``img_size`` for a ViT trained at another resolution, see
            :func:`model_kwargs_for_size`).

    Returns:
        The model, and a description of where its weights came from (``imagenet``,
        ``random``, or ``checkpoint:<path>``), to record in MLflow.

    Raises:
        WeightsUnavailableError: If pretrained or checkpoint weights cannot be loaded. There is
            no fallback to random weights: that would silently change what the model means.
    """
    if weights == "random":
        logger.warning(RANDOM_WEIGHTS_WARNING, architecture)
        model = timm.create_model(
            architecture, pretrained=False, num_classes=num_classes, **model_kwargs
        )
        return model, "random"
    if weights == "imagenet":
        try:
            model = timm.create_model(
                architecture, pretrained=True, num_classes=num_classes, **model_kwargs
            )
        except Exception as exc:
            raise WeightsUnavailableError(
                f"Could not obtain ImageNet-pretrained weights for '{architecture}' ({exc}). "
                "On a machine without access to the Hugging Face hub, download the weights "
                "elsewhere and set the candidate's `weights` to the checkpoint path, or set "
                "`weights: random` to train on random features on purpose."
            ) from exc
        return model, "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"Checkpoint for '{architecture}' not found at {path}. `weights` must be "
            "'imagenet', 'random' or the path to an existing checkpoint file."
        )
    state = read_checkpoint(path)
    try:
        # The state dict goes through timm's own loading (its checkpoint filters, a new head
        # when the class count differs) but is never read from the file by timm, which would
        # unpickle it.
        model = timm.create_model(
            architecture,
            pretrained=True,
            num_classes=num_classes,
            pretrained_cfg_overlay={"state_dict": state},
            **model_kwargs,
        )
    except Exception as exc:
        raise WeightsUnavailableError(
            f"Checkpoint {path} could not be loaded into '{architecture}': {exc}"
        ) from exc
    # timm keeps the overlay in the model's config; the weights need not live there twice.
    model.pretrained_cfg.pop("state_dict", None)
    return model, f"checkpoint:{path}"


def freeze_backbone(model: torch.nn.Module) -> torch.nn.Module:
    """Freeze every parameter except the classification head (``get_classifier()``)."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in model.get_classifier().parameters():
        parameter.requires_grad_(True)
    return model


@torch.no_grad()
def extract_features(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Pooled pre-logit features: exactly what the head of ``model`` consumes."""
    return model.forward_head(model.forward_features(batch), pre_logits=True)


def model_kwargs_for_size(architecture: str, image_size: int | None) -> dict[str, Any]:
    """The ``timm.create_model`` keyword arguments needed to run ``architecture`` at a size.

    Convolutional networks pool globally and take any input size as they are; position-embedded
    models (ViT and relatives) must be built for their input size with ``img_size`` (timm then
    resamples pretrained position embeddings). Which kind a model is, is found out by asking
    timm rather than by matching names, so a new architecture in config needs no code change.

    Args:
        architecture: A timm model name.
        image_size: Side of the square input in pixels, or ``None`` for the model's default.

    Returns:
        ``{}`` when the model needs nothing, else ``{"img_size": image_size}``.
    """
    if image_size is None:
        return {}
    default = timm.get_pretrained_cfg(architecture)
    default_size = default.input_size[-1] if default is not None else None
    if default_size == int(image_size):
        return {}
    try:
        # Meta-device construction allocates nothing and only checks the signature.
        with torch.device("meta"):
            timm.create_model(architecture, pretrained=False, img_size=int(image_size))
    except TypeError:
        return {}
    return {"img_size": int(image_size)}
