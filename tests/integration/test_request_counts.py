"""The AWS requests that the write path, ingest and DICOMweb reads promise, counted on moto.

Each test runs real handlers with every botocore call counted (``tests.integration.aws_calls``),
so a change that adds a request to one of these paths fails here. ``bench/cost.py`` measures
the same counts, with capacity units and CPU time, for the cost model.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.uid import generate_uid

from cirrus.archive import archive_instance
from cirrus.config import Settings
from cirrus.dicomweb.app import DicomwebServices
from cirrus.local.moto_process import MotoProcess
from cirrus.notifications import object_events
from cirrus.services import Services
from cirrus.storage.keys import InstanceKey
from functions.dicomweb.handler import dicomweb_services, handle
from functions.ingest import handler as ingest_handler
from tests.integration.aws_calls import AwsCallCounter, proxy_event, sqs_record
from tests.integration.test_ingest import _instance

SITE = "default"
# The most DynamoDB items that a QIDO-RS search may read per result it returns.
MAX_ITEMS_PER_RESULT = 2
DICOM = 'multipart/related; type="application/dicom"'


@pytest.fixture
def services(settings: Settings) -> Services:
    return Services(settings)


@pytest.fixture
def view(services: Services) -> DicomwebServices:
    return dicomweb_services(services)


@pytest.fixture
def counter(moto_server: MotoProcess, settings: Settings) -> AwsCallCounter:
    return AwsCallCounter(moto_server.endpoint_url, settings.region)


def _archive(services: Services, study: str, series: str, count: int) -> list[InstanceKey]:
    return [
        archive_instance(services.store, SITE, _instance(study, series), claims=services.claims).key
        for _ in range(count)
    ]


def _queued_records(services: Services) -> list[dict]:
    """Receive and delete every S3 notification of the ingest queue."""
    sqs = services.clients.sqs
    url = sqs.get_queue_url(QueueName=services.settings.ingest_queue)["QueueUrl"]
    records: list[dict] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            if object_events(message["Body"]):
                records.append(sqs_record(message["Body"]))
    return records


def _ingest(services: Services, records: list[dict]) -> None:
    response = ingest_handler.handle({"Records": records}, None, services)
    assert response == {"batchItemFailures": []}


def _get(view: DicomwebServices, path: str, accept: str = "", **query: str) -> None:
    headers = {"Accept": accept} if accept else {}
    response = handle(proxy_event("GET", path, query, headers), None, view)
    assert response["statusCode"] == 200, response.get("body")


@pytest.fixture
def indexed_series(services: Services) -> Iterator[tuple[str, str, list[InstanceKey]]]:
    """A study of one series of 10 instances, stored and indexed."""
    study, series = generate_uid(), generate_uid()
    keys = _archive(services, study, series, 10)
    _ingest(services, _queued_records(services))
    yield study, series, keys


def test_write_path_one_put(services: Services, counter: AwsCallCounter) -> None:
    with counter.counting():
        _archive(services, generate_uid(), generate_uid(), 1)
    assert counter.count("s3") == 1
    assert counter.count("s3", "PutObject") == 1
    # The claim of the SOP Instance UID, and nothing else.
    assert counter.count("dynamodb") == 1
    assert counter.count("dynamodb", "PutItem") == 1


def test_ingest_one_ranged_get(services: Services, counter: AwsCallCounter) -> None:
    _archive(services, generate_uid(), generate_uid(), 1)
    records = _queued_records(services)
    with counter.counting():
        _ingest(services, records)
    assert counter.count("s3") == 1
    assert counter.count("s3", "GetObject (range)") == 1


def test_ingest_records_claim_once(services: Services, counter: AwsCallCounter) -> None:
    _archive(services, generate_uid(), generate_uid(), 1)
    records = _queued_records(services)
    counter.trace = []
    with counter.counting():
        _ingest(services, records)
    claim_writes = [
        line for line in counter.trace if line.startswith("PutItem") and " CLAIM " in line
    ]
    assert len(claim_writes) == 1
    assert counter.count("dynamodb", "TransactWriteItems") == 1


def test_new_series_batch_two_transactions(services: Services, counter: AwsCallCounter) -> None:
    _archive(services, generate_uid(), generate_uid(), 10)
    records = _queued_records(services)
    assert len(records) == 10
    with counter.counting():
        _ingest(services, records)
    # The first instance adds the series on its own; the other nine go in one transaction.
    assert counter.count("dynamodb", "TransactWriteItems") == 2
    assert counter.count("s3") == 10
    assert counter.count("s3", "GetObject (range)") == 10


def test_second_series_no_failed_transaction(services: Services, counter: AwsCallCounter) -> None:
    study = generate_uid()
    _archive(services, study, generate_uid(), 1)
    _ingest(services, _queued_records(services))
    _archive(services, study, generate_uid(), 10)
    records = _queued_records(services)
    counter.trace = []
    with counter.counting():
        _ingest(services, records)
    assert counter.count("dynamodb", "TransactWriteItems") == 2


def test_qido_items_per_result(
    view: DicomwebServices,
    counter: AwsCallCounter,
    indexed_series: tuple[str, str, list[InstanceKey]],
) -> None:
    study, series, keys = indexed_series
    searches = [
        (f"/studies/{study}/series/{series}/instances", {}, len(keys)),
        (f"/studies/{study}/series", {}, 1),
        ("/studies", {"StudyInstanceUID": study}, 1),
    ]
    for path, query, results in searches:
        counter.reset()
        with counter.counting():
            _get(view, path, **query)
        assert counter.count("dynamodb", "Scan") == 0, path
        assert counter.units.items_read <= MAX_ITEMS_PER_RESULT * results, path
        assert counter.count("s3") == 0, path


def test_instance_retrieve_one_get(
    view: DicomwebServices,
    counter: AwsCallCounter,
    indexed_series: tuple[str, str, list[InstanceKey]],
) -> None:
    study, series, keys = indexed_series
    path = f"/studies/{study}/series/{series}/instances/{keys[0].sop}"
    with counter.counting():
        _get(view, path, accept=DICOM)
    assert counter.count("s3") == 1
    assert counter.count("s3", "GetObject") == 1
    assert counter.units.items_read == 1


def test_series_metadata_one_object(
    view: DicomwebServices,
    counter: AwsCallCounter,
    indexed_series: tuple[str, str, list[InstanceKey]],
) -> None:
    study, series, _ = indexed_series
    path = f"/studies/{study}/series/{series}/metadata"
    _get(view, path)  # builds the series' metadata bundle
    with counter.counting():
        _get(view, path)
    assert counter.count("s3") == 1
    assert counter.count("s3", "GetObject") == 1
    assert counter.units.items_read == 1
