"""Fixtures shared by every suite: fake AWS credentials and a moto server on 127.0.0.1."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# Before anything imports boto3: no test may reach AWS or an instance metadata address.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "CirrusTest",
    }
)
os.environ.pop("AWS_PROFILE", None)

from cirrus.aws import AwsClients
from cirrus.config import ResourceNames, Settings
from cirrus.local.moto_process import MotoProcess, start_moto
from cirrus.local.resources import create_resources
from cirrus.storage.objects import ObjectStore


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoProcess]:
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture
def settings(moto_server: MotoProcess) -> Settings:
    """Settings for a new deployment on the shared moto server, so tests never share data."""
    names = ResourceNames(deployment=f"t{uuid.uuid4().hex[:12]}")
    return create_resources(Settings.for_names(names, endpoint_url=moto_server.endpoint_url))


@pytest.fixture
def clients(settings: Settings) -> AwsClients:
    return AwsClients(settings)


@pytest.fixture
def object_store(settings: Settings, clients: AwsClients) -> ObjectStore:
    return ObjectStore(clients.s3, settings.bucket, settings.kms_key_id)
