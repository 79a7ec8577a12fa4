"""The write path's SOP Instance UID claim, made while the local object store flushes the file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from cirrus.archive import archive_file, check_instance
from cirrus.errors import ConflictError, StoreUnavailableError
from cirrus.local.datadir import FolderObjectStore
from cirrus.storage.keys import InstanceKey
from tests.pydicom_files import bundled


class FlushingClaims:
    """Claims that check that the object's hidden file is written and being flushed.

    Every fsync waits until a claim has started, so a claim made before the file is written,
    or after its flush, fails the test instead of passing it.
    """

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
        self.root, self.size = root, size
        self.started = threading.Event()
        self.failure: Exception | None = None
        self.released: list[InstanceKey] = []
        fsync = os.fsync

        def waiting_fsync(fd: int) -> None:
            if not self.started.wait(timeout=10):
                raise OSError(5, "no claim started during the flush")
            fsync(fd)

        monkeypatch.setattr(os, "fsync", waiting_fsync)

    def claim(self, key: InstanceKey) -> bool:
        hidden = [p for p in self.root.rglob(".incoming-*") if p.stat().st_size == self.size]
        assert len(hidden) == 1, "the claim ran before the file was written"
        self.started.set()
        if self.failure is not None:
            raise self.failure
        return True

    def release(self, key: InstanceKey) -> None:
        self.released.append(key)


@pytest.fixture
def instance() -> Path:
    return bundled("CT_small.dcm")


def test_claim_during_file_flush(
    tmp_path: Path, instance: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = instance.read_bytes()
    claims = FlushingClaims(tmp_path, monkeypatch, len(data))
    checked = check_instance(data, "default")

    archived = archive_file(FolderObjectStore(tmp_path, "bucket"), instance, checked, claims)  # type: ignore[arg-type]

    assert (tmp_path / archived.key.object_key).read_bytes() == data
    assert claims.released == []


def test_conflicting_claim_leaves_no_file(
    tmp_path: Path, instance: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = instance.read_bytes()
    claims = FlushingClaims(tmp_path, monkeypatch, len(data))
    claims.failure = ConflictError("stored in another study")
    checked = check_instance(data, "default")

    with pytest.raises(ConflictError, match="another study"):
        archive_file(FolderObjectStore(tmp_path, "bucket"), instance, checked, claims)  # type: ignore[arg-type]

    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert claims.released == []


def test_failed_flush_releases_claim(
    tmp_path: Path, instance: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = instance.read_bytes()
    claims = FlushingClaims(tmp_path, monkeypatch, len(data))
    checked = check_instance(data, "default")
    waiting_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        waiting_fsync(fd)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)

    with pytest.raises(StoreUnavailableError, match="Input/output error"):
        archive_file(FolderObjectStore(tmp_path, "bucket"), instance, checked, claims)  # type: ignore[arg-type]

    assert claims.released == [checked.key]
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
