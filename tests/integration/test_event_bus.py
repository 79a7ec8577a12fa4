"""Cirrus events on moto's EventBridge over HTTP: ingest, retries and the StudyStable checker."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest
from pydicom.uid import generate_uid

from cirrus.archive import archive_instance
from cirrus.config import Settings
from cirrus.events.model import INSTANCE_REJECTED, INSTANCE_STORED, STUDY_STABLE, instance_deleted
from cirrus.events.publisher import EventPublisher
from cirrus.events.stable import ArrivalTracker, StableCheck, StableChecker, StableQueue
from cirrus.events.tables import bind_arrival_model
from cirrus.index.models import STUDY, study_pk
from cirrus.local.event_resources import journal_queue_name
from cirrus.services import Services
from cirrus.storage.keys import InstanceKey
from functions.ingest import handler as ingest_handler
from tests.fault_proxy import DROP, FaultProxy, ProxiedRequest
from tests.integration.test_ingest import _instance, _queued_bodies


@pytest.fixture
def services(settings: Settings) -> Services:
    return Services(settings)


def _journal(services: Services, expected: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Receive and delete the events that the bus's rule sent to the journal queue."""
    sqs = services.clients.sqs
    url = sqs.get_queue_url(QueueName=journal_queue_name(services.settings))["QueueUrl"]
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(events) < expected and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        for message in messages:
            events.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return events


def _put_events(request: ProxiedRequest) -> bool:
    return request.operation == "PutEvents"


