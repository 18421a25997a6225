"""A Kedro dataset saved anywhere (``s3://`` included) and logged to the active MLflow run.

kedro-mlflow's ``MlflowArtifactDataset`` logs the wrapped dataset's file with
``mlflow.log_artifact(<its filepath>)``, which needs a local file: with an ``s3://`` filepath
it fails after the object is written. :class:`StoredArtifactDataset` takes the same
configuration (``dataset``, ``artifact_path``), saves through the wrapped dataset, then
downloads what was written to a temporary folder and logs that, under the same artifact path
and file names as kedro-mlflow would. Nothing is left on the local disk. The base catalogs use
it for every logged file, so the same entry works under ``data/`` and, with ``conf/s3``'s
``data_root``, on S3.
"""

from __future__ import annotations

import posixpath
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from kedro.io import AbstractDataset

from eyecatcher import storage


class StoredArtifactDataset(AbstractDataset[Any, Any]):
    """Save through ``dataset`` (a file or a folder, local or remote), then log it to MLflow.

    Examples:
        ```yaml
        registration_report:
          type: eyecatcher.datasets.stored_artifact_dataset.StoredArtifactDataset
          storage_options: ${globals:storage_options}
          artifact_path: registration
          dataset:
            type: json.JSONDataset
            filepath: ${globals:data_root}/08_reporting/registration_report.json
            fs_args: ${globals:storage_options}
        ```

    Args:
        dataset: The wrapped dataset's configuration (``type``, ``filepath`` or ``path``, ...),
            as for ``MlflowArtifactDataset``.
        artifact_path: Folder of the artifact in the run (``None``: the run's root).
        storage_options: fsspec arguments to read back what was written (non-secret;
            credentials come from the AWS chain).
        metadata: Kedro's free-form metadata (kedro-viz layers); not used here.

    Raises:
        ValueError: When the wrapped dataset has neither ``filepath`` nor ``path``.
    """

    def __init__(
        self,
        *,
        dataset: dict[str, Any],
        artifact_path: str | None = None,
        storage_options: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        config = dict(dataset)
        location = config.get("filepath") or config.get("path")
        if not location:
            raise ValueError(
                f"StoredArtifactDataset wraps a dataset with a filepath or path, got {config}."
            )
        self._location = str(location)
        self._is_folder = "filepath" not in config
        self._dataset = AbstractDataset.from_config("stored_artifact", config)
        self._artifact_path = artifact_path
        self._storage_options = dict(storage_options or {})
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {
            "location": self._location,
            "artifact_path": self._artifact_path,
            "dataset": type(self._dataset).__name__,
        }

    def load(self) -> Any:
        """What the wrapped dataset loads."""
        return self._dataset.load()

    def save(self, data: Any) -> None:
        """Save through the wrapped dataset; log the result if an MLflow run is active."""
        self._dataset.save(data)
        if mlflow.active_run() is None:  # tracking disabled for this pipeline
            return
        if self._is_folder:
            self._log_folder()
        else:
            with storage.local_copy(self._location, self._storage_options) as local:
                mlflow.log_artifact(str(local), self._artifact_path)

    def _log_folder(self) -> None:
        root = self._location.rstrip("/")
        _, root_path = storage.filesystem(root, self._storage_options)
        with tempfile.TemporaryDirectory(prefix="eyecatcher-artifact-") as scratch:
            folder = Path(scratch) / posixpath.basename(root_path)
            folder.mkdir()
            for uri in storage.list_files(root, self._storage_options):
                _, path = storage.filesystem(uri, self._storage_options)
                relative = posixpath.relpath(path, root_path)
                target = folder / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(storage.read_bytes(uri, self._storage_options))
            mlflow.log_artifact(str(folder), self._artifact_path)

    def _exists(self) -> bool:
        return self._dataset.exists()
