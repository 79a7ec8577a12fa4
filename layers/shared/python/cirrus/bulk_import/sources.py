"""Local sources of an import: a folder (read recursively) or a ZIP file.

A source lists its units (files or ZIP members) in a fixed order that ``order`` defines, which
the checkpoint relies on, and imports each unit through a ``UnitImport``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Protocol

from cirrus.archive import MAX_OBJECT_BYTES
from cirrus.bulk_import.outcome import Outcome, Result

# A ZIP member up to this size is read into memory; a larger one goes through a temporary file.
_IN_MEMORY_MEMBER_BYTES: Final = 32 * 1024 * 1024
# How many levels of ZIP files inside the source are read: a ZIP file in the folder or ZIP
# file that the command names is at level 1, a ZIP file inside that one at level 2.
MAX_ZIP_DEPTH: Final = 4
# ZIP files that one worker thread keeps open at once.
_OPEN_PER_THREAD: Final = 8


class SourceUnavailableError(Exception):
    """The source cannot be read or reached: a missing path, a server that does not respond."""


class ImportStopped(Exception):
    """The run is stopping (Ctrl-C or an error elsewhere): the unit is left unfinished."""


@dataclass(frozen=True)
class Unit:
    """One item that the source lists: a file, a ZIP member or a study.

    ``instances`` is the number of instances it is expected to contain, when known. A unit that
    ``tracks_instances`` has its imported SOP Instance UIDs saved in the checkpoint until it is
    finished, so that a resumed run skips them. ``location`` is where the source finds it,
    when the key alone does not locate it.
    """

    key: str
    instances: int | None = 1
    tracks_instances: bool = False
    location: object = field(default=None, compare=False)


class UnitImport(Protocol):
    """What a source calls to import the instances of one unit (``cirrus.bulk_import.run``)."""

    def file(self, path: Path, name: str) -> Outcome: ...

    def data(self, data: bytes, name: str, not_dicom: Result = Result.REJECTED) -> Outcome: ...

    def failed(self, name: str, reason: str) -> Outcome: ...

    def note(self, name: str, result: Result, reason: str) -> Outcome:
        """Count ``name`` as ``result`` without reading it, such as a link to a folder."""
        ...


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
    """Every file under a folder, or one file; links to folders are not followed.

    A file whose name ends in ``.zip`` and that is a ZIP file is read as ``ZipSource`` reads
    one: its members are units whose keys start with the file's path.
    """

    def __init__(self, root: Path) -> None:
        if not root.exists():
            raise SourceUnavailableError(f"{root} does not exist")
        self._root = root
        self.description = f"folder {root}" if root.is_dir() else f"file {root}"
        self._zips = _NestedZips()

    def units(self) -> Iterator[Unit]:
        if self._root.is_file():
            yield Unit(self._root.name)
            return
        for path, note in _walk(self._root):
            key = path.relative_to(self._root).as_posix()
            if note is not None:
                yield Unit(key, location=note)
            elif _named_zip(key) and zipfile.is_zipfile(path):
                yield from self._zips.units(path, key, depth=1)
            else:
                yield Unit(key)

    def count(self) -> int:
        return 1 if self._root.is_file() else sum(1 for _ in self.units())

    def order(self, key: str) -> Hashable:
        return path_order(key)

    def import_unit(self, unit: Unit, target: UnitImport) -> None:
        if unit.location is not None:
            self._zips.import_unit(unit, target)
            return
        path = self._root if self._root.is_file() else self._root / unit.key
        try:
            target.file(path, unit.key)
        except OSError as exc:
            target.failed(unit.key, f"file could not be read: {exc.strerror or exc}")

    def close(self) -> None:
        self._zips.close()


def _walk(folder: Path) -> Iterator[tuple[Path, Note | None]]:
    """Yield the files under ``folder`` depth first, each folder's entries by name.

    An entry that is not read (a link to a folder, a link to nothing, a device) comes with
    the note that gives its result and reason.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)
        elif entry.is_file():
            yield path, None
        elif entry.is_symlink() and entry.is_dir():
            yield path, Note(Result.SKIPPED, "symbolic link to a folder, not followed")
        elif entry.is_symlink() and not path.exists():
            yield path, Note(Result.FAILED, "symbolic link to a file that does not exist")
        else:
            yield path, Note(Result.SKIPPED, "not a regular file")


