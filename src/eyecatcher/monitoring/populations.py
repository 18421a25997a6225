"""Honest populations: which scored images a model saw in training, exactly or nearly.

A model measured on its own training images looks better than it is: a human verdict becomes a
training label, and batch scoring may read the training folder. So every monitoring number of
a version (disagreement with humans, online metrics, drift) and the paired comparison with the
champion leave out the images the model trained or was calibrated on (train + validation):

* **exact**: the same bytes (sha256);
* **near-duplicate**: a 64-bit pHash within the split's own ``max_distance`` of a training
  image's pHash (the distance near-duplicate grouping used when the version's split was made,
  so "near" means what it meant when train and test were kept apart).

Registration records the training population of each version (its sha256 and pHash list and
the distance) as a run artifact, ``registration/training_population_v<N>.json``, and tags the
version ``training_population_uri``. Check time reads it back from the tag.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from eyecatcher import mlflow_log
from eyecatcher.fingerprints import SEEN_SPLITS
from eyecatcher.images import decode_image
from eyecatcher.near_duplicates import (
    HASH_DECODE_MIN_SIDE,
    _close_pairs,
    hashes_to_uint64,
    perceptual_hash,
)
from eyecatcher.storage import read_bytes

logger = logging.getLogger(__name__)

#: Version tag naming the training-population artifact.
TRAINING_POPULATION_TAG = "training_population_uri"
#: Older versions record only the seen sha256 list (``Registry.record_seen_images``).
SEEN_IMAGES_TAG = "seen_images_uri"
#: Values of the ``seen_in_training`` column.
EXACT, NEAR = "exact", "near_duplicate"


class TrainingPopulationError(ValueError):
    """A training-population record is missing what it must hold."""


@dataclass(frozen=True)
class TrainingPopulation:
    """The images one registered version saw in training.

    Attributes:
        sha256: The seen images' sha256.
        phash: Their 64-bit pHashes, as 16 hex digits (empty when not recorded).
        max_distance: The split's near-duplicate distance in bits; ``None`` when the record
            holds no pHashes (then only exact copies are recognised, and reports say so).
        source: Where the record came from, for reports.
    """

    sha256: frozenset[str]
    phash: tuple[str, ...] = ()
    max_distance: int | None = None
    source: str = ""
    _hashes: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_distance is not None and not self.phash:
            raise TrainingPopulationError("a near-duplicate distance needs the pHash list")
        object.__setattr__(self, "_hashes", np.unique(hashes_to_uint64(list(self.phash))))

    @property
    def checks_near_duplicates(self) -> bool:
        """Whether near-duplicates can be recognised (pHashes and a distance recorded)."""
        return self.max_distance is not None

    @classmethod
    def from_split(
        cls,
        split_manifest: pd.DataFrame,
        image_phashes: pd.DataFrame | None,
        split_summary: Mapping[str, Any] | None,
    ) -> TrainingPopulation:
        """The population a model built on ``split_manifest`` saw (train + validation).

        Args:
            split_manifest: The split (``sha256``, ``split``).
            image_phashes: Splitting's pHash table (``sha256``, ``phash``), or ``None``.
            split_summary: Splitting's summary (``config.near_duplicate_max_distance``, the
                distance the split used), or ``None``.

        Returns:
            The population; without pHashes or the split's distance, exact copies only.

        Raises:
            TrainingPopulationError: If the pHash table lacks a seen image (stale table).
        """
        seen = split_manifest[split_manifest["split"].isin(SEEN_SPLITS)]
        sha = sorted(set(seen["sha256"].astype(str)))
        distance = ((split_summary or {}).get("config") or {}).get("near_duplicate_max_distance")
        if image_phashes is None or distance is None:
            missing = "image_phashes" if image_phashes is None else "the split's distance"
            return cls(frozenset(sha), source=f"split manifest (exact copies only: no {missing})")
        lookup = image_phashes.drop_duplicates("sha256").set_index("sha256")["phash"]
        absent = [s for s in sha if s not in lookup.index]
        if absent:
            raise TrainingPopulationError(
                f"{len(absent)} seen image(s) have no pHash in image_phashes (stale table? "
                f"re-run the splitting pipeline), e.g. {absent[0][:12]}…"
            )
        phashes = tuple(str(lookup[s]) for s in sha)
        return cls(frozenset(sha), phashes, int(distance), "split manifest and image_phashes")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the artifact registration logs)."""
        ordered = sorted(self.sha256)
        return {
            "sha256": ordered,
            "phash": list(self.phash),
            "near_duplicate_max_distance": self.max_distance,
            "splits": list(SEEN_SPLITS),
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any], source: str) -> TrainingPopulation:
        """Rebuild a population written by :meth:`to_dict` (or a seen-images list)."""
        if "sha256" not in payload:
            raise TrainingPopulationError(f"{source} has no sha256 list")
        distance = payload.get("near_duplicate_max_distance")
        return cls(
            frozenset(str(s) for s in payload["sha256"]),
            tuple(str(h) for h in payload.get("phash") or ()),
            None if distance is None else int(distance),
            source,
        )

    def near(self, phashes: pd.Series) -> np.ndarray:
        """Whether each pHash (16 hex digits; missing values are never near) is within the
        distance of a training pHash."""
        result = np.zeros(len(phashes), dtype=bool)
        if not self.checks_near_duplicates or self._hashes.size == 0:
            return result
        present = phashes.notna().to_numpy()
        if not present.any():
            return result
        query = hashes_to_uint64(phashes[present].astype(str).tolist())
        # The pigeonhole index near-duplicate grouping uses: only hashes sharing one of
        # ``max_distance + 1`` chunks are compared, not every query with every training hash.
        values = np.unique(np.concatenate([self._hashes, query]))
        in_training = np.isin(values, self._hashes)
        near_value = in_training.copy()  # an equal pHash is at distance 0
        first, second = _close_pairs(values, int(self.max_distance))
        near_value[first[in_training[second]]] = True
        near_value[second[in_training[first]]] = True
        hits = near_value[np.searchsorted(values, query)]
        result[present] = hits
        return result


