"""How we talk to Rekognition: credentials, the retry policy, and what each error means."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

logger = logging.getLogger(__name__)

#: Errors about one image: recorded with their code, never retried.
IMAGE_ERROR_CODES: frozenset[str] = frozenset(
    {
        "InvalidImageFormatException",
        "ImageTooLargeException",
        "InvalidS3ObjectException",
        "InvalidParameterException",
        "AccessDeniedException",
    }
)

#: Errors botocore's standard retry mode retries with backoff; if they outlast the attempts the
#: image stays unlabelled (not cached) and the run fails at the end so a re-run can retry it.
TRANSIENT_ERROR_CODES: frozenset[str] = frozenset(
    {"ThrottlingException", "ProvisionedThroughputExceededException", "InternalServerError"}
)

#: Errors that say the credentials themselves are wrong: every further call would fail too.
CREDENTIAL_ERROR_CODES: frozenset[str] = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "ExpiredToken",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
    }
)


class RekognitionCredentialsError(RuntimeError):
    """Credentials are missing or rejected; raised before (or instead of) sending any image."""


class OfflineModeError(RuntimeError):
    """Something tried to call Rekognition from an offline configuration."""


@dataclass(frozen=True)
class RekognitionEndpoint:
    """Where and how to call Rekognition, or the statement that we must not (offline).

    Attributes:
        mode: ``"live"`` calls the API; ``"offline"`` serves from the cache only.
        region_name: AWS region (S3 objects must live in the same region).
        endpoint_url: Override of the service URL (a local stand-in in tests and benchmarks).
        credentials: ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``,
            ``profile_name``; missing keys fall back to boto3's default chain.
        max_attempts: Total attempts per request in botocore's ``standard`` retry mode.
        connect_timeout: Seconds to open a connection.
        read_timeout: Seconds to wait for an answer.
    """

    mode: str = "offline"
    region_name: str = "us-east-1"
    endpoint_url: str | None = None
    credentials: dict[str, Any] = field(default_factory=dict, repr=False)
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in {"live", "offline"}:
            raise ValueError(f"mode must be 'live' or 'offline', got {self.mode!r}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    @property
    def offline(self) -> bool:
        """Whether this endpoint forbids API calls."""
        return self.mode == "offline"

    def _session(self) -> boto3.session.Session:
        creds = {
            key: value
            for key, value in self.credentials.items()
            if value not in (None, "", "null")
            and key
            in {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "profile_name"}
        }
        try:
            return boto3.session.Session(region_name=self.region_name, **creds)
        except botocore.exceptions.ProfileNotFound as exc:
            raise RekognitionCredentialsError(
                f"AWS profile not found: {exc}. Set AWS_PROFILE to an existing profile or give "
                "keys in conf/local/credentials.yml (see credentials.yml.template)."
            ) from exc

    def check_credentials(self) -> str:
        """Resolve credentials once, without any network call to AWS.

        Returns:
            Where botocore found the credentials (``env``, ``shared-credentials-file``, ...).

        Raises:
            OfflineModeError: In offline mode.
            RekognitionCredentialsError: When no credentials can be resolved, or they cannot be
                refreshed (e.g. an expired SSO session).
        """
        if self.offline:
            raise OfflineModeError("offline mode: no credentials are needed or checked")
        session = self._session()
        try:
            credentials = session.get_credentials()
            frozen = credentials.get_frozen_credentials() if credentials is not None else None
        except botocore.exceptions.BotoCoreError as exc:
            raise RekognitionCredentialsError(
                f"AWS credentials could not be resolved: {exc}"
            ) from exc
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            raise RekognitionCredentialsError(
                "No AWS credentials found, so no image was sent. Provide them through "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role, or "
                "conf/local/credentials.yml (copy credentials.yml.template)."
            )
        return str(getattr(credentials, "method", "unknown"))

    def client(self, max_pool_connections: int = 10) -> Any:
        """Create a thread-safe Rekognition client with the explicit retry policy.

        Args:
            max_pool_connections: HTTP connection pool size; at least the worker count, or
                workers queue for connections and concurrency is silently lost.

        Returns:
            A ``botocore`` Rekognition client.

        Raises:
            OfflineModeError: In offline mode.
        """
        if self.offline:
            raise OfflineModeError(
                "offline mode forbids Rekognition calls; use the aws environment to label "
                "new images"
            )
        config = Config(
            region_name=self.region_name,
            # `total_max_attempts` counts the first try; botocore's `max_attempts` key would
            # count retries only (one more request than configured).
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=max(1, max_pool_connections),
        )
        return self._session().client("rekognition", endpoint_url=self.endpoint_url, config=config)


def error_code(exc: BaseException) -> str:
    """Return the API error code of a botocore exception, or the exception's class name."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def error_message(exc: BaseException) -> str:
    """Return the API error message of a botocore exception, or ``str(exc)``."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Message", str(exc)))
    return str(exc)
