"""Local sources of an import: a folder (read recursively) or a ZIP file.

A source lists its units (files or ZIP members) in a fixed order that ``order`` defines, which
the checkpoint relies on, and imports each unit through a ``UnitImport``.
"""

from __future__ import annotations

import os
import threading
import zipfile
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from cirrus.archive import MAX_OBJECT_BYTES
from cirrus.bulk_import.outcome import Outcome, Result

# A ZIP member up to this size is read into memory; a larger one goes through a temporary file.
_IN_MEMORY_MEMBER_BYTES: Final = 32 * 1024 * 1024


class SourceUnavailableError(Exception):
    """The source cannot be read or reached: a missing path, a server that does not respond."""


class ImportStopped(Exception):
    """The run is stopping (Ctrl-C or an error elsewhere): the unit is left unfinished."""


@dataclass(frozen=True)
class Unit:
    """One item that the source lists: a file, a ZIP member or a study.

    ``instances`` is the number of instances it is expected to contain, when known. A unit that
    ``tracks_instances`` has its imported SOP Instance UIDs saved in the checkpoint until it is
    finished, so that a resumed run skips them.
    """

    key: str
    instances: int | None = 1
    tracks_instances: bool = False


class UnitImport(Protocol):
    """What a source calls to import the instances of one unit (``cirrus.bulk_import.run``)."""

    def file(self, path: Path, name: str) -> Outcome: ...

    def data(self, data: bytes, name: str, not_dicom: Result = Result.REJECTED) -> Outcome: ...

    def failed(self, name: str, reason: str) -> Outcome: ...


class Source(Protocol):
    description: str

    def units(self) -> Iterator[Unit]:
        """Yield the units in the order of ``order``."""
        ...

    def order(self, key: str) -> Hashable: ...

    def import_unit(self, unit: Unit, target: UnitImport) -> None: ...

    def close(self) -> None: ...


def path_order(key: str) -> Hashable:
    """Return the sort key of a relative path: a file sorts where a sorted walk reaches it."""
    return tuple(key.split("/"))


class FolderSource:
    """Every regular file under a folder, or one file; links to folders are not followed."""

    def __init__(self, root: Path) -> None:
        if not root.exists():
            raise SourceUnavailableError(f"{root} does not exist")
        self._root = root
        self.description = f"folder {root}" if root.is_dir() else f"file {root}"

    def units(self) -> Iterator[Unit]:
        if self._root.is_file():
            yield Unit(self._root.name)
            return
        for path in _walk(self._root):
            yield Unit(path.relative_to(self._root).as_posix())

    def count(self) -> int:
        return 1 if self._root.is_file() else sum(1 for _ in _walk(self._root))

    def order(self, key: str) -> Hashable:
        return path_order(key)

    def import_unit(self, unit: Unit, target: UnitImport) -> None:
        path = self._root if self._root.is_file() else self._root / unit.key
        try:
            target.file(path, unit.key)
        except OSError as exc:
            target.failed(unit.key, f"file could not be read: {exc.strerror or exc}")

    def close(self) -> None:
        pass


def _walk(folder: Path) -> Iterator[Path]:
    """Yield the regular files under ``folder`` depth first, each folder's entries by name."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif entry.is_file():
            yield Path(entry.path)


class ZipSource:
    """The members of a ZIP file, each read by the worker thread that imports it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.description = f"ZIP file {path}"
        self._local = threading.local()
        self._opened: list[zipfile.ZipFile] = []
        self._lock = threading.Lock()
        try:
            with zipfile.ZipFile(path) as archive:
                members = [info for info in archive.infolist() if not info.is_dir()]
        except (OSError, zipfile.BadZipFile) as exc:
            raise SourceUnavailableError(f"{path} cannot be read as a ZIP file: {exc}") from exc
        self._members = {info.filename: info for info in members}

    def units(self) -> Iterator[Unit]:
        for name in sorted(self._members, key=path_order):  # type: ignore[arg-type]
            yield Unit(name)

    def count(self) -> int:
        return len(self._members)

    def order(self, key: str) -> Hashable:
        return path_order(key)

    def import_unit(self, unit: Unit, target: UnitImport) -> None:
        info = self._members[unit.key]
        if info.file_size > MAX_OBJECT_BYTES:
            # Checked before extracting, so that a member cannot fill the disk first.
            reason = f"ZIP member of {info.file_size} bytes is larger than {MAX_OBJECT_BYTES}"
            target.failed(unit.key, reason)
            return
        try:
            if info.file_size <= _IN_MEMORY_MEMBER_BYTES:
                with self._archive().open(info) as member:
                    data = member.read()
                target.data(data, unit.key, not_dicom=Result.SKIPPED)
                return
            self._import_large(info, target)
        except (OSError, zipfile.BadZipFile, RuntimeError, ValueError) as exc:
            # zipfile raises RuntimeError for an encrypted member and BadZipFile for a CRC error.
            target.failed(unit.key, f"ZIP member could not be read: {exc}")

    def _import_large(self, info: zipfile.ZipInfo, target: UnitImport) -> None:
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory(prefix="cirrus-import-") as folder:
            path = Path(folder) / "member.dcm"
            with self._archive().open(info) as member, path.open("wb") as file:
                shutil.copyfileobj(member, file, 1024 * 1024)
            target.file(path, info.filename)

    def _archive(self) -> zipfile.ZipFile:
        archive: zipfile.ZipFile | None = getattr(self._local, "archive", None)
        if archive is None:
            archive = zipfile.ZipFile(self._path)
            self._local.archive = archive
            with self._lock:
                self._opened.append(archive)
        return archive

    def close(self) -> None:
        with self._lock:
            for archive in self._opened:
                archive.close()
            self._opened.clear()


def local_source(path: Path) -> FolderSource | ZipSource:
    """Return the source of ``PATH``: a ZIP file, or a folder or file read as it is."""
    if path.is_file() and not _is_part10(path) and zipfile.is_zipfile(path):
        return ZipSource(path)
    return FolderSource(path)


def _is_part10(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(132)[128:] == b"DICM"