def record_training_population(
    client: mlflow.MlflowClient, model_name: str, version: str, population: TrainingPopulation
) -> str:
    """Log ``population`` to the active run and tag the version with its URI.

    Returns:
        The artifact's ``runs:/`` URI.
    """
    artifact = f"registration/training_population_v{version}.json"
    mlflow_log.log_dict(population.to_dict(), artifact)
    uri = f"runs:/{mlflow.active_run().info.run_id}/{artifact}"
    client.set_model_version_tag(model_name, version, TRAINING_POPULATION_TAG, uri)
    return uri


def load_training_population(tags: Mapping[str, str]) -> TrainingPopulation | None:
    """The population a version's tags point at (``None`` when it records none).

    A version registered before populations were recorded has only its seen sha256 list:
    that is used, and near-duplicates are not recognised (the population's ``source`` says so).
    """
    uri = tags.get(TRAINING_POPULATION_TAG)
    if uri:
        return TrainingPopulation.from_dict(mlflow.artifacts.load_dict(uri), uri)
    uri = tags.get(SEEN_IMAGES_TAG)
    if uri:
        payload = mlflow.artifacts.load_dict(uri)
        return TrainingPopulation.from_dict(
            {"sha256": payload["sha256"]}, f"{uri} (exact copies only: no pHashes recorded)"
        )
    return None


def phash_of(uri: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The pHash of the image at ``uri``, computed as splitting computes it."""
    data = read_bytes(uri, storage_options)
    return perceptual_hash(decode_image(data, draft_min_side=HASH_DECODE_MIN_SIDE))


def mark_seen(
    frame: pd.DataFrame,
    population: TrainingPopulation | None,
    *,
    uri_column: str,
    known_phashes: pd.DataFrame | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Add ``seen_in_training`` (``exact``, ``near_duplicate`` or ``None``) to each row.

    Rows not seen exactly (and not failed: an ``error`` column set) get a pHash: from
    ``known_phashes`` (``sha256``, ``phash``) when it has the image, else computed from
    ``uri_column``. An image that cannot be read keeps
    ``None`` and its reason in ``phash_error`` (counted by :func:`population_counts`).

    Args:
        frame: Rows with ``sha256`` and ``uri_column``.
        population: The model's training population (``None``: nothing is known, every row
            is kept and ``population_counts`` says so).
        uri_column: Where each image can be read.
        known_phashes: Already computed pHashes, or ``None``.
        storage_options: fsspec options for ``s3://`` URIs.

    Returns:
        A copy of ``frame`` with ``seen_in_training`` and ``phash_error``.
    """
    out = frame.copy()
    out["seen_in_training"] = None
    out["phash_error"] = None
    if population is None or out.empty:
        return out
    exact = out["sha256"].astype(str).isin(population.sha256).to_numpy()
    out.loc[exact, "seen_in_training"] = EXACT
    if not population.checks_near_duplicates:
        return out
    # A row that failed to score (its ``error`` set) decides nothing and is never monitored:
    # its image is not read again for a pHash.
    failed = out["error"].notna().to_numpy() if "error" in out.columns else np.zeros(len(out), bool)
    lookup: dict[str, str] = {}
    if known_phashes is not None and not known_phashes.empty:
        lookup = dict(zip(known_phashes["sha256"].astype(str), known_phashes["phash"], strict=True))
    phashes: list[str | None] = []
    for index, (sha, uri) in enumerate(
        zip(out["sha256"].astype(str), out[uri_column], strict=True)
    ):
        if exact[index] or failed[index]:
            phashes.append(None)
        elif sha in lookup:
            phashes.append(str(lookup[sha]))
        else:
            try:
                phashes.append(phash_of(str(uri), storage_options))
            except Exception as exc:  # one unreadable image must not hide the others
                phashes.append(None)
                out.iat[index, out.columns.get_loc("phash_error")] = f"{type(exc).__name__}: {exc}"
    near = population.near(pd.Series(phashes, index=out.index, dtype=object)) & ~exact
    out.loc[near, "seen_in_training"] = NEAR
    return out


def population_counts(
    marked: pd.DataFrame, population: TrainingPopulation | None
) -> dict[str, Any]:
    """How many rows were left out as training images, and how the check was made."""
    seen = marked["seen_in_training"] if "seen_in_training" in marked else pd.Series(dtype=object)
    errors = marked["phash_error"] if "phash_error" in marked else pd.Series(dtype=object)
    return {
        "rows": len(marked),
        "kept": int(seen.isna().sum()) if len(seen) else len(marked),
        "excluded_exact": int((seen == EXACT).sum()),
        "excluded_near_duplicate": int((seen == NEAR).sum()),
        "near_duplicate_unchecked": int(errors.notna().sum()),
        "near_duplicate_max_distance": None if population is None else population.max_distance,
        "training_population": (
            "not recorded: nothing could be excluded" if population is None else population.source
        ),
    }


def unseen(marked: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`mark_seen`'s output the model never saw."""
    if "seen_in_training" not in marked:
        return marked
    return marked[marked["seen_in_training"].isna()].reset_index(drop=True)
