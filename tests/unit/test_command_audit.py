"""The per-study records that the export, de-identify and import commands write."""

from __future__ import annotations

from typing import Any

from cirrus.audit import DESTINATION_ROLE, Actor, AuditAction, AuditEvent, AuditOutcome
from cirrus.operations.command_audit import CommandRecord, TransferTally, site_party

STUDY = "1.2.826.0.1.3680043.8.498.1"
KEY = f"sites/default/studies/{STUDY}/series/1.2.3/instances/{{sop}}.dcm"


class _Log:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def write(self, event: AuditEvent) -> str:
        self.events.append(event)
        return str(len(self.events))


def _record(log: _Log) -> CommandRecord:
    party = site_party("research", DESTINATION_ROLE)
    audit: Any = log
    return CommandRecord(audit, AuditAction.EXPORT, Actor(principal="ops"), "default", party)


def test_tally_groups_by_study() -> None:
    tally = TransferTally()
    tally.add(KEY.format(sop="1.1"), moved=True)
    tally.add(KEY.format(sop="1.2"), moved=False)
    tally.add("not/an/instance", moved=False, failure="rejected")
    assert tally.studies[STUDY].instances == ["1.1"]
    assert tally.studies[STUDY].failures == {"failed": 1}
    assert tally.studies[None].failures == {"rejected": 1}


def test_partial_failure_is_minor() -> None:
    log = _Log()
    tally = TransferTally()
    tally.add(KEY.format(sop="1.1"), moved=True)
    tally.add(KEY.format(sop="1.2"), moved=False)
    assert _record(log).write(tally) == 1
    [event] = log.events
    assert event.outcome is AuditOutcome.MINOR_FAILURE
    assert event.detail == "1 failed"
    assert event.studies[0].instances == ("1.1",)


def test_archive_error_is_serious() -> None:
    log = _Log()
    tally = TransferTally()
    tally.ensure(STUDY)
    _record(log).write(tally, "S3 unavailable", archive_failed=True)
    [event] = log.events
    assert event.outcome is AuditOutcome.SERIOUS_FAILURE
    assert event.detail == "S3 unavailable"
    assert event.transport == "command line"


def test_success_has_no_detail() -> None:
    log = _Log()
    tally = TransferTally()
    tally.add(KEY.format(sop="1.1"), moved=True)
    _record(log).write(tally)
    [event] = log.events
    assert event.outcome is AuditOutcome.SUCCESS
    assert event.detail is None
    assert event.studies[0].series == ("1.2.3",)
