"""Ingest on moto over HTTP: the Lambda handler, the queue poller and the index aggregates."""

from __future__ import annotations

import secrets
import time
from io import BytesIO

import pydicom
import pytest
from pydicom.uid import CTImageStorage, generate_uid

from cirrus.archive import archive_instance
from cirrus.config import Settings
from cirrus.index.models import STUDY, get_record, series_sk, study_pk
from cirrus.local.poller import IngestPoller
from cirrus.notifications import object_events
from cirrus.services import Services
from functions.ingest import handler as ingest_handler
from tests.pydicom_files import bundled


@pytest.fixture
def services(settings: Settings) -> Services:
    return Services(settings)


def _instance(study: str, series: str, modality: str = "CT", extra_text: str = "") -> bytes:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = modality
    if extra_text:
        ds.add_new(0x00091010, "UT", extra_text)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _queued_bodies(services: Services) -> list[dict]:
    """Receive every message of the ingest queue as Lambda records, deleting none."""
    sqs = services.clients.sqs
    url = sqs.get_queue_url(QueueName=services.settings.ingest_queue)["QueueUrl"]
    records = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=0
        ).get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in {r["messageId"] for r in records}]
        if not fresh:
            return records
        records += [
            {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"]}
            for m in fresh
            if object_events(m["Body"])
        ]


def _keys(record: dict) -> list[str]:
    return [event.key for event in object_events(record["body"])]


def _study(services: Services, study: str):
    return get_record(services.index_model, study_pk("default", study), STUDY)


def test_ingest_counts_each_instance_once(services: Services) -> None:
    study, series_a, series_b = generate_uid(), generate_uid(), generate_uid()
    for series, modality in ((series_a, "CT"), (series_a, "CT"), (series_b, "SR")):
        archive_instance(services.store, "default", _instance(study, series, modality))
    records = _queued_bodies(services)
    assert len(records) == 3
    event = {"Records": records}
    first = ingest_handler.handle(event, None, services)
    second = ingest_handler.handle(event, None, services)
    assert first == {"batchItemFailures": []}
    assert second == {"batchItemFailures": []}
    record = _study(services, study)
    assert record is not None
    assert record.instance_count == 3
    assert record.series_count == 2
    assert record.modalities == {"CT", "SR"}
    series_record = get_record(
        services.index_model, study_pk("default", study), series_sk(series_a)
    )
    assert series_record is not None
    assert series_record.instance_count == 2
    assert series_record.sop_classes == {CTImageStorage}
    single = get_record(services.index_model, study_pk("default", study), series_sk(series_b))
    assert single is not None
    assert single.instance_count == 1
    assert single.modalities == {"SR"}
    assert single.sop_classes == {CTImageStorage}


def test_duplicate_event_in_one_batch(services: Services) -> None:
    study = generate_uid()
    archive_instance(services.store, "default", _instance(study, generate_uid()))
    [record] = _queued_bodies(services)
    twice = {"Records": [record, {**record, "messageId": "copy"}]}
    assert ingest_handler.handle(twice, None, services) == {"batchItemFailures": []}
    study_record = _study(services, study)
    assert study_record is not None
    assert study_record.instance_count == 1


def test_bad_object_fails_alone(services: Services) -> None:
    study = generate_uid()
    archive_instance(services.store, "default", _instance(study, generate_uid()))
    bad_key = f"sites/default/studies/{generate_uid()}/series/1.2/instances/1.3.dcm"
    services.store.put(bad_key, b"not dicom at all")
    records = _queued_bodies(services)
    result = ingest_handler.handle({"Records": records}, None, services)
    failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
    bad = [r["messageId"] for r in records if _keys(r) == [bad_key]]
    assert failed == set(bad)
    study_record = _study(services, study)
    assert study_record is not None
    assert study_record.instance_count == 1


def test_key_uid_mismatch_rejected(services: Services) -> None:
    wrong_key = f"sites/default/studies/{generate_uid()}/series/1.2/instances/1.3.dcm"
    services.store.put(wrong_key, _instance(generate_uid(), generate_uid()))
    records = [r for r in _queued_bodies(services) if _keys(r) == [wrong_key]]
    result = ingest_handler.handle({"Records": records}, None, services)
    assert len(result["batchItemFailures"]) == 1


def test_large_metadata_goes_to_an_object(services: Services) -> None:
    study = generate_uid()
    noise = secrets.token_hex(400_000)  # 800 KB of text that zlib cannot shrink below 300 KB
    archived = archive_instance(
        services.store, "default", _instance(study, generate_uid(), extra_text=noise)
    )
    ingest_handler.handle({"Records": _queued_bodies(services)}, None, services)
    key = archived.key
    metadata = services.index_reader.instance_metadata("default", study, key.series, key.sop)
    assert metadata["00091010"]["Value"] == [noise]


def test_poller_moves_bad_object_to_dead_letter_queue(services: Services) -> None:
    sqs = services.clients.sqs
    settings = services.settings
    url = sqs.get_queue_url(QueueName=settings.ingest_queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    dlq_url = sqs.get_queue_url(QueueName=settings.dead_letter_queue)["QueueUrl"]
    handle = lambda event, context: ingest_handler.handle(event, context, services)  # noqa: E731
    poller = IngestPoller(sqs, url, arn, settings.region, handle, retry_delays=(0, 0, 0))
    poller.start()
    try:
        good_study = generate_uid()
        archive_instance(services.store, "default", _instance(good_study, generate_uid()))
        bad_key = f"sites/default/studies/{generate_uid()}/series/1.2/instances/1.3.dcm"
        services.store.put(bad_key, b"\0" * 200)
        deadline = time.monotonic() + 60
        dead: list[dict] = []
        while time.monotonic() < deadline and not dead:
            dead = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1).get("Messages", [])
        assert dead, "the bad object's notification never reached the dead-letter queue"
        assert [event.key for event in object_events(dead[0]["Body"])] == [bad_key]
        assert poller.wait_until_drained(30)
        record = _study(services, good_study)
        assert record is not None
        assert record.instance_count == 1
    finally:
        poller.stop()
