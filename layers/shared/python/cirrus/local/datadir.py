"""Durability of the local stack: archive objects are kept in a folder as well as in moto.

moto keeps its state in memory. So the local stack writes every archive object to the data
folder first (written whole, flushed to disk, then renamed into place) and then to moto. On
start it uploads the folder's objects to moto again, and their notifications rebuild the index.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from cirrus.errors import CirrusError
from cirrus.storage.keys import INSTANCE_SUFFIX, InstanceKey
from cirrus.storage.objects import DICOM_CONTENT_TYPE, ObjectStore, StoredObject

logger = logging.getLogger(__name__)

_INCOMING_PREFIX = ".incoming-"


class DataDirObjectStore(ObjectStore):
    """An ``ObjectStore`` whose archive objects are also files under ``root``."""

    def __init__(self, client: Any, bucket: str, kms_key_id: str, root: Path) -> None:
        super().__init__(client, bucket, kms_key_id)
        self._root = root

    def put(self, key: str, body: bytes, content_type: str = DICOM_CONTENT_TYPE) -> StoredObject:
        path = self._path(key)
        _write_durably(path, lambda file: file.write(body))
        try:
            return super().put(key, body, content_type)
        except CirrusError:
            path.unlink(missing_ok=True)
            raise

    def put_file(
        self, key: str, path: Path, content_type: str = DICOM_CONTENT_TYPE
    ) -> StoredObject:
        saved = self._path(key)
        with path.open("rb") as source:
            _write_durably(saved, lambda file: shutil.copyfileobj(source, file))
        try:
            return super().put_file(key, path, content_type)
        except CirrusError:
            saved.unlink(missing_ok=True)
            raise

    def delete(self, keys: Sequence[str]) -> None:
        # Files go first: after a crash in between, the next start does not upload them again.
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        super().delete(keys)

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if not path.is_relative_to(self._root.resolve()):
            raise ValueError(f"object key {key!r} leaves the data folder")
        return path


def saved_objects(root: Path) -> Iterator[tuple[str, Path]]:
    """Yield the key and path of every archive object saved under ``root``."""
    for path in sorted(root.rglob(f"*{INSTANCE_SUFFIX}")):
        key = path.relative_to(root).as_posix()
        try:
            InstanceKey.parse(key)
        except ValueError:
            logger.warning("file in the data folder skipped", extra={"path": str(path)})
            continue
        yield key, path


def remove_partial_files(root: Path) -> int:
    """Delete the temporary files of writes that a crash interrupted; return their count.

    Such a write was never acknowledged, because ``put`` renames a file into place before it
    writes to moto and returns.
    """
    count = 0
    for path in root.rglob(f"{_INCOMING_PREFIX}*"):
        path.unlink(missing_ok=True)
        count += 1
    if count:
        logger.warning("interrupted writes removed from the data folder", extra={"files": count})
    return count


def restore_objects(store: ObjectStore, root: Path) -> int:
    """Upload every saved object to ``store`` (not a ``DataDirObjectStore``); return the count."""
    remove_partial_files(root)
    count = 0
    for key, path in saved_objects(root):
        store.put(key, path.read_bytes())
        count += 1
    return count


def _write_durably(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=_INCOMING_PREFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
