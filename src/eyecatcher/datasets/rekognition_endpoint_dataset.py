"""A Kedro dataset that puts the Rekognition endpoint's settings in the catalog.

It loads a :class:`~eyecatcher.rekognition.client.RekognitionEndpoint` (mode, region, retries,
timeouts, credentials from ``credentials.yml``) for the labelling node; nothing connects here
and nothing is saved.
"""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError

from eyecatcher.rekognition.client import RekognitionEndpoint


class RekognitionEndpointDataset(AbstractDataset[None, RekognitionEndpoint]):
    """Loads a :class:`~eyecatcher.rekognition.client.RekognitionEndpoint` from config.

    Examples:
        As in ``conf/aws/catalog_labelling.yml``:

        ```yaml
        rekognition_endpoint:
          type: eyecatcher.datasets.rekognition_endpoint_dataset.RekognitionEndpointDataset
          mode: live
          credentials: aws
          max_attempts: 8
        ```

    Args:
        mode: ``live`` or ``offline``.
        region_name: AWS region; the ``region_name`` in ``credentials`` wins when set.
        endpoint_url: Service URL override.
        max_attempts: Attempts per request (botocore ``standard`` retry mode).
        connect_timeout: Seconds.
        read_timeout: Seconds.
        credentials: Resolved from ``conf/*/credentials.yml`` by Kedro.
        metadata: Free-form metadata, ignored.
    """

    def __init__(
        self,
        *,
        mode: str = "offline",
        region_name: str | None = None,
        endpoint_url: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        credentials = dict(credentials or {})
        region = credentials.pop("region_name", None) or region_name or "us-east-1"
        self._endpoint = RekognitionEndpoint(
            mode=mode,
            region_name=str(region),
            endpoint_url=endpoint_url or None,
            credentials=credentials,
            max_attempts=int(max_attempts),
            connect_timeout=float(connect_timeout),
            read_timeout=float(read_timeout),
        )
        self.metadata = metadata

    def load(self) -> RekognitionEndpoint:
        """Return the endpoint description (no connection is made here)."""
        return self._endpoint

    def save(self, data: None) -> None:
        """Refuse: configuration only."""
        raise DatasetError("RekognitionEndpointDataset is load-only")

    def _describe(self) -> dict[str, Any]:
        # Never describe the credentials: this ends up in logs.
        return {
            "mode": self._endpoint.mode,
            "region_name": self._endpoint.region_name,
            "endpoint_url": self._endpoint.endpoint_url,
            "max_attempts": self._endpoint.max_attempts,
        }
