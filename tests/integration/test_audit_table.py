"""The audit table on moto: append-only writes, Queries by study and by time, the local journal."""

from __future__ import annotations

import dataclasses
import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pynamodb.exceptions import PutError

import cirrus.audit_table
import cirrus.local.audit_journal
from cirrus.audit import (
    Actor,
    AuditAction,
    AuditEvent,
    AuditLog,
    AuditOutcome,
    DeletionRecord,
    StudyAccess,
    filter_records,
)
from cirrus.audit_table import (
    AppendOnlyError,
    AuditEntry,
    AuditRecord,
    AuditRecordExistsError,
    bind_audit_model,
    entry_items,
    record_pk,
    write_entries,
)
from cirrus.config import ResourceNames, Settings
from cirrus.errors import StoreUnavailableError
from cirrus.local.audit_journal import (
    FileAuditJournal,
    TableWriter,
    read_journal,
    restore_journal,
)
from cirrus.local.resources import create_audit_table
from cirrus.services import Services
from tests.fault_proxy import FaultProxy, dynamodb

START = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)


@pytest.fixture
def audit(settings: Settings) -> AuditLog:
    return Services(settings).audit


def store_event(
    study: str, minutes: int, site: str = "north", *more: str, request_id: str = "r"
) -> AuditEvent:
    return AuditEvent(
        action=AuditAction.STORE,
        outcome=AuditOutcome.SUCCESS,
        actor=Actor(ae_title="CT_NORTH", source_ip="10.0.0.5"),
        site=site,
        request_id=request_id,
        transport="DIMSE",
        studies=tuple(StudyAccess(uid) for uid in (study, *more)),
        time=START + timedelta(minutes=minutes),
    )


def ids(records: object) -> list[str]:
    return [record.record_id for record in records]  # type: ignore[attr-defined]


def test_record_read_back(audit: AuditLog) -> None:
    event = store_event("1.2.3", 0)

    record_id = audit.write(event)

    (record,) = audit.records_of_study("1.2.3")
    assert record.record_id == record_id
    assert record.time == event.time
    assert record.site == "north"
    assert record.action == "store"
    assert record.outcome == 0
    assert record.transport == "DIMSE"
    assert record.request_id == "r"
    assert record.studies == ("1.2.3",)
    assert record.message == event.to_message(audit_source_id(audit))


def audit_source_id(audit: AuditLog) -> str:
    model = audit.model
    assert model is not None
    return str(model.Meta.table_name).removesuffix("-audit")


def test_same_entry_written_twice(audit: AuditLog) -> None:
    model = audit.model
    assert model is not None
    entry = audit.entry_of(store_event("1.2.3", 0, "north", "1.2.4"))
    cirrus.audit_table.write_entry(model, entry)

    cirrus.audit_table.write_entry(model, entry)

    assert len(list(model.query(record_pk(entry.record_id)))) == 2
    for study in ("1.2.3", "1.2.4"):
        (record,) = audit.records_of_study(study)
        assert record == entry
    assert list(audit.records_between(START, START + timedelta(hours=1))) == [entry]


@pytest.mark.parametrize(
    "change",
    [
        {"outcome": 8},
        {"user_agent": "curl/8"},
        {"studies": ("1.2.3", "1.2.5")},
        {"message": {"EventIdentification": {"EventActionCode": "D"}}},
    ],
    ids=["outcome", "user agent", "study entry", "message"],
)
def test_other_entry_with_same_id_rejected(audit: AuditLog, change: dict[str, object]) -> None:
    model = audit.model
    assert model is not None
    entry = audit.entry_of(store_event("1.2.3", 0, "north", "1.2.4"))
    cirrus.audit_table.write_entry(model, entry)
    other = dataclasses.replace(entry, **change)  # type: ignore[arg-type]

    with pytest.raises(AuditRecordExistsError, match="exists already with other content"):
        cirrus.audit_table.write_entry(model, other)

    (head, _) = entry_items(model, other)
    with pytest.raises(PutError):
        head.save()
    assert len(list(model.query(record_pk(entry.record_id)))) == 2
    (record,) = audit.records_of_study("1.2.3")
    assert record == entry
    assert list(audit.records_of_study("1.2.5")) == []