def test_stored_event_reaches_rule_target(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    key = archive_instance(services.store, "default", _instance(study, series)).key
    assert ingest_handler.handle({"Records": _queued_bodies(services)}, None, services) == {
        "batchItemFailures": []
    }
    events = _journal(services, 1)
    assert [event["detail-type"] for event in events] == [INSTANCE_STORED]
    event = events[0]
    assert event["source"] == "cirrus.pacs"
    detail = event["detail"]
    assert detail["site"] == "default"
    assert detail["StudyInstanceUID"] == study
    assert detail["SeriesInstanceUID"] == series
    assert detail["SOPInstanceUID"] == key.sop
    assert detail["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"
    assert detail["Modality"] == "CT"
    assert detail["outcome"] == "created"
    assert detail["size"] > 0


def test_event_has_no_patient_data(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    archive_instance(services.store, "default", _instance(study, series))
    ingest_handler.handle({"Records": _queued_bodies(services)}, None, services)
    body = json.dumps(_journal(services, 1))
    # CT_small.dcm's PatientName and PatientID.
    assert "CompressedSamples" not in body
    assert "1CT1" not in body
    assert "PatientName" not in body
    assert "PatientID" not in body


def test_duplicate_delivery_sends_no_event(services: Services) -> None:
    archive_instance(services.store, "default", _instance(generate_uid(), generate_uid()))
    records = _queued_bodies(services)
    ingest_handler.handle({"Records": records}, None, services)
    ingest_handler.handle({"Records": records}, None, services)
    assert len(_journal(services, 2, timeout=3)) == 1


def test_invalid_object_sends_rejection(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    bad_key = f"sites/default/studies/{study}/series/{series}/instances/1.2.3.dcm"
    services.store.put(bad_key, _instance(study, series))  # its SOP Instance UID is not 1.2.3
    result = ingest_handler.handle({"Records": _queued_bodies(services)}, None, services)
    assert len(result["batchItemFailures"]) == 1
    events = _journal(services, 1)
    assert [event["detail-type"] for event in events] == [INSTANCE_REJECTED]
    detail = events[0]["detail"]
    assert detail["transport"] == "ingest"
    assert detail["SOPInstanceUID"] == "1.2.3"
    assert "does not match" in detail["reason"]


def test_failed_put_events_retried(services: Services, proxy: FaultProxy) -> None:
    settings = dataclasses.replace(services.settings, endpoint_url=proxy.endpoint_url)
    publisher = EventPublisher(Services(settings).clients.events, str(settings.event_bus))
    proxy.fail(_put_events, DROP, times=2)
    key = InstanceKey("default", generate_uid(), generate_uid(), generate_uid())
    assert publisher.publish([instance_deleted(key)]) == 1
    assert proxy.fault_count("PutEvents") == 2
    assert publisher.failed == 0
    events = _journal(services, 1)
    assert [event["detail"]["SOPInstanceUID"] for event in events] == [key.sop]


def test_unsent_event_counted_not_raised(
    services: Services, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    settings = dataclasses.replace(services.settings, endpoint_url=proxy.endpoint_url)
    publisher = EventPublisher(
        Services(settings).clients.events, str(settings.event_bus), delays=(0, 0, 0)
    )
    proxy.fail(_put_events, DROP)
    key = InstanceKey("default", generate_uid(), generate_uid(), generate_uid())
    assert publisher.publish([instance_deleted(key)]) == 0
    assert publisher.failed == 1
    assert proxy.fault_count("PutEvents") == 4
    messages = [record for record in caplog.records if "event not sent" in record.getMessage()]
    assert len(messages) == 1
    assert messages[0].sop == key.sop


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class _RecordingQueue(StableQueue):
    """A stable queue that keeps the checks instead of sending them."""

    def __init__(self) -> None:
        self.sent: list[tuple[StableCheck, float]] = []

    def send(self, check: StableCheck, delay: float) -> None:
        self.sent.append((check, delay))


def _checker(
    services: Services, queue: StableQueue, quiet: int, clock: _Clock
) -> tuple[ArrivalTracker, StableChecker]:
    model = bind_arrival_model(services.settings)
    assert model is not None
    tracker = ArrivalTracker(model, queue, quiet, clock)
    checker = StableChecker(model, services.index_model, queue, services.events, quiet, clock)
    return tracker, checker


def _indexed_study(services: Services, instances: int = 1) -> str:
    """Write the index record of a new study of ``instances`` instances; return its UID."""
    study = generate_uid()
    record = services.index_model(
        study_pk("default", study),
        STUDY,
        level=STUDY,
        site="default",
        series_count=1,
        instance_count=instances,
        modalities={"CT"},
    )
    record.save()
    return study


def test_stable_once_per_quiet_period(services: Services) -> None:
    clock, queue = _Clock(), _RecordingQueue()
    tracker, checker = _checker(services, queue, 120, clock)
    study = _indexed_study(services)
    tracker.arrived("default", study)
    tracker.arrived("default", study, 2)
    assert [delay for _, delay in queue.sent] == [120]
    check = queue.sent[0][0]
    clock.now += 120
    event = checker.check(check)
    assert event is not None
    assert event.detail_type == STUDY_STABLE
    assert event.detail["arrivals"] == 3
    assert checker.check(check) is None  # a redelivery
    tracker.arrived("default", study)
    assert len(queue.sent) == 2
    clock.now += 120
    second = checker.check(queue.sent[1][0])
    assert second is not None
    assert second.detail["arrivals"] == 1
    stable = [e for e in _journal(services, 2) if e["detail-type"] == STUDY_STABLE]
    assert len(stable) == 2


def test_stable_waits_for_late_arrival(services: Services) -> None:
    clock, queue = _Clock(), _RecordingQueue()
    tracker, checker = _checker(services, queue, 120, clock)
    study = _indexed_study(services)
    tracker.arrived("default", study)
    clock.now += 100
    tracker.arrived("default", study)
    clock.now += 20
    assert checker.check(queue.sent[0][0]) is None
    assert [round(delay) for _, delay in queue.sent] == [120, 100]
    clock.now += 100
    assert checker.check(queue.sent[1][0]) is not None


def test_stable_long_quiet_period_requeues(services: Services) -> None:
    clock, queue = _Clock(), _RecordingQueue()
    tracker, checker = _checker(services, queue, 3600, clock)
    study = _indexed_study(services)
    tracker.arrived("default", study)
    for _ in range(3):
        clock.now += 900
        assert checker.check(queue.sent[-1][0]) is None
    clock.now += 900
    assert checker.check(queue.sent[-1][0]) is not None
    assert len(queue.sent) == 4


def test_stable_check_on_sqs_delay(services: Services) -> None:
    queue = services.stable_queue
    assert queue is not None
    model = bind_arrival_model(services.settings)
    assert model is not None
    tracker = ArrivalTracker(model, queue, 1)
    checker = StableChecker(model, services.index_model, queue, services.events, 1)
    study = _indexed_study(services)
    tracker.arrived("default", study)
    sqs = services.clients.sqs
    url = sqs.get_queue_url(QueueName=services.settings.stable_queue)["QueueUrl"]
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages") is None
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while not messages and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
    assert len(messages) == 1
    event = checker.check(StableCheck.from_body(messages[0]["Body"]))
    assert event is not None
    assert event.detail["StudyInstanceUID"] == study


def test_stable_reports_index_counts(services: Services) -> None:
    clock, queue = _Clock(), _RecordingQueue()
    tracker, checker = _checker(services, queue, 120, clock)
    study = _indexed_study(services, instances=4)
    tracker.arrived("default", study, 4)
    clock.now += 120
    event = checker.check(queue.sent[0][0])
    assert event is not None
    assert event.detail["instances"] == 4
    assert event.detail["series"] == 1
    assert event.detail["ModalitiesInStudy"] == ["CT"]


@pytest.mark.parametrize("remaining", [None, 0])
def test_stable_not_sent_for_deleted_study(services: Services, remaining: int | None) -> None:
    clock, queue = _Clock(), _RecordingQueue()
    tracker, checker = _checker(services, queue, 120, clock)
    study = generate_uid()
    if remaining is not None:
        study = _indexed_study(services, instances=remaining)
    tracker.arrived("default", study, 2)
    clock.now += 120
    assert checker.check(queue.sent[0][0]) is None
    assert checker.check(queue.sent[0][0]) is None  # a redelivery
    assert _journal(services, 1, timeout=2) == []
