"""The write path's SOP Instance UID claim, run while the local object store writes the file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cirrus.archive import archive_file, check_instance
from cirrus.errors import ConflictError, StoreUnavailableError
from cirrus.local.datadir import FolderObjectStore
from cirrus.storage.keys import InstanceKey
from tests.pydicom_files import bundled


class GatedClaims:
    """Claims that wait until the object's hidden file is written, then answer ``created``."""

    def __init__(self, written: threading.Event, created: bool = True) -> None:
        self.written = written
        self.created = created
        self.failure: Exception | None = None
        self.released: list[InstanceKey] = []

    def claim(self, key: InstanceKey) -> bool:
        if not self.written.wait(timeout=10):
            raise StoreUnavailableError("the store did not write while the claim ran")
        if self.failure is not None:
            raise self.failure
        return self.created

    def release(self, key: InstanceKey) -> None:
        self.released.append(key)


class SignallingStore(FolderObjectStore):
    """A folder store that sets ``written`` once a hidden file is flushed, before ``admit``."""

    def __init__(self, root: Path, written: threading.Event) -> None:
        super().__init__(root, "bucket")
        self.written = written

    def put_file_after(self, key, path, admit, tags=None):  # type: ignore[no-untyped-def]
        def signal_then_admit() -> None:
            self.written.set()
            admit()

        return super().put_file_after(key, path, signal_then_admit, tags=tags)


@pytest.fixture
def instance() -> Path:
    return bundled("CT_small.dcm")


def test_claim_runs_while_the_file_is_written(tmp_path: Path, instance: Path) -> None:
    written = threading.Event()
    claims = GatedClaims(written)
    store = SignallingStore(tmp_path, written)
    checked = check_instance(instance.read_bytes(), "default")

    archived = archive_file(store, instance, checked, claims)  # type: ignore[arg-type]

    assert (tmp_path / archived.key.object_key).read_bytes() == instance.read_bytes()
    assert claims.released == []


def test_conflicting_claim_leaves_no_file(tmp_path: Path, instance: Path) -> None:
    written = threading.Event()
    claims = GatedClaims(written)
    claims.failure = ConflictError("stored in another study")
    store = SignallingStore(tmp_path, written)
    checked = check_instance(instance.read_bytes(), "default")

    with pytest.raises(ConflictError, match="another study"):
        archive_file(store, instance, checked, claims)  # type: ignore[arg-type]

    assert not (tmp_path / checked.key.object_key).exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert claims.released == []


def test_failed_write_releases_a_new_claim(tmp_path: Path, instance: Path) -> None:
    written = threading.Event()
    written.set()
    claims = GatedClaims(written)
    store = FolderObjectStore(tmp_path, "bucket")
    checked = check_instance(instance.read_bytes(), "default")
    # The object's folder is a file, so the write fails before the claim is awaited.
    (tmp_path / "sites").write_bytes(b"not a folder")

    with pytest.raises(StoreUnavailableError):
        archive_file(store, instance, checked, claims)  # type: ignore[arg-type]

    assert claims.released == [checked.key]
