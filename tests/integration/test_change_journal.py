"""The local stack's change journal on moto: written by the feed, restored into a new table."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from cirrus.config import ResourceNames, Settings
from cirrus.events.feed import DELETED, STORED, ChangeFeed, ChangeReader
from cirrus.events.tables import ChangeRecord, bind_change_model
from cirrus.local.change_journal import (
    FileChangeJournal,
    journal_counters,
    read_change_journal,
    reconcile_feed,
    restore_change_journal,
)
from cirrus.local.moto_process import MotoProcess
from cirrus.local.resources import create_resources
from cirrus.storage.keys import InstanceKey

SITE = "north"


def _model(moto_server: MotoProcess) -> type[ChangeRecord]:
    """Return the changes table of a new deployment, as a restarted stack has one."""
    names = ResourceNames(deployment=f"t{uuid.uuid4().hex[:12]}")
    settings = create_resources(Settings.for_names(names, endpoint_url=moto_server.endpoint_url))
    model = bind_change_model(settings)
    assert model is not None
    return model


def _key() -> InstanceKey:
    return InstanceKey(SITE, generate_uid(), generate_uid(), generate_uid())


def _journaled_feed(moto_server: MotoProcess, path: Path) -> list[InstanceKey]:
    """Store three instances and delete the first through a journaled feed; return the keys."""
    feed = ChangeFeed(_model(moto_server), journal=FileChangeJournal(path))
    keys = [_key(), _key(), _key()]
    assert feed.save_changes(SITE, STORED, keys) == 3
    assert feed.save_changes(SITE, DELETED, keys[:1]) == 1
    return keys


def test_journal_lists_saved_changes(moto_server: MotoProcess, tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    keys = _journaled_feed(moto_server, path)
    lines = list(read_change_journal(path))
    assert [line["sequence"] for line in lines] == [1, 2, 3, 4]
    assert [line["action"] for line in lines] == [STORED, STORED, STORED, DELETED]
    assert lines[3]["sop"] == keys[0].sop


def test_restore_keeps_numbers(moto_server: MotoProcess, tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    keys = _journaled_feed(moto_server, path)
    model = _model(moto_server)

    restored = restore_change_journal(path, model)

    assert restored.changes == 4
    assert restored.stored_keys() == set(keys[1:])
    page = ChangeReader(model).read(SITE, 0)
    assert [change.sequence for change in page.changes] == [1, 2, 3, 4]
    assert [change.action for change in page.changes] == [STORED, STORED, STORED, DELETED]
    assert page.cursor == 4
    assert not page.waiting
    assert ChangeFeed(model).allocate(SITE).first == 5


def test_reconcile_adds_missing_changes(moto_server: MotoProcess, tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    keys = _journaled_feed(moto_server, path)
    model = _model(moto_server)
    restored = restore_change_journal(path, model)
    arrived = _key()
    feed = ChangeFeed(model, journal=FileChangeJournal(path))

    # keys[2] left the archive and ``arrived`` entered it while no feed was recording.
    added = reconcile_feed(feed, restored, [keys[1], arrived])

    assert added == {STORED: 1, DELETED: 1}
    changes = ChangeReader(model).read(SITE, 4).changes
    assert {(c.action, c.sop) for c in changes} == {(STORED, arrived.sop), (DELETED, keys[2].sop)}
    assert sorted(c.sequence for c in changes) == [5, 6]
    assert len(list(read_change_journal(path))) == 6


def test_reconcile_of_matching_archive_adds_nothing(
    moto_server: MotoProcess, tmp_path: Path
) -> None:
    path = tmp_path / "changes.jsonl"
    keys = _journaled_feed(moto_server, path)
    model = _model(moto_server)
    restored = restore_change_journal(path, model)

    added = reconcile_feed(ChangeFeed(model), restored, keys[1:])

    assert added == {STORED: 0, DELETED: 0}
    assert ChangeReader(model).read(SITE, 4).changes == []


def test_cut_line_skipped(moto_server: MotoProcess, tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    _journaled_feed(moto_server, path)
    with path.open("a", encoding="utf-8") as journal:
        journal.write('{"pk": "north#FEED", "seque')

    restored = restore_change_journal(path, _model(moto_server))

    assert restored.changes == 4


def test_void_and_counter_journaled(moto_server: MotoProcess, tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    journal = FileChangeJournal(path)
    model = _model(moto_server)
    feed = ChangeFeed(model, journal=journal)
    feed.save_changes(SITE, STORED, [_key()])
    feed.void(feed.allocate(SITE, 2))
    # A number handed out and never written, as by a writer that is still working at stop.
    assert feed.allocate(SITE).first == 4
    assert journal_counters(model, journal) == 1

    restarted = _model(moto_server)
    restored = restore_change_journal(path, restarted)

    assert restored.changes == 3
    page = ChangeReader(restarted).read(SITE, 0)
    assert [change.sequence for change in page.changes] == [1]
    # Number 4 may still be written until the grace period after its allocation has passed.
    assert page.cursor == 3
    assert page.waiting
    assert ChangeReader(restarted, grace=0).read(SITE, 0).cursor == 4
    assert ChangeFeed(restarted).allocate(SITE).first == 5


def test_line_not_utf8_skipped(
    moto_server: MotoProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "changes.jsonl"
    keys = _journaled_feed(moto_server, path)
    # A crash in the middle of a write can leave any bytes after the last whole line.
    with path.open("ab") as file:
        file.write(b'{"pk": "north#feed", "sop": "\xff\xfe')

    restored = restore_change_journal(path, _model(moto_server))

    assert restored.changes == 4
    assert restored.stored_keys() == set(keys[1:])
    (warning,) = [r for r in caplog.records if "change journal skipped" in r.getMessage()]
    assert warning.lines == 1  # type: ignore[attr-defined]