class ZipSource:
    """The members of a ZIP file, each read by the worker thread that imports it.

    A member whose name ends in ``.zip`` and that is a ZIP file is read in turn, down to
    ``MAX_ZIP_DEPTH`` levels: its members are units whose keys start with its name.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self.description = f"ZIP file {path}"
        self._zips = _NestedZips()
        try:
            self._archive = _ZipArchive(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise SourceUnavailableError(f"{path} cannot be read as a ZIP file: {exc}") from exc

    def units(self) -> Iterator[Unit]:
        return self._zips.archive_units(self._archive, "", depth=0)

    def count(self) -> int:
        return sum(1 for _ in self.units())

    def order(self, key: str) -> Hashable:
        return path_order(key)

    def import_unit(self, unit: Unit, target: UnitImport) -> None:
        self._zips.import_unit(unit, target)

    def close(self) -> None:
        self._zips.close()


@dataclass(frozen=True)
class Note:
    """The outcome of a unit that is not read, such as a link to a folder."""

    result: Result
    reason: str


@dataclass(frozen=True)
class _Member:
    """A member of a ZIP file of the source."""

    archive: _ZipArchive
    info: zipfile.ZipInfo


class _ZipArchive:
    """A ZIP file on disk and its members, in the order of ``path_order``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with zipfile.ZipFile(path) as archive:
            infos = [info for info in archive.infolist() if not info.is_dir()]
        self.members = sorted(infos, key=lambda info: info.filename.split("/"))


class _NestedZips:
    """The ZIP files of one source, nested ones included, and their open handles.

    A ZIP inside a ZIP is copied to a temporary file when the units are listed, because a ZIP
    file is read by seeking, which a compressed member does not allow. ``close`` deletes the
    copies. Each worker thread opens a ZIP file once and keeps at most ``_OPEN_PER_THREAD``
    open, so that a folder of many ZIP files does not use up the file descriptors.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._opened: set[zipfile.ZipFile] = set()
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._copies: dict[str, Path] = {}

    def units(self, path: Path, key: str, depth: int) -> Iterator[Unit]:
        """Yield the units of the ZIP file ``path``, which the report calls ``key``."""
        try:
            archive = _ZipArchive(path)
        except (OSError, zipfile.BadZipFile) as exc:
            yield Unit(key, location=Note(Result.FAILED, f"ZIP file could not be read: {exc}"))
            return
        yield from self.archive_units(archive, key, depth)

    def archive_units(self, archive: _ZipArchive, prefix: str, depth: int) -> Iterator[Unit]:
        for info in archive.members:
            key = f"{prefix}/{info.filename}" if prefix else info.filename
            if not _named_zip(info.filename):
                yield Unit(key, location=_Member(archive, info))
            elif depth >= MAX_ZIP_DEPTH:
                reason = f"ZIP file nested more than {MAX_ZIP_DEPTH} levels deep is not read"
                yield Unit(key, location=Note(Result.FAILED, reason))
            elif info.file_size > MAX_OBJECT_BYTES:
                yield Unit(key, location=Note(Result.FAILED, _too_large(info)))
            else:
                yield from self._inner_units(archive, info, key, depth + 1)

    def _inner_units(
        self, archive: _ZipArchive, info: zipfile.ZipInfo, key: str, depth: int
    ) -> Iterator[Unit]:
        try:
            path = self._copy(archive, info, key)
        except (OSError, zipfile.BadZipFile, RuntimeError, ValueError) as exc:
            yield Unit(key, location=Note(Result.FAILED, f"ZIP member could not be read: {exc}"))
            return
        if not zipfile.is_zipfile(path):
            # Named .zip but not a ZIP file: imported as any other member, which skips it.
            yield Unit(key, location=_Member(archive, info))
            return
        yield from self.units(path, key, depth)

    def _copy(self, archive: _ZipArchive, info: zipfile.ZipInfo, key: str) -> Path:
        """Copy the member ``info`` to a temporary file once; return the file's path."""
        with self._lock:
            if key in self._copies:
                return self._copies[key]
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="cirrus-import-zip-")
            path = Path(self._folder.name) / f"{len(self._copies)}.zip"
            self._copies[key] = path
        with self.handle(archive).open(info) as member, path.open("wb") as file:
            shutil.copyfileobj(member, file, 1024 * 1024)
        return path

    def handle(self, archive: _ZipArchive) -> zipfile.ZipFile:
        """Return this thread's open handle of ``archive``."""
        handles: OrderedDict[Path, zipfile.ZipFile] | None = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = OrderedDict()
        handle = handles.get(archive.path)
        if handle is not None:
            handles.move_to_end(archive.path)
            return handle
        if len(handles) >= _OPEN_PER_THREAD:
            _, oldest = handles.popitem(last=False)
            oldest.close()
            with self._lock:
                self._opened.discard(oldest)
        handle = handles[archive.path] = zipfile.ZipFile(archive.path)
        with self._lock:
            self._opened.add(handle)
        return handle

    def import_unit(self, unit: Unit, target: UnitImport) -> None:
        location = unit.location
        if isinstance(location, Note):
            target.note(unit.key, location.result, location.reason)
            return
        assert isinstance(location, _Member)
        _import_member(self.handle(location.archive), location.info, unit.key, target)

    def close(self) -> None:
        with self._lock:
            for handle in self._opened:
                handle.close()
            self._opened.clear()
            if self._folder is not None:
                self._folder.cleanup()
                self._folder = None
            self._copies.clear()


