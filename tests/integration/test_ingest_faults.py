"""Ingest under DynamoDB faults, injected by an HTTP proxy in front of moto.

The proxy returns DynamoDB's error responses to chosen DynamoDB requests, so botocore's
own retries with backoff run on them, and the real ingest handler and queue poller handle
what is left.
"""

from __future__ import annotations

import dataclasses

import pytest
from pydicom.uid import generate_uid

from cirrus.archive import archive_instance
from cirrus.config import INGEST_MAX_RECEIVES, Settings
from cirrus.index.models import STUDY, get_record, instance_sk, study_pk
from cirrus.operations.redrive import DeadLetter, redrive
from cirrus.operations.target import Target
from cirrus.services import Services
from cirrus.storage.keys import InstanceKey
from functions.ingest import handler as ingest_handler
from tests.fault_proxy import FaultProxy, dynamodb
from tests.integration.index_snapshot import queued_messages, running_poller, wait_for
from tests.integration.test_ingest import _instance, _queued_bodies

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def services(settings: Settings) -> Services:
    return Services(settings)


@pytest.fixture
def proxied(settings: Settings, proxy: FaultProxy) -> Services:
    """The same deployment, reached through the proxy."""
    return Services(dataclasses.replace(settings, endpoint_url=proxy.endpoint_url))


def _archive(services: Services, study: str, count: int) -> list[InstanceKey]:
    series = generate_uid()
    return [
        archive_instance(services.store, "default", _instance(study, series)).key
        for _ in range(count)
    ]


def _instance_count(services: Services, study: str) -> int | None:
    record = get_record(
        services.index_model, study_pk("default", study), STUDY, consistent_read=True
    )
    if record is None or record.instance_count is None:
        return None
    return int(record.instance_count)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "ThrottlingException"),
        (400, "ProvisionedThroughputExceededException"),
        (500, "InternalServerError"),
    ],
)
def test_transient_faults_retried(
    services: Services, proxied: Services, proxy: FaultProxy, status: int, code: str
) -> None:
    study = generate_uid()
    _archive(services, study, 3)
    records = _queued_bodies(services)
    fault = proxy.fail(dynamodb(), status, code, times=2)
    result = ingest_handler.handle({"Records": records}, None, proxied)
    assert fault.injected == 2
    # No message failed: botocore's retries absorbed every fault within the batch.
    assert result == {"batchItemFailures": []}
    assert _instance_count(services, study) == 3


@pytest.mark.parametrize(
    ("status", "code", "attempts"),
    [
        # As from a missing IAM grant, which botocore does not retry.
        (400, "AccessDeniedException", 1),
        # Retried by botocore: 1 + the index model's max_retry_attempts (5) per call.
        (500, "InternalServerError", 6),
    ],
)
def test_persistent_fault_dead_letters_then_redrive(
    services: Services,
    proxied: Services,
    proxy: FaultProxy,
    status: int,
    code: str,
    attempts: int,
) -> None:
    study = generate_uid()
    (key,) = _archive(services, study, 1)
    # Each receive fails at the first DynamoDB call, the read of the study record.
    fault = proxy.fail(dynamodb(), status, code)
    with running_poller(proxied):
        wait_for(lambda: queued_messages(services, dead_letter=True) == 1)
    assert fault.injected == INGEST_MAX_RECEIVES * attempts
    assert queued_messages(services) == 0
    assert _instance_count(services, study) is None

    proxy.clear()
    listed: list[DeadLetter] = []
    assert redrive(Target(proxied, "test"), listed.append, dry_run=True) == 1
    assert queued_messages(services, dead_letter=True) == 1
    assert listed[0].content == key.object_key
    moved: list[DeadLetter] = []
    assert redrive(Target(proxied, "test"), moved.append) == 1
    assert [m.message_id for m in moved] == [m.message_id for m in listed]
    assert queued_messages(services, dead_letter=True) == 0
    with running_poller(proxied) as poller:
        assert poller.wait_until_drained(60)
    assert _instance_count(services, study) == 1
    pk, sk = study_pk("default", study), instance_sk(key.series, key.sop)
    assert get_record(services.index_model, pk, sk) is not None
