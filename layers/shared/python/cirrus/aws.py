"""boto3 clients for the endpoints and region of the settings, built when first asked for."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config

from cirrus.config import Settings

_CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=30,
    retries={"max_attempts": 4, "mode": "standard"},
    max_pool_connections=32,
)
# Lambda invocations forwarded from the DICOMweb function: API Gateway gives up after 29 s, so
# one retry at most, and it is safe because only retrieves are forwarded.
_INVOKE_CONFIG = _CLIENT_CONFIG.merge(Config(retries={"max_attempts": 2, "mode": "standard"}))


class AwsClients:
    """One boto3 client per service, created lazily and shared by threads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._session = boto3.session.Session(region_name=settings.region)

    def _client(self, service: str, endpoint_url: str | None = None) -> Any:
        return self._session.client(
            service,
            endpoint_url=endpoint_url or self._settings.endpoint_url,
            config=_CLIENT_CONFIG,
        )

    @cached_property
    def s3(self) -> Any:
        return self._client("s3")

    @cached_property
    def s3_presigner(self) -> Any:
        """An S3 client for presigned URLs, which must use SigV4 for SSE-KMS objects."""
        config = _CLIENT_CONFIG.merge(Config(signature_version="s3v4"))
        return self._session.client("s3", endpoint_url=self._settings.endpoint_url, config=config)

    @cached_property
    def sqs(self) -> Any:
        return self._client("sqs", self._settings.json_endpoint)

    @cached_property
    def events(self) -> Any:
        """An EventBridge client whose retries ``cirrus.events.publisher`` makes itself."""
        config = _CLIENT_CONFIG.merge(
            Config(
                connect_timeout=2,
                read_timeout=5,
                retries={"total_max_attempts": 1, "mode": "standard"},
            )
        )
        return self._session.client(
            "events", endpoint_url=self._settings.json_endpoint, config=config
        )

    @cached_property
    def kms(self) -> Any:
        return self._client("kms")

    @cached_property
    def lambda_(self) -> Any:
        return self._session.client(
            "lambda", endpoint_url=self._settings.endpoint_url, config=_INVOKE_CONFIG
        )
