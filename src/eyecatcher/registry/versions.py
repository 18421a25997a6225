"""The registry's write side: what registration reads and changes on one registered model.

Versions, aliases, tags, the accuracy floor, each version's seen-image list, and promotion
(the champion re-read and moved under :mod:`~eyecatcher.registry.lock`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from eyecatcher import mlflow_log
from eyecatcher.registry.client import registry_client
from eyecatcher.registry.lock import PromotionLock

CHAMPION = "champion"
CHALLENGER = "challenger"
# The registered model's description in the MLflow UI, where a path to a file of the repository
# (docs/registry.md) leads nowhere: what a version is, said in place.
MODEL_DESCRIPTION = (
    "EyeCatcher explicit-image moderation model (Kedro + MLflow). A version is registered only "
    "when its served model (int8 or fp32) passes the gate on the test split: test accuracy, "
    "unsafe recall and false-positive rate at its calibrated operating threshold, a paired "
    "comparison with the champion and an accuracy floor that never moves down. Aliases: "
    "`champion` is served, `challenger` is a registered candidate not yet promoted. Each "
    "version's description links to its model card (data, metrics with intervals, lineage, "
    "limitations)."
)
FLOOR_TAG = "accuracy_floor"
FLOOR_SOURCE_TAG = "accuracy_floor_source"
#: Read back by eyecatcher.monitoring.populations (the same tag name).
SEEN_IMAGES_TAG = "seen_images_uri"


class ChampionMovedError(RuntimeError):
    """The champion changed while this run was gating: its comparison is out of date."""


class RecordedFloor(NamedTuple):
    """The accuracy floor as the registered model records it (value, which promotion set it)."""

    value: float
    source: str


class FloorLike(Protocol):
    """Anything with a floor's ``value`` and ``source`` (the gate's ``Floor``)."""

    value: float
    source: str


def _is(exc: MlflowException, code: int) -> bool:
    return exc.error_code == ErrorCode.Name(code)


class Registry:
    """One registered model in the MLflow Model Registry.

    Args:
        model_name: The registered model's name.
        client: An ``MlflowClient`` (by default one on the current URIs, made explicit).
    """

    def __init__(self, model_name: str, client: MlflowClient | None = None) -> None:
        self.model_name = model_name
        self.client = client or registry_client()

    def champion(self) -> ModelVersion | None:
        """The version the ``champion`` alias points at, read now (``None`` if none)."""
        try:
            return self.client.get_model_version_by_alias(self.model_name, CHAMPION)
        except MlflowException as exc:
            # No registered model yet: RESOURCE_DOES_NOT_EXIST. A model without the alias: the
            # SQL store answers INVALID_PARAMETER_VALUE "Registered model alias ... not found".
            if _is(exc, RESOURCE_DOES_NOT_EXIST) or (
                _is(exc, INVALID_PARAMETER_VALUE) and f"alias {CHAMPION} not found" in exc.message
            ):
                return None
            raise

    def floor(self) -> RecordedFloor | None:
        """The accuracy floor recorded on the registered model, if any."""
        try:
            tags = self.client.get_registered_model(self.model_name).tags
        except MlflowException as exc:
            if _is(exc, RESOURCE_DOES_NOT_EXIST):
                return None
            raise
        if FLOOR_TAG not in tags:
            return None
        return RecordedFloor(float(tags[FLOOR_TAG]), tags.get(FLOOR_SOURCE_TAG, "recorded"))

    def ensure_model(self) -> None:
        """Create the registered model if it does not exist yet."""
        try:
            self.client.create_registered_model(
                self.model_name,
                description=MODEL_DESCRIPTION,
            )
        except MlflowException as exc:
            if not _is(exc, RESOURCE_ALREADY_EXISTS):
                raise

    def create_version(
        self, *, run_id: str, tags: Mapping[str, str], log: Callable[[str, str], None]
    ) -> ModelVersion:
        """Create a version, then ``log(model_id, version)`` the model into it.

        The version exists first so its number can be written into the served model; if
        logging fails (Ctrl-C included) the half-made version is deleted, the error kept.
        """
        self.ensure_model()
        logged = mlflow.initialize_logged_model(
            name="served_model",
            source_run_id=run_id,
            experiment_id=self.client.get_run(run_id).info.experiment_id,
        )
        version = self.client.create_model_version(
            self.model_name,
            source=f"models:/{logged.model_id}",
            run_id=run_id,
            tags=mlflow_log.safe_tags(tags),
            model_id=logged.model_id,
        )
        try:
            log(logged.model_id, str(version.version))
        except BaseException:
            self.client.delete_model_version(self.model_name, version.version)
            mlflow.finalize_logged_model(logged.model_id, "FAILED")
            raise
        return version

    def tag_version(self, version: str, key: str, value: Any) -> None:
        """Set one tag on a version (redacted, stringified, cut to MLflow's limit)."""
        safe = mlflow_log.safe_tags({key: value})[key]
        self.client.set_model_version_tag(self.model_name, version, key, safe)

    def set_challenger(self, version: str) -> None:
        """Point ``challenger`` at ``version`` (for people; staging uses the pinned version)."""
        self.client.set_registered_model_alias(self.model_name, CHALLENGER, version)

    def record_seen_images(self, version: str, seen: list[str]) -> str:
        """Log the version's seen-image hashes to the active run and tag the version with it."""
        artifact = f"registration/seen_images_v{version}.json"
        mlflow_log.log_dict({"sha256": seen, "splits": ["train", "validation"]}, artifact)
        uri = f"runs:/{mlflow.active_run().info.run_id}/{artifact}"
        self.tag_version(version, SEEN_IMAGES_TAG, uri)
        return uri

    @contextmanager
    def promotion_lock(
        self, holder: str, *, wait_s: float, stale_s: float
    ) -> Iterator[PromotionLock]:
        """Hold the model's promotion lock: at most one run re-reads and moves the champion.

        See :mod:`eyecatcher.registry.lock` for how it is taken, renewed and taken over.

        Raises:
            TimeoutError: If another run holds the lock (renewing it) for more than ``wait_s``.
        """
        lock = PromotionLock(self.client, self.model_name, holder, stale_s)
        lock.acquire(wait_s)
        try:
            yield lock
        finally:
            lock.release()

    def promote(
        self,
        version: str,
        *,
        expected_champion: str | None,
        floor: FloorLike | None,
        lock: PromotionLock | None = None,
    ) -> None:
        """Move ``champion`` to ``version`` if the champion is still ``expected_champion``.

        Call inside :meth:`promotion_lock` (pass its lock: the holder is re-checked right
        before the alias moves). Also records the raised floor on the registered model and
        removes ``challenger`` if it still points at this version.

        Raises:
            ChampionMovedError: If the champion changed since the gate compared against it.
            LockLostError: If this run no longer holds the lock.
        """
        current = self.champion()
        now = None if current is None else str(current.version)
        if now != expected_champion:
            raise ChampionMovedError(
                f"the champion moved from {_v(expected_champion)} to {_v(now)} while this run "
                "was gating (another registration finished first); its comparison is out of "
                "date, so the champion was not moved"
            )
        if lock is not None:
            lock.ensure_held()
        self.client.set_registered_model_alias(self.model_name, CHAMPION, version)
        if floor is not None:
            self.client.set_registered_model_tag(self.model_name, FLOOR_TAG, repr(floor.value))
            self.client.set_registered_model_tag(self.model_name, FLOOR_SOURCE_TAG, floor.source)
        aliases = self.client.get_registered_model(self.model_name).aliases
        if str(aliases.get(CHALLENGER)) == str(version):
            self.client.delete_registered_model_alias(self.model_name, CHALLENGER)


def _v(version: str | None) -> str:
    return "no champion" if version is None else f"v{version}"
