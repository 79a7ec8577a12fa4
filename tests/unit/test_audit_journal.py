"""The local audit journal when the disk fills in the middle of a line or a crash cut one."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

import cirrus.local.audit_journal
from cirrus.audit_table import AuditEntry, new_record_id
from cirrus.errors import StoreUnavailableError
from cirrus.local.audit_journal import FileAuditJournal, read_journal


def entry(request_id: str) -> AuditEntry:
    return AuditEntry(
        record_id=new_record_id(datetime.now(UTC), request_id),
        site="north",
        action="query",
        outcome=0,
        transport="dicomweb",
        request_id=request_id,
        user_agent=None,
        studies=("1.2.3",),
        message={"EventIdentification": {"EventActionCode": "E"}},
    )


def test_disk_full_mid_line_leaves_journal_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = FileAuditJournal(tmp_path / "audit.jsonl")
    first = entry("first")
    journal.append(first)
    before = journal.path.read_bytes()
    real_write = os.write
    calls = []

    def write_half_then_fail(fd: int, data: bytes) -> int:
        # As on a full disk: the first write stores part of the line, the next fails.
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cirrus.local.audit_journal.os, "write", write_half_then_fail)
    with pytest.raises(StoreUnavailableError, match="No space left on device"):
        journal.append(entry("lost"))
    monkeypatch.undo()

    assert len(calls) == 2
    assert journal.path.read_bytes() == before
    second = entry("second")
    journal.append(second)
    assert [e.record_id for e in read_journal(journal.path)] == [first.record_id, second.record_id]


def test_append_after_cut_line_starts_new_line(tmp_path: Path) -> None:
    journal = FileAuditJournal(tmp_path / "audit.jsonl")
    first = entry("first")
    journal.append(first)
    with journal.path.open("a") as file:
        file.write('{"record_id": "2026-03-01T23:')

    second = entry("second")
    journal.append(second)

    lines = journal.path.read_text().splitlines()
    assert len(lines) == 3
    assert lines[1] == '{"record_id": "2026-03-01T23:'
    assert [e.record_id for e in read_journal(journal.path)] == [first.record_id, second.record_id]
