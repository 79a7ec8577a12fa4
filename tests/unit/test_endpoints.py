"""The endpoints file that ``cirrus dev`` writes for the operator commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from cirrus.config import ResourceNames, Settings
from cirrus.local.datadir import DataFolderLock
from cirrus.local.endpoints import (
    ENDPOINTS_FILE,
    NoStackError,
    read_endpoints,
    remove_endpoints,
    write_endpoints,
)

SETTINGS = Settings.for_names(ResourceNames(), endpoint_url="http://127.0.0.1:5000")


def test_endpoints_of_running_stack(tmp_path: Path) -> None:
    lock = DataFolderLock(tmp_path)
    lock.acquire()
    try:
        write_endpoints(tmp_path, SETTINGS, tmp_path / "objects")
        endpoints = read_endpoints(tmp_path)
    finally:
        lock.release()
    assert endpoints.settings == SETTINGS
    assert endpoints.objects_dir == tmp_path / "objects"


def test_stale_endpoints_rejected(tmp_path: Path) -> None:
    # A stack that was killed leaves its endpoints file and an unlocked lock file.
    lock = DataFolderLock(tmp_path)
    lock.acquire()
    write_endpoints(tmp_path, SETTINGS, tmp_path / "objects")
    lock.release()
    with pytest.raises(NoStackError, match="no local stack is running"):
        read_endpoints(tmp_path)


def test_endpoints_missing_while_locked(tmp_path: Path) -> None:
    lock = DataFolderLock(tmp_path)
    lock.acquire()
    try:
        with pytest.raises(NoStackError, match=r"has not written endpoints\.json yet"):
            read_endpoints(tmp_path)
    finally:
        lock.release()


def test_missing_data_folder(tmp_path: Path) -> None:
    with pytest.raises(NoStackError, match="does not exist"):
        read_endpoints(tmp_path / "absent")


def test_remove_endpoints(tmp_path: Path) -> None:
    write_endpoints(tmp_path, SETTINGS, tmp_path / "objects")
    remove_endpoints(tmp_path)
    assert not (tmp_path / ENDPOINTS_FILE).exists()
    remove_endpoints(tmp_path)
