"""The on-disk feature cache: its key and its store.

Features are computed once per image per view and stored under a key made of everything that
changes them:

* the architecture, the weights source, the random-initialisation seed and a fingerprint of the
  backbone's weights (so a new checkpoint or a new timm default invalidates the entry),
* the preprocessing config (input size, mean, std, interpolation) and, for augmented views,
  the augmentation settings, the augmentation seed and the view index,
* the image's sha256 (its identity everywhere in the project), and the timm version,
* the runtime that computed the vectors (``torch``, ``onnxruntime`` running the backbone's
  exported graph: see :mod:`eyecatcher.features.runtimes.onnx_graph`, or ``torch_bf16``:
  PyTorch under bfloat16 autocast, :mod:`eyecatcher.features.runtimes.bf16`).

Layout: ``<root>/<architecture>/<key digest>/key.json`` (the key in full, for humans) and one
``.npy`` file per image below it; ``<root>`` is a local folder or an ``s3://`` prefix. Entries
are written atomically (:func:`eyecatcher.storage.write_atomic`), so an interrupted run keeps
everything it finished and never leaves a half-written file. The catalog declares the folder
with :class:`~eyecatcher.datasets.feature_cache_dataset.FeatureCacheDataset`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from eyecatcher import storage
from eyecatcher.features.runtimes import FEATURE_RUNTIMES
from eyecatcher.features.views import ViewSpec
from eyecatcher.storage import StorageOptions

logger = logging.getLogger(__name__)

#: Bump when the stored representation changes (dtype, layout, what is extracted).
CACHE_FORMAT_VERSION = 1


def backbone_fingerprint(model: torch.nn.Module) -> str:
    """A sha256 over every backbone tensor (the classification head excluded).

    Args:
        model: A timm model.

    Returns:
        Hex digest that changes whenever any backbone weight or buffer changes.
    """
    head_tensors = {id(t) for t in model.get_classifier().state_dict(keep_vars=True).values()}
    digest = hashlib.sha256()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in head_tensors:
            continue
        data = tensor.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(data.dtype).encode())
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class BackboneKey:
    """The model half of a cache key.

    Attributes:
        architecture: timm model name.
        weights_source: ``imagenet``, ``random`` or ``checkpoint:<path>``.
        weights_seed: Seed of the random initialisation (part of the key for random weights).
        fingerprint: :func:`backbone_fingerprint` of the backbone.
        data_config: Preprocessing config the inputs were made with.
        model_kwargs: Extra ``timm.create_model`` arguments (``img_size``).
        runtime: What computes the vectors: ``torch`` (eager PyTorch), ``onnxruntime`` (the
            exported graph of :mod:`eyecatcher.models.feature_graph`) or ``torch_bf16``
            (bfloat16 autocast, :mod:`eyecatcher.models.bf16_features`). They agree within
            those modules' tolerances, not bit for bit, so each has its own cache entries.
    """

    architecture: str
    weights_source: str
    weights_seed: int | None
    fingerprint: str
    data_config: Mapping[str, Any]
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    runtime: str = "torch"

    def __post_init__(self) -> None:
        """A known runtime."""
        if self.runtime not in FEATURE_RUNTIMES:
            raise ValueError(
                f"feature runtime must be one of {list(FEATURE_RUNTIMES)}, got {self.runtime!r}"
            )

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable form of the key."""
        return {
            "format_version": CACHE_FORMAT_VERSION,
            "timm_version": timm.__version__,
            "architecture": self.architecture,
            "weights_source": self.weights_source,
            "weights_seed": self.weights_seed if self.weights_source == "random" else None,
            "backbone_fingerprint": self.fingerprint,
            "data_config": json.loads(json.dumps(dict(self.data_config), sort_keys=True)),
            "model_kwargs": dict(sorted(self.model_kwargs.items())),
            "runtime": self.runtime,
        }


def cache_key(backbone: BackboneKey, view: ViewSpec) -> tuple[dict[str, Any], str]:
    """The full key of one (backbone, view) and its digest.

    Returns:
        The key as a dict and the sha256 hex digest of its canonical JSON.
    """
    key = {**backbone.describe(), **view.describe()}
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return key, hashlib.sha256(text.encode()).hexdigest()


class FeatureCache:
    """A folder (local or ``s3://``) of cached feature vectors, one ``.npy`` file per key and image.

    Args:
        root: Cache folder or prefix (``data/04_feature/feature_cache`` in the catalog).
        storage_options: fsspec filesystem arguments for a remote ``root`` (and credentials,
            when the catalog passes them).
    """

    def __init__(self, root: str | Path, storage_options: StorageOptions | None = None) -> None:
        self.storage_options = dict(storage_options or {})
        self.root: Path | str = Path(root) if storage.is_local(str(root)) else str(root).rstrip("/")
        self._written_keys: set[str] = set()

    def _entry_dir(self, key: Mapping[str, Any], digest: str) -> str:
        return storage.join(str(self.root), str(key["architecture"]), digest[:24])

    def path(self, key: Mapping[str, Any], digest: str, sha256: str) -> Path | str:
        """Where the vector of image ``sha256`` under ``key`` lives (a URL for a remote cache)."""
        uri = storage.join(self._entry_dir(key, digest), sha256[:2], f"{sha256}.npy")
        return Path(uri) if isinstance(self.root, Path) else uri

    def get(self, key: Mapping[str, Any], digest: str, sha256: str) -> np.ndarray | None:
        """The cached vector, or ``None`` on a miss (a corrupt file counts as a miss)."""
        uri = str(self.path(key, digest, sha256))
        try:
            data = storage.read_bytes(uri, self.storage_options)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("Ignoring unreadable feature cache entry %s (%s)", uri, exc)
            return None
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable feature cache entry %s (%s)", uri, exc)
            return None

    def put(self, key: Mapping[str, Any], digest: str, sha256: str, vector: np.ndarray) -> None:
        """Store ``vector`` atomically (:func:`eyecatcher.storage.write_atomic`)."""
        key_uri = storage.join(self._entry_dir(key, digest), "key.json")
        if key_uri not in self._written_keys:
            if not storage.exists(key_uri, self.storage_options):
                text = json.dumps(key, indent=2, sort_keys=True).encode()
                storage.write_atomic(key_uri, text, self.storage_options)
            self._written_keys.add(key_uri)
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(vector, dtype=np.float32), allow_pickle=False)
        storage.write_atomic(
            str(self.path(key, digest, sha256)), buffer.getvalue(), self.storage_options
        )