def proxied_model(settings: Settings, proxy: FaultProxy) -> type[AuditRecord]:
    model = bind_audit_model(dataclasses.replace(settings, endpoint_url=proxy.endpoint_url))
    assert model is not None
    return model


@pytest.mark.parametrize("studies", [("1.2.3",), ("1.2.3", "1.2.4")], ids=["head", "study entry"])
def test_put_retried_after_lost_response(
    audit: AuditLog, settings: Settings, proxy: FaultProxy, studies: tuple[str, ...]
) -> None:
    """botocore retries a PutItem that moto carried out but whose response was lost."""
    proxied = proxied_model(settings, proxy)
    entry = audit.entry_of(store_event(studies[0], 0, "north", *studies[1:]))
    proxy.fail(dynamodb("PutItem"), 500, times=1, forward=True)

    cirrus.audit_table.write_entry(proxied, entry)

    # The first item's PutItem twice and its GetItem, then one PutItem of each other item.
    assert proxy.fault_count("PutItem") == 1
    assert proxy.count("PutItem") == len(studies) + 1
    assert proxy.count("GetItem") == 1
    for study in studies:
        (record,) = audit.records_of_study(study)
        assert record == entry
    assert list(audit.records_between(START, START + timedelta(hours=1))) == [entry]


def test_stored_item_unreadable(audit: AuditLog, settings: Settings, proxy: FaultProxy) -> None:
    model = audit.model
    assert model is not None
    proxied = proxied_model(settings, proxy)
    entry = audit.entry_of(store_event("1.2.3", 0))
    cirrus.audit_table.write_entry(model, entry)
    proxy.fail(dynamodb("GetItem"), 400, "AccessDeniedException")

    with pytest.raises(StoreUnavailableError, match="reading back its existing item") as raised:
        cirrus.audit_table.write_entry(proxied, entry)

    assert not isinstance(raised.value, AuditRecordExistsError)
    assert "AccessDeniedException" in str(raised.value)
    (record,) = audit.records_of_study("1.2.3")
    assert record == entry


def test_no_update_path(audit: AuditLog) -> None:
    model = audit.model
    assert model is not None
    audit.write(store_event("1.2.3", 0))
    (item,) = model.query(record_pk(next(audit.records_of_study("1.2.3")).record_id))

    with pytest.raises(AppendOnlyError):
        item.update(actions=[model.outcome.set(8)])
    with pytest.raises(AppendOnlyError):
        item.delete()
    with pytest.raises(AppendOnlyError):
        model.batch_write()
    for name in ("update", "delete", "modify", "remove"):
        assert not hasattr(AuditLog, name)


def test_records_of_study_in_time_order(audit: AuditLog) -> None:
    late = audit.write(store_event("1.2.3", 30))
    early = audit.write(store_event("1.2.3", 10))
    audit.write(store_event("1.2.4", 20))

    assert ids(audit.records_of_study("1.2.3")) == [early, late]
    assert ids(audit.records_of_study("1.2.3", since=START + timedelta(minutes=20))) == [late]
    assert ids(audit.records_of_study("1.2.3", until=START + timedelta(minutes=20))) == [early]
    window = audit.records_of_study(
        "1.2.3", START + timedelta(minutes=5), START + timedelta(minutes=15)
    )
    assert ids(window) == [early]
    assert list(audit.records_of_study("1.2.99")) == []


def test_record_found_by_each_study(audit: AuditLog) -> None:
    record_id = audit.write(store_event("1.2.3", 0, "north", "1.2.4", "1.2.5"))

    for study in ("1.2.3", "1.2.4", "1.2.5"):
        (record,) = audit.records_of_study(study)
        assert record.record_id == record_id
        assert record.studies == ("1.2.3", "1.2.4", "1.2.5")
    now = START + timedelta(hours=1)
    assert ids(audit.records_between(START, now)) == [record_id]


