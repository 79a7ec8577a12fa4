"""Fixtures of the gateway suite: one deployment and one running gateway for all its tests.

Creating a deployment on moto takes most of a second, and stopping a gateway waits up to
0.5 s for pynetdicom's accept loop, so the tests share both. Tests that store an instance read
back its own object key, and tests that expect nothing stored compare listings.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cirrus.aws import AwsClients
from cirrus.config import ResourceNames, Settings
from cirrus.gateway.server import Gateway
from cirrus.local.moto_process import MotoProcess
from cirrus.local.resources import create_resources
from cirrus.storage.objects import ObjectStore
from tests.gateway.gateways import start_gateway


@pytest.fixture(scope="package")
def gateway_settings(moto_server: MotoProcess) -> Settings:
    names = ResourceNames(deployment=f"g{uuid.uuid4().hex[:12]}")
    return create_resources(Settings.for_names(names, endpoint_url=moto_server.endpoint_url))


@pytest.fixture(scope="package")
def archive(gateway_settings: Settings) -> ObjectStore:
    clients = AwsClients(gateway_settings)
    return ObjectStore(clients.s3, gateway_settings.bucket, gateway_settings.kms_key_id)


@pytest.fixture(scope="package")
def gateway(gateway_settings: Settings, archive: ObjectStore) -> Iterator[Gateway]:
    with start_gateway(gateway_settings, archive) as running:
        yield running