def _import_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, target: UnitImport
) -> None:
    if info.file_size > MAX_OBJECT_BYTES:
        # Checked before extracting, so that a member cannot fill the disk first.
        target.failed(key, _too_large(info))
        return
    try:
        if info.file_size <= _IN_MEMORY_MEMBER_BYTES:
            with archive.open(info) as member:
                data = member.read()
            target.data(data, key, not_dicom=Result.SKIPPED)
            return
        with tempfile.TemporaryDirectory(prefix="cirrus-import-") as folder:
            path = Path(folder) / "member.dcm"
            with archive.open(info) as member, path.open("wb") as file:
                shutil.copyfileobj(member, file, 1024 * 1024)
            target.file(path, key)
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError) as exc:
        # zipfile raises RuntimeError for an encrypted member and BadZipFile for a CRC error.
        target.failed(key, f"ZIP member could not be read: {exc}")


def _too_large(info: zipfile.ZipInfo) -> str:
    return f"ZIP member of {info.file_size} bytes is larger than {MAX_OBJECT_BYTES}"


def _named_zip(name: str) -> bool:
    return name.lower().endswith(".zip")


class PathsSource:
    """Several PATH arguments, read one after the other in the order given.

    A unit's key is the PATH as given, then "/" and the key within it (a file given alone has
    no key within it), so that the report names each file by the path that reaches it.
    """

    def __init__(self, sources: list[FolderSource | ZipSource], paths: tuple[Path, ...]) -> None:
        if len(set(paths)) != len(paths):
            raise SourceUnavailableError("a PATH is given twice; give each one once")
        self._sources = sources
        self._prefixes = {str(path): number for number, path in enumerate(paths)}
        self._files = {
            str(path)
            for path, source in zip(paths, sources, strict=True)
            if isinstance(source, FolderSource) and path.is_file()
        }
        self.description = f"{len(paths)} paths ({', '.join(map(str, paths[:3]))}"
        self.description += ", ...)" if len(paths) > 3 else ")"

    def units(self) -> Iterator[Unit]:
        for prefix, source in zip(self._prefixes, self._sources, strict=True):
            for unit in source.units():
                key = prefix if prefix in self._files else f"{prefix}/{unit.key}"
                yield replace(unit, key=key)

    def count(self) -> int:
        return sum(source.count() for source in self._sources)

    def _split(self, key: str) -> tuple[int, str]:
        """Return the number of the PATH that ``key`` starts with, and the key within it."""
        parts = key.split("/")
        for end in range(len(parts), 0, -1):
            number = self._prefixes.get("/".join(parts[:end]))
            if number is not None:
                return number, "/".join(parts[end:])
        raise KeyError(key)

    def order(self, key: str) -> Hashable:
        number, inner = self._split(key)
        return (number, self._sources[number].order(inner))

    def import_unit(self, unit: Unit, target: UnitImport) -> None:
        number, inner = self._split(unit.key)
        self._sources[number].import_unit(replace(unit, key=inner), _Renamed(target, unit.key))

    def close(self) -> None:
        for source in self._sources:
            source.close()


class _Renamed:
    """A ``UnitImport`` that reports a unit's outcomes under the key given to its source."""

    def __init__(self, target: UnitImport, key: str) -> None:
        self._target = target
        self._key = key

    def file(self, path: Path, name: str) -> Outcome:
        return self._target.file(path, self._key)

    def data(self, data: bytes, name: str, not_dicom: Result = Result.REJECTED) -> Outcome:
        return self._target.data(data, self._key, not_dicom)

    def failed(self, name: str, reason: str) -> Outcome:
        return self._target.failed(self._key, reason)

    def note(self, name: str, result: Result, reason: str) -> Outcome:
        return self._target.note(self._key, result, reason)


def local_source(path: Path) -> FolderSource | ZipSource:
    """Return the source of ``PATH``: a ZIP file, or a folder or file read as it is."""
    if path.is_file() and not _is_part10(path) and zipfile.is_zipfile(path):
        return ZipSource(path)
    return FolderSource(path)


def _is_part10(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(132)[128:] == b"DICM"