def test_records_between_days(audit: AuditLog) -> None:
    # START is 23:00 UTC, so these fall on two days and several shards.
    written = [audit.write(store_event(f"1.2.{n}", 20 * n, request_id=f"r{n}")) for n in range(6)]

    everything = list(audit.records_between(START, START + timedelta(days=1)))
    first_hour = audit.records_between(START, START + timedelta(minutes=60))

    assert ids(everything) == written
    assert {record.time.date() for record in everything} == {
        START.date(),
        START.date() + timedelta(days=1),
    }
    # The end is exclusive: the record at 60 minutes is not in the first hour.
    assert ids(first_hour) == written[:3]
    assert list(audit.records_between(START, START)) == []


def test_filter_by_site_and_action(audit: AuditLog) -> None:
    north = audit.write(store_event("1.2.3", 0, "north"))
    south = audit.write(store_event("1.2.3", 1, "south"))
    query = audit.write(
        AuditEvent(
            action=AuditAction.QUERY,
            outcome=AuditOutcome.SUCCESS,
            actor=Actor(ae_title="WS"),
            site="south",
            request_id="q",
            transport="DIMSE",
            query_keys=("PatientID",),
            time=START + timedelta(minutes=2),
        )
    )
    hour = START + timedelta(hours=1)

    assert ids(filter_records(audit.records_between(START, hour), site="north")) == [north]
    assert ids(filter_records(audit.records_between(START, hour), site="south")) == [south, query]
    stores = filter_records(audit.records_between(START, hour), action=AuditAction.STORE)
    assert ids(stores) == [north, south]


def test_large_message_in_parts(audit: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cirrus.audit_table, "PART_BYTES", 500)
    rng = random.Random(7)
    instances = tuple(f"2.25.{rng.getrandbits(120)}" for _ in range(300))
    event = AuditEvent(
        action=AuditAction.RETRIEVE,
        outcome=AuditOutcome.SUCCESS,
        actor=Actor(ae_title="WS"),
        site="north",
        request_id="big",
        transport="DIMSE",
        studies=(StudyAccess("1.2.3", instances=instances), StudyAccess("1.2.4")),
        time=START,
    )
    model = audit.model
    assert model is not None
    items = entry_items(model, audit.entry_of(event))
    assert len(items) > 3

    record_id = audit.write(event)

    for study in ("1.2.3", "1.2.4"):
        (record,) = audit.records_of_study(study)
        assert record.record_id == record_id
        assert record.message == event.to_message(audit_source_id(audit))
    (record,) = audit.records_between(START, START + timedelta(minutes=1))
    (first, _) = record.message["ParticipantObjectIdentification"]
    (element,) = first["ParticipantObjectDescription"]["SOPClass"]
    assert [item["UID"] for item in element["Instance"]] == list(instances)


