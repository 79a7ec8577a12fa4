"""The change feed of ``cirrus dev`` across restarts on one data folder.

A consumer keeps its cursor while the stack stops and starts again. It must then read every
change it missed, once, with numbers that continue where they were.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from cirrus.local.change_journal import JOURNAL_FILE
from cirrus.local.stack import OBJECTS_FOLDER
from cirrus.storage.keys import InstanceKey
from tests.e2e.conftest import RunningStack, start_stack
from tests.e2e.test_delete_restart import _store
from tests.e2e.test_events_cli import _read_all
from tests.e2e.test_operations_cli import _cli, _datasets, _json_lines

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _wait_for_changes(stack: RunningStack, since: int, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    changes: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        changes, _ = _read_all(stack, since, limit=100)
        if len(changes) >= count:
            break
        time.sleep(0.2)
    return changes


def _summary(changes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(change["action"], change["SOPInstanceUID"]) for change in changes]


def _save_while_stopped(data_dir: Path, ds: pydicom.Dataset) -> None:
    """Write ``ds`` into the archive folder as the stack would store it, with no stack running."""
    key = InstanceKey("default", ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    path = data_dir / OBJECTS_FOLDER / key.object_key
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_cursor_continues_after_restart(tmp_path: Path) -> None:
    first, second, offline, later = _datasets(4)
    data_dir = tmp_path / "data"

    stack = start_stack(data_dir)
    try:
        _store(stack, [first, second])
        before = _wait_for_changes(stack, 0, 2)
        assert sorted(_summary(before)) == sorted(
            [("stored", first.SOPInstanceUID), ("stored", second.SOPInstanceUID)]
        )
        _, cursor = _read_all(stack, 0, limit=100)
        deleted = requests.delete(
            f"{stack.dicomweb_url}/studies/{first.StudyInstanceUID}/series/"
            f"{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}",
            timeout=30,
        )
        assert deleted.status_code == 204
        assert _summary(_wait_for_changes(stack, cursor, 1)) == [("deleted", first.SOPInstanceUID)]
    finally:
        assert stack.stop() == 0
    assert (data_dir / JOURNAL_FILE).exists()
    _save_while_stopped(data_dir, offline)

    restarted = start_stack(data_dir)
    try:
        missed, after = _read_all(restarted, cursor, limit=1)
        assert _summary(missed) == [
            ("deleted", first.SOPInstanceUID),
            ("stored", offline.SOPInstanceUID),
        ]
        assert [change["sequence"] for change in missed] == [cursor + 1, cursor + 2]
        assert after == cursor + 2
        everything, _ = _read_all(restarted, 0, limit=100)
        sequences = [change["sequence"] for change in everything]
        assert sequences == list(range(1, len(everything) + 1))
        assert len(everything) == 4

        _store(restarted, [later])
        new = _wait_for_changes(restarted, after, 1)
        assert _summary(new) == [("stored", later.SOPInstanceUID)]
        assert new[0]["sequence"] == after + 1
    finally:
        assert restarted.stop() == 0

    again = start_stack(data_dir)
    try:
        replayed, last = _read_all(again, 0, limit=100)
        assert [change["sequence"] for change in replayed] == [1, 2, 3, 4, 5]
        assert _summary(replayed) == _summary(everything + new)
        assert last == 5
    finally:
        assert again.stop() == 0


def test_rejected_file_not_announced(tmp_path: Path) -> None:
    valid, broken = _datasets(2)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _save_while_stopped(data_dir, valid)
    # A file at an instance's path that ingest rejects: it is not DICOM.
    key = InstanceKey(
        "default", broken.StudyInstanceUID, broken.SeriesInstanceUID, broken.SOPInstanceUID
    )
    path = data_dir / OBJECTS_FOLDER / key.object_key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a DICOM file")

    stack = start_stack(data_dir)
    try:
        # The start did not wait for the queue's retries of the rejected file, which end
        # with its notification in the dead-letter queue about 20 s later.
        dead_at_start = _dead_letters(data_dir)
        changes, _ = _read_all(stack, 0, limit=100)
        dead_later = _wait_for_dead_letters(data_dir, 1)
    finally:
        assert stack.stop() == 0

    assert _summary(changes) == [("stored", valid.SOPInstanceUID)]
    assert dead_at_start == 0
    assert dead_later == 1


def _dead_letters(data_dir: Path) -> int:
    """Return how many notifications the running stack's dead-letter queue holds."""
    result = _cli(data_dir, "redrive", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    return int(_json_lines(result)[-1]["summary"]["would move"])


def _wait_for_dead_letters(data_dir: Path, count: int) -> int:
    deadline = time.monotonic() + 90
    while (found := _dead_letters(data_dir)) < count and time.monotonic() < deadline:
        time.sleep(1)
    return found
