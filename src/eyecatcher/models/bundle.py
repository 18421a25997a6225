"""The trained model as one portable object: architecture, classes, preprocessing, weights.

A :class:`ClassifierBundle` is what training produces, what quantization benchmarks, and what
registration packages for serving. Rebuilding the network from it needs no download: the full
state dict (backbone included, which matters for random-initialised demo backbones) travels
with it.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch

from eyecatcher.storage import read_bytes, write_atomic


@dataclass
class ClassifierBundle:
    """A trained image classifier and everything needed to use it identically elsewhere.

    Attributes:
        architecture: timm model name.
        classes: Class names in logit order.
        data_config: Preprocessing config (see :func:`eyecatcher.preprocessing.data_config_for`).
        weights_source: Where the backbone weights came from (``imagenet``, ``random``,
            ``checkpoint:<path>``).
        state_dict: The full model state dict (backbone and trained head).
        safe_class: The class that means "nothing to moderate"; every other class is unsafe.
        metadata: Free-form facts about training (candidate name, seed, epochs, ...).
        model_kwargs: Extra ``timm.create_model`` arguments the network was built with (for
            example ``img_size`` for a ViT at a non-default resolution); empty for most models.
    """

    architecture: str
    classes: list[str]
    data_config: dict[str, Any]
    weights_source: str
    state_dict: dict[str, torch.Tensor]
    safe_class: str = "safe"
    metadata: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        *,
        architecture: str,
        classes: list[str],
        data_config: dict[str, Any],
        weights_source: str,
        safe_class: str = "safe",
        metadata: dict[str, Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> ClassifierBundle:
        """Capture a trained timm model (its weights are copied to CPU)."""
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return cls(
            architecture=architecture,
            classes=list(classes),
            data_config=dict(data_config),
            weights_source=weights_source,
            state_dict=state,
            safe_class=safe_class,
            metadata=dict(metadata or {}),
            model_kwargs=dict(model_kwargs or {}),
        )

    def build_model(self) -> torch.nn.Module:
        """Rebuild the network in eval mode on CPU, without fetching any weights."""
        model = timm.create_model(
            self.architecture,
            pretrained=False,
            num_classes=len(self.classes),
            **self.model_kwargs,
        )
        model.load_state_dict(self.state_dict)
        return model.eval()

    @property
    def unsafe_indices(self) -> list[int]:
        """Logit indices of every class other than :attr:`safe_class`."""
        return [i for i, name in enumerate(self.classes) if name != self.safe_class]

    def to_bytes(self) -> bytes:
        """The bundle serialised with ``torch.save`` (tensors plus plain Python metadata)."""
        buffer = io.BytesIO()
        torch.save(asdict(self), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ClassifierBundle:
        """Read a bundle serialised by :meth:`to_bytes` (safe ``weights_only`` loading)."""
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls(**payload)

    def save(self, path: str | Path) -> None:
        """Write the bundle to a path or URL, atomically (see :mod:`eyecatcher.storage`)."""
        write_atomic(str(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> ClassifierBundle:
        """Read a bundle file written by :meth:`save` (safe ``weights_only`` loading)."""
        return cls.from_bytes(read_bytes(str(path)))
