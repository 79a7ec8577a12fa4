"""Event detail, PutEvents retries with a stub client, the local journal and check messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from cirrus.events.console import event_line
from cirrus.events.model import (
    MAX_REASON_LENGTH,
    SOURCE,
    instance_rejected,
    instance_stored,
    study_stable,
)
from cirrus.events.publisher import MAX_ENTRIES, EventPublisher
from cirrus.events.stable import StableCheck
from cirrus.local.event_journal import EventFilter, EventJournalWriter, read_events
from cirrus.storage.keys import InstanceKey

KEY = InstanceKey("north", "1.2.3", "1.2.3.4", "1.2.3.4.5")


class _StubEvents:
    """An EventBridge client that fails the first ``failures`` requests, then accepts all."""

    def __init__(self, failures: int = 0, failed_entries: int = 0) -> None:
        self.failures = failures
        self.failed_entries = failed_entries
        self.requests: list[list[dict[str, Any]]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.requests.append(Entries)
        if self.failures:
            self.failures -= 1
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        results: list[dict[str, Any]] = []
        for _ in Entries:
            if self.failed_entries:
                self.failed_entries -= 1
                results.append({"ErrorCode": "InternalFailure", "ErrorMessage": "try again"})
            else:
                results.append({"EventId": "id"})
        return {"FailedEntryCount": 0, "Entries": results}


def _publisher(client: _StubEvents) -> EventPublisher:
    return EventPublisher(client, "cirrus-events", delays=(0, 0, 0), sleep=lambda _: None)


def test_stored_entry_format() -> None:
    entry = instance_stored(KEY, "1.2.840.10008.5.1.4.1.1.2", "CT", 1234, "created").entry("bus")
    assert entry["Source"] == SOURCE
    assert entry["DetailType"] == "InstanceStored"
    assert entry["EventBusName"] == "bus"
    detail = json.loads(entry["Detail"])
    assert detail["site"] == "north"
    assert detail["SOPInstanceUID"] == "1.2.3.4.5"
    assert detail["Modality"] == "CT"
    assert detail["size"] == 1234
    assert detail["time"].endswith("Z")


def test_detail_has_no_patient_keys() -> None:
    events = [
        instance_stored(KEY, None, None, None, "updated"),
        instance_rejected("north", "DIMSE", "0xA900", "no pixel data"),
        study_stable(
            "north",
            "1.2.3",
            series_count=1,
            instance_count=2,
            modalities=["CT"],
            arrivals=2,
            last_arrival=0.0,
            quiet_seconds=120,
        ),
    ]
    for event in events:
        assert not [name for name in event.detail if "Patient" in name]


def test_rejection_reason_cut() -> None:
    event = instance_rejected("north", "STOW-RS", "0xC000", "x" * 5000)
    assert len(event.detail["reason"]) == MAX_REASON_LENGTH


def test_publisher_retries_then_sends() -> None:
    client = _StubEvents(failures=2)
    publisher = _publisher(client)
    assert publisher.publish([instance_stored(KEY, None, None, 1, "created")]) == 1
    assert len(client.requests) == 3
    assert publisher.sent == 1
    assert publisher.failed == 0


def test_publisher_resends_failed_entries_only() -> None:
    client = _StubEvents(failed_entries=1)
    publisher = _publisher(client)
    events = [instance_stored(KEY, None, None, size, "created") for size in (1, 2)]
    assert publisher.publish(events) == 2
    assert [len(request) for request in client.requests] == [2, 1]
    assert json.loads(client.requests[1][0]["Detail"])["size"] == 1


def test_publisher_gives_up_without_raising() -> None:
    client = _StubEvents(failures=100)
    publisher = _publisher(client)
    assert publisher.publish([instance_stored(KEY, None, None, 1, "created")]) == 0
    assert len(client.requests) == 4
    assert publisher.failed == 1


def test_publisher_splits_large_batches() -> None:
    client = _StubEvents()
    events = [instance_stored(KEY, None, None, size, "created") for size in range(25)]
    assert _publisher(client).publish(events) == 25
    assert [len(request) for request in client.requests] == [MAX_ENTRIES, MAX_ENTRIES, 5]


def test_publisher_survives_client_bug() -> None:
    class Broken:
        def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            raise TypeError("a bug")

    publisher = EventPublisher(Broken(), "bus", delays=(), sleep=lambda _: None)
    assert publisher.publish([instance_stored(KEY, None, None, 1, "created")]) == 0
    assert publisher.failed == 1


def _journal_records(*bodies: str) -> dict[str, Any]:
    return {"Records": [{"messageId": str(n), "body": b} for n, b in enumerate(bodies)]}


def test_journal_filters_and_skips_bad_lines(tmp_path: Path) -> None:
    writer = EventJournalWriter(tmp_path / "events.jsonl")
    stored = {"detail-type": "InstanceStored", "detail": {"site": "north"}}
    stable = {"detail-type": "StudyStable", "detail": {"site": "south"}}
    result = writer(_journal_records(json.dumps(stored), "not json", json.dumps(stable)), None)
    assert result == {"batchItemFailures": []}
    with writer.path.open("a") as journal:
        journal.write('{"detail-type": "InstanceSto')  # a line being written
    everything = list(read_events(writer.path, EventFilter()))
    assert [e["detail-type"] for e in everything] == ["InstanceStored", "StudyStable"]
    north = list(read_events(writer.path, EventFilter(site="north")))
    assert [e["detail"]["site"] for e in north] == ["north"]
    stable_only = list(read_events(writer.path, EventFilter(detail_type="StudyStable")))
    assert [e["detail-type"] for e in stable_only] == ["StudyStable"]


def test_journal_missing_file_is_empty(tmp_path: Path) -> None:
    assert list(read_events(tmp_path / "none.jsonl", EventFilter())) == []


def test_event_line_text() -> None:
    entry = {"detail-type": "StudyStable", "detail": study_stable(
        "north", "1.2.3", series_count=2, instance_count=9, modalities=["MR"], arrivals=9,
        last_arrival=0.0, quiet_seconds=120).detail}  # fmt: skip
    line = event_line(entry, json_lines=False)
    assert "StudyStable site=north 1.2.3" in line
    assert "series=2 instances=9" in line


def test_event_line_without_values() -> None:
    rejected = {"detail-type": "InstanceRejected", "detail": {"site": "north", "status": None}}
    stable = {"detail-type": "StudyStable", "detail": {"site": "north", "series": None}}
    for entry in (rejected, stable):
        line = event_line(entry, json_lines=False)
        assert "None" not in line
    assert "series=- instances=-" in event_line(stable, json_lines=False)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "null",
        "[]",
        '{"type": "other", "site": "north", "study": "1.2"}',
        '{"type": "study-stable-check", "site": "North", "study": "1.2"}',
        '{"type": "study-stable-check", "site": "north", "study": "1.2.x"}',
        '{"type": "study-stable-check", "site": "north", "study": 12}',
        '{"type": "study-stable-check", "site": "north", "study": "' + "1" * 65 + '"}',
    ],
)
def test_invalid_check_message(body: str) -> None:
    with pytest.raises(ValueError):
        StableCheck.from_body(body)


def test_check_message_round_trip() -> None:
    check = StableCheck("north", "1.2.3")
    assert StableCheck.from_body(check.body()) == check