def test_record_without_head_is_not_read(audit: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that failed before its head, which is written last, leaves no readable record."""
    monkeypatch.setattr(cirrus.audit_table, "PART_BYTES", 100)
    original = AuditRecord.save

    def fail_head(self: AuditRecord, condition: object = None, **kwargs: object) -> dict:
        if self.kind == cirrus.audit_table.HEAD:
            raise PutError("injected", cause=None)
        return original(self, condition, **kwargs)

    monkeypatch.setattr(AuditRecord, "save", fail_head)
    with pytest.raises(StoreUnavailableError):
        audit.write(store_event("1.2.3", 0, "north", "1.2.4"))
    monkeypatch.undo()

    assert list(audit.records_of_study("1.2.3")) == []
    assert list(audit.records_of_study("1.2.4")) == []
    assert list(audit.records_between(START, START + timedelta(hours=1))) == []


def test_deletion_record(audit: AuditLog) -> None:
    from cirrus.storage.keys import InstanceKey

    record_id = audit.record_deletion(
        DeletionRecord(
            site="north",
            actor=Actor(source_ip="127.0.0.1"),
            request_id="d1",
            study="1.2.3",
            instances=[InstanceKey("north", "1.2.3", "1.2.3.1", "1.2.3.1.1")],
        )
    )

    (record,) = audit.records_of_study("1.2.3")
    assert record.record_id == record_id
    assert record.action == "delete"
    assert record.message["EventIdentification"]["EventActionCode"] == "D"


def test_log_without_table() -> None:
    audit = AuditLog(None, "cirrus")

    audit.record(store_event("1.2.3", 0))

    with pytest.raises(StoreUnavailableError, match="no audit table"):
        audit.record_deletion(
            DeletionRecord(site="north", actor=Actor(), request_id="d", study="1.2.3")
        )


def test_journal_restores_table(audit: AuditLog, settings: Settings, tmp_path: Path) -> None:
    journal = FileAuditJournal(tmp_path / "audit.jsonl")
    model = audit.model
    assert model is not None
    with_journal = AuditLog(model, settings.deployment, journal)
    first = with_journal.write(store_event("1.2.3", 0))
    second = with_journal.write(store_event("1.2.4", 1, "north", "1.2.3"))
    # A line that a crash cut short.
    with journal.path.open("a") as file:
        file.write('{"record_id": "2026-03-01T23:')

    entries = list(read_journal(journal.path))
    names = ResourceNames(deployment=f"{settings.deployment}-restored")
    restored_settings = Settings.for_names(names, endpoint_url=settings.endpoint_url)
    create_audit_table(restored_settings)
    fresh = cirrus.audit_table.bind_audit_model(restored_settings)
    assert fresh is not None
    restored = restore_journal(journal.path, fresh)

    assert [entry.record_id for entry in entries] == [first, second]
    assert restored == 2
    assert ids(AuditLog(fresh, "x").records_of_study("1.2.3")) == [first, second]
    assert oct(os.stat(journal.path).st_mode & 0o777) == "0o600"
    assert json.loads(journal.path.read_text().splitlines()[0])["record_id"] == first


def test_deferred_table_written_after_journal(
    audit: AuditLog, settings: Settings, tmp_path: Path
) -> None:
    journal = FileAuditJournal(tmp_path / "audit.jsonl")
    model = audit.model
    assert model is not None
    writer = TableWriter(model)
    deferred = AuditLog(model, settings.deployment, journal, deferred=writer)
    try:
        first = deferred.write(store_event("1.2.3", 0))
        second = deferred.write(store_event("1.2.3", 1))

        # The journal has both when write returns; reading waits for the table.
        assert [entry.record_id for entry in read_journal(journal.path)] == [first, second]
        assert ids(deferred.records_of_study("1.2.3")) == [first, second]
        assert ids(deferred.records_between(START, START + timedelta(hours=1))) == [
            first,
            second,
        ]
    finally:
        writer.close()


def test_deferred_table_failure_in_journal(
    audit: AuditLog,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = FileAuditJournal(tmp_path / "audit.jsonl")
    model = audit.model
    assert model is not None
    writer = TableWriter(model)
    deferred = AuditLog(model, settings.deployment, journal, deferred=writer)
    written = deferred.write(store_event("1.2.3", 0))
    writer.flush()

    def fail_write(*args: object, **kwargs: object) -> None:
        raise StoreUnavailableError("audit record was not written: ThrottlingException")

    with monkeypatch.context() as patch:
        patch.setattr("cirrus.local.audit_journal.write_entry", fail_write)
        lost = deferred.write(store_event("1.2.3", 1))
        writer.flush()
    later = deferred.write(store_event("1.2.3", 2))
    writer.close()

    assert ids(audit.records_of_study("1.2.3")) == [written, later]
    assert lost in [entry.record_id for entry in read_journal(journal.path)]
    (failure,) = [r for r in caplog.records if "not written to the table" in r.getMessage()]
    assert failure.audit_record == lost  # type: ignore[attr-defined]
    assert "1.2.3" not in failure.getMessage()


def test_deferred_table_batches_entries(
    audit: AuditLog, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = FileAuditJournal(tmp_path / "audit.jsonl")
    model = audit.model
    assert model is not None
    batches: list[int] = []
    write_together = cirrus.local.audit_journal.write_entries

    def counted(model: type[AuditRecord], entries: list[AuditEntry], *args: object) -> object:
        batches.append(len(entries))
        return write_together(model, entries, *args)  # type: ignore[arg-type]

    monkeypatch.setattr("cirrus.local.audit_journal.write_entries", counted)
    # The window outlasts the writes, so only the flush of the read below ends it.
    writer = TableWriter(model, window=30.0)
    deferred = AuditLog(model, settings.deployment, journal, deferred=writer)
    try:
        written = [deferred.write(store_event("1.2.3", minute)) for minute in range(5)]

        assert ids(deferred.records_of_study("1.2.3")) == written
    finally:
        writer.close()
    assert batches == [5]


def test_deferred_table_batch_failure(
    audit: AuditLog, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = FileAuditJournal(tmp_path / "audit.jsonl")
    model = audit.model
    assert model is not None

    def fail_together(*args: object) -> None:
        raise StoreUnavailableError("audit records were not written: ThrottlingException")

    monkeypatch.setattr("cirrus.local.audit_journal.write_entries", fail_together)
    writer = TableWriter(model, window=30.0)
    deferred = AuditLog(model, settings.deployment, journal, deferred=writer)
    try:
        written = [deferred.write(store_event("1.2.3", minute)) for minute in range(3)]

        # Each entry is then put on its own.
        assert ids(deferred.records_of_study("1.2.3")) == written
    finally:
        writer.close()


def test_deferred_table_needs_journal(audit: AuditLog, settings: Settings) -> None:
    model = audit.model
    assert model is not None
    writer = TableWriter(model)
    try:
        with pytest.raises(ValueError, match="behind a journal"):
            AuditLog(model, settings.deployment, deferred=writer)
    finally:
        writer.close()


def test_journal_restore_skips_conflicting_line(
    audit: AuditLog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = audit.model
    assert model is not None
    journal = FileAuditJournal(tmp_path / "audit.jsonl")
    entry = audit.entry_of(store_event("1.2.3", 0))
    journal.append(entry)
    journal.append(entry)
    journal.append(dataclasses.replace(entry, outcome=8))

    restored = restore_journal(journal.path, model)

    # The repeated line is written again; the line with other content is not.
    assert restored == 2
    (record,) = audit.records_of_study("1.2.3")
    assert record == entry
    (warning,) = [r for r in caplog.records if "journal lines skipped" in r.getMessage()]
    assert warning.lines == 1  # type: ignore[attr-defined]


def test_deferred_table_conflict_logged(audit: AuditLog, caplog: pytest.LogCaptureFixture) -> None:
    model = audit.model
    assert model is not None
    entry = audit.entry_of(store_event("1.2.3", 0))
    cirrus.audit_table.write_entry(model, entry)
    writer = TableWriter(model)

    writer.submit(entry)
    writer.submit(dataclasses.replace(entry, outcome=8))
    writer.close()

    (record,) = audit.records_of_study("1.2.3")
    assert record == entry
    (failure,) = [r for r in caplog.records if "not written to the table" in r.getMessage()]
    assert failure.audit_record == entry.record_id  # type: ignore[attr-defined]
    assert "other content" in failure.error  # type: ignore[attr-defined]


def two_study_entries(audit: AuditLog, count: int) -> list[AuditEntry]:
    return [
        audit.entry_of(store_event(f"1.2.{n}", n, "north", f"1.3.{n}", request_id=f"r{n}"))
        for n in range(count)
    ]


def test_entries_written_in_transactions(
    audit: AuditLog, settings: Settings, proxy: FaultProxy
) -> None:
    proxied = proxied_model(settings, proxy)
    # Two items each: a transaction contains 50 entries.
    entries = two_study_entries(audit, 120)

    rejected = write_entries(proxied, entries)

    assert rejected == []
    assert proxy.count("TransactWriteItems") == 3
    assert proxy.count("PutItem") == 0
    assert list(audit.records_between(START, START + timedelta(days=1))) == entries
    assert list(audit.records_of_study("1.3.119")) == [entries[119]]


def test_entries_never_replace_stored_records(audit: AuditLog) -> None:
    model = audit.model
    assert model is not None
    first, second, third = two_study_entries(audit, 3)
    cirrus.audit_table.write_entry(model, first)
    cirrus.audit_table.write_entry(model, second)
    changed = dataclasses.replace(second, outcome=8)

    rejected = write_entries(model, [first, changed, third])

    # The cancelled transaction is written entry by entry: the identical record counts as
    # written, the changed one is rejected and the stored one kept.
    assert rejected == [changed]
    assert list(audit.records_between(START, START + timedelta(days=1))) == [
        first,
        second,
        third,
    ]


def test_entry_with_more_items_than_a_transaction(
    audit: AuditLog, settings: Settings, proxy: FaultProxy
) -> None:
    proxied = proxied_model(settings, proxy)
    studies = [f"1.2.{n}" for n in range(120)]
    small, large, after = (
        audit.entry_of(store_event("1.9.1", 0)),
        audit.entry_of(store_event(studies[0], 1, "north", *studies[1:])),
        audit.entry_of(store_event("1.9.2", 2)),
    )

    rejected = write_entries(proxied, [small, large, after])

    assert rejected == []
    # The large entry goes item by item, each small one in a transaction of its own.
    assert proxy.count("PutItem") == 120
    assert proxy.count("TransactWriteItems") == 2
    assert list(audit.records_of_study("1.2.119")) == [large]
    assert list(audit.records_between(START, START + timedelta(days=1))) == [
        small,
        large,
        after,
    ]


def test_entries_after_lost_transaction_response(
    audit: AuditLog, settings: Settings, proxy: FaultProxy
) -> None:
    """botocore retries a transaction that moto carried out but whose response was lost."""
    proxied = proxied_model(settings, proxy)
    entries = two_study_entries(audit, 10)
    proxy.fail(dynamodb("TransactWriteItems"), 500, times=1, forward=True)

    rejected = write_entries(proxied, entries)

    assert rejected == []
    assert proxy.fault_count("TransactWriteItems") == 1
    assert list(audit.records_between(START, START + timedelta(days=1))) == entries


def test_entries_on_failing_table(audit: AuditLog, settings: Settings, proxy: FaultProxy) -> None:
    proxied = proxied_model(settings, proxy)
    proxy.fail(dynamodb("TransactWriteItems"), 400, "AccessDeniedException")

    with pytest.raises(StoreUnavailableError, match="AccessDeniedException"):
        write_entries(proxied, two_study_entries(audit, 3))

    assert list(audit.records_between(START, START + timedelta(days=1))) == []


def test_long_journal_restored_with_repeats(
    audit: AuditLog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = audit.model
    assert model is not None
    journal = FileAuditJournal(tmp_path / "audit.jsonl")
    entries = two_study_entries(audit, 70)
    for entry in entries:
        journal.append(entry)
    # Lines a later transaction meets again: one repeated, one with other content.
    journal.append(entries[3])
    journal.append(dataclasses.replace(entries[60], outcome=8))

    restored = restore_journal(journal.path, model)

    assert restored == 71
    assert list(audit.records_between(START, START + timedelta(days=1))) == entries
    (warning,) = [r for r in caplog.records if "journal lines skipped" in r.getMessage()]
    assert warning.lines == 1  # type: ignore[attr-defined]


def test_journal_line_not_utf8_skipped(
    audit: AuditLog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = audit.model
    assert model is not None
    journal = FileAuditJournal(tmp_path / "audit.jsonl")
    entries = two_study_entries(audit, 2)
    journal.append(entries[0])
    # A crash in the middle of a write can leave any bytes; the next append starts a new line.
    with journal.path.open("ab") as file:
        file.write(b'{"record_id": "\xff\xfe')
    journal.append(entries[1])

    restored = restore_journal(journal.path, model)

    assert restored == 2
    assert list(audit.records_between(START, START + timedelta(days=1))) == entries
    (warning,) = [r for r in caplog.records if "unreadable lines" in r.getMessage()]
    assert warning.lines == 1  # type: ignore[attr-defined]
