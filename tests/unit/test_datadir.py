"""The local data folder: durable writes, clean-up after a crash, and its lock."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from cirrus.errors import ConflictError, StoreUnavailableError
from cirrus.local.datadir import (
    TAGS_FOLDER,
    DataFolderInUseError,
    DataFolderLock,
    FolderObjectStore,
    remove_partial_files,
    saved_objects,
)
from cirrus.storage.objects import StoredObject


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


class DiskLog:
    """Records fsyncs and renames in order, by the path each one concerns."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_fsync_of: str = "") -> None:
        self.steps: list[tuple[str, str]] = []
        fsync, replace = os.fsync, os.replace

        def logged_fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if fail_fsync_of and fail_fsync_of in path:
                raise OSError(5, "Input/output error")
            fsync(fd)
            self.steps.append(("fsync", path))

        def logged_replace(source: str, target: str | Path) -> None:
            replace(source, target)
            self.steps.append(("rename", str(target)))

        monkeypatch.setattr(os, "fsync", logged_fsync)
        monkeypatch.setattr(os, "replace", logged_replace)

    def temporary_fsyncs(self) -> list[int]:
        return [n for n, (k, p) in enumerate(self.steps) if k == "fsync" and ".incoming-" in p]

    def index(self, kind: str, ending: str) -> int:
        (index,) = [n for n, (k, p) in enumerate(self.steps) if k == kind and p.endswith(ending)]
        return index


KEY = "sites/default/studies/1.2/series/1.3/instances/1.4.dcm"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_put_flushes_files_then_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FolderObjectStore(tmp_path, "bucket")
    log = DiskLog(monkeypatch)

    store.put(KEY, b"an object", tags={"site": "default"})

    object_folder = "/sites/default/studies/1.2/series/1.3/instances"
    tags_folder = f"/{TAGS_FOLDER}{object_folder}"
    temporary_fsyncs = [
        n for n, (k, p) in enumerate(log.steps) if k == "fsync" and ".incoming-" in p
    ]
    assert len(temporary_fsyncs) == 2
    assert max(temporary_fsyncs) < log.index("rename", f"{KEY}.json")
    assert log.index("rename", f"{KEY}.json") < log.index("rename", KEY)
    assert log.index("rename", KEY) < log.index("fsync", tags_folder)
    assert log.index("rename", KEY) < log.index("fsync", str(tmp_path) + object_folder)
    assert (tmp_path / KEY).read_bytes() == b"an object"
    assert store.tags(KEY) == {"site": "default"}


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_failed_fsync_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FolderObjectStore(tmp_path, "bucket")
    DiskLog(monkeypatch, fail_fsync_of="/instances/.incoming-")

    with pytest.raises(StoreUnavailableError, match="Input/output error"):
        store.put(KEY, b"an object", tags={"site": "default"})

    assert not (tmp_path / KEY).exists()
    assert not (tmp_path / TAGS_FOLDER / f"{KEY}.json").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".incoming-")]


def test_failed_write_closes_files(tmp_path: Path) -> None:
    store = FolderObjectStore(tmp_path, "bucket")
    open_before = len(os.listdir("/proc/self/fd"))

    def fail(file: object) -> str:
        raise OSError(28, "No space left on device")

    with pytest.raises(StoreUnavailableError, match="No space left on device"):
        store._write(KEY, fail, 0, tags={"site": "default"})

    assert len(os.listdir("/proc/self/fd")) == open_before
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".incoming-")]


class LoggedAdmission:
    """An admission that logs its steps and whether the object was readable at each."""

    def __init__(self, log: DiskLog, path: Path, reject_at: str = "") -> None:
        self.log, self.path, self.reject_at = log, path, reject_at
        self.readable: list[bool] = []

    def begin(self) -> None:
        self._step("begin")

    def finish(self) -> None:
        self._step("finish")

    def _step(self, name: str) -> None:
        self.log.steps.append((name, ""))
        self.readable.append(self.path.exists())
        if name == self.reject_at:
            raise ConflictError("held")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_admission_before_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FolderObjectStore(tmp_path, "bucket")
    log = DiskLog(monkeypatch)
    admission = LoggedAdmission(log, tmp_path / KEY)

    store.put_after(KEY, b"an object", admission, tags={"site": "default"})

    finished = log.steps.index(("finish", ""))
    assert log.steps.index(("begin", "")) < finished
    assert max(log.temporary_fsyncs()) < finished < log.index("rename", f"{KEY}.json")
    assert admission.readable == [False, False]
    assert (tmp_path / KEY).read_bytes() == b"an object"


@pytest.mark.parametrize("reject_at", ["begin", "finish"])
def test_rejected_admission_keeps_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reject_at: str
) -> None:
    store = FolderObjectStore(tmp_path, "bucket")
    store.put(KEY, b"the first object", tags={"site": "default"})
    source = tmp_path / "incoming.dcm"
    source.write_bytes(b"a second object")
    admission = LoggedAdmission(DiskLog(monkeypatch), tmp_path / KEY, reject_at)

    with pytest.raises(ConflictError, match="held"):
        store.put_file_after(KEY, source, admission, tags={"site": "other"})
    with pytest.raises(ConflictError, match="held"):
        store.put_after(KEY, b"a third object", admission)

    assert (tmp_path / KEY).read_bytes() == b"the first object"
    assert store.tags(KEY) == {"site": "default"}
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".incoming-")]


class FolderGatedNotifier:
    """A notifier that records the object as it reads at notification time.

    Every fsync of a folder waits until a notification is sent, so a notification sent after
    the folders' flush, or before the renames, fails the test.
    """

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self.sent = threading.Event()
        self.seen: list[bytes] = []
        fsync = os.fsync

        def gated_fsync(fd: int) -> None:
            if stat.S_ISDIR(os.fstat(fd).st_mode) and not self.sent.wait(timeout=10):
                raise OSError(5, "no notification sent during the folders' flush")
            fsync(fd)

        monkeypatch.setattr(os, "fsync", gated_fsync)

    def notifies(self, key: str) -> bool:
        return True

    def notify(self, stored: StoredObject) -> None:
        self.seen.append(self.path.read_bytes())
        self.sent.set()


def test_notification_during_folder_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notifier = FolderGatedNotifier(tmp_path / KEY, monkeypatch)
    store = FolderObjectStore(tmp_path, "bucket", notifier)  # type: ignore[arg-type]

    store.put(KEY, b"an object", tags={"site": "default"})

    assert notifier.seen == [b"an object"]


class FailingNotifier:
    """A notifier whose every notification fails, as when the ingest queue is gone."""

    def notifies(self, key: str) -> bool:
        return True

    def notify(self, stored: StoredObject) -> None:
        raise StoreUnavailableError("notification failed: QueueDoesNotExist")


def test_failed_notification_restores_object(tmp_path: Path) -> None:
    FolderObjectStore(tmp_path, "bucket").put(KEY, b"first version", tags={"version": "1"})
    store = FolderObjectStore(tmp_path, "bucket", FailingNotifier())  # type: ignore[arg-type]

    with pytest.raises(StoreUnavailableError, match="QueueDoesNotExist"):
        store.put(KEY, b"second version", tags={"version": "2"})

    assert store.get(KEY) == b"first version"
    assert store.tags(KEY) == {"version": "1"}
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".incoming-")]


def test_failed_notification_removes_new_object(tmp_path: Path) -> None:
    store = FolderObjectStore(tmp_path, "bucket", FailingNotifier())  # type: ignore[arg-type]

    with pytest.raises(StoreUnavailableError, match="QueueDoesNotExist"):
        store.put(KEY, b"an object", tags={"version": "1"})

    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
