"""The local data folder: durable writes and clean-up after a crash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cirrus.local.datadir import (
    DataFolderInUseError,
    DataFolderLock,
    remove_partial_files,
    saved_objects,
)


def test_partial_files_removed(tmp_path: Path) -> None:
    folder = tmp_path / "sites" / "default" / "studies" / "1" / "series" / "2" / "instances"
    folder.mkdir(parents=True)
    (folder / ".incoming-abc").write_bytes(b"half an object")
    (folder / "3.dcm").write_bytes(b"a whole object")
    assert remove_partial_files(tmp_path) == 1
    assert not (folder / ".incoming-abc").exists()
    assert (folder / "3.dcm").exists()


def test_saved_objects_skip_foreign_files(tmp_path: Path) -> None:
    good = tmp_path / "sites/default/studies/1.2/series/1.3/instances/1.4.dcm"
    good.parent.mkdir(parents=True)
    good.write_bytes(b"x")
    stray = tmp_path / "notes.dcm"
    stray.write_bytes(b"y")
    assert [key for key, _ in saved_objects(tmp_path)] == [
        "sites/default/studies/1.2/series/1.3/instances/1.4.dcm"
    ]


def test_lock_held_once(tmp_path: Path) -> None:
    first, second = DataFolderLock(tmp_path), DataFolderLock(tmp_path)
    first.acquire()
    with pytest.raises(DataFolderInUseError, match=f"process {os.getpid()}"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()
