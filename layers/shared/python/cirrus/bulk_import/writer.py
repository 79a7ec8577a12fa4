"""Import one instance through the archive's write path, and classify what happened.

An instance is checked as C-STORE and STOW-RS check it (``cirrus.archive``). Its SOP Instance
UID is claimed for its storage key and it is written to the object store, whose notification
makes ingest index it. The archive's duplicate policy holds. An instance stored already under
the same key with the same bytes is a duplicate and is not written again. One with other bytes
replaces the stored one. One whose SOP Instance UID is stored under other study or series UIDs
is rejected.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from pydicom.uid import MediaStorageDirectoryStorage

from cirrus.archive import (
    CheckedInstance,
    archive_file,
    archive_instance,
    check_header,
    check_instance,
    check_size,
)
from cirrus.bulk_import.outcome import Outcome, Result
from cirrus.dicom.instance import InstanceHeader, parse_instance
from cirrus.errors import ConflictError, InvalidInstanceError, NotFoundError
from cirrus.index.claims import InstanceClaims
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

# A Part 10 file has a 128-byte preamble and then the prefix "DICM" (PS3.10 7.1).
_PREAMBLE_BYTES: Final = 128
_PREFIX: Final = b"DICM"
_COMPARE_CHUNK_BYTES: Final = 8 * 1024 * 1024
_KEY_LOCKS: Final = 256
# How long an import waits for an instance that another writer has claimed but not yet stored.
# An estimate of the longest upload of one instance: 5 GiB at about 50 MB/s is 100 s.
CLAIM_WAIT_SECONDS: Final = 120.0
_CLAIM_POLL_SECONDS: Final = 0.2
NOT_PART10: Final = "not a DICOM Part 10 file: no DICM prefix after the 128-byte preamble"
DICOMDIR: Final = "DICOMDIR: a media directory, not an instance"
# The signature of a ZIP file's first local file header (APPNOTE.TXT 4.3.7).
_ZIP_SIGNATURE: Final = b"PK\x03\x04"
UNNAMED_ZIP: Final = "ZIP file not read because its name does not end in .zip; rename it"


class InstanceImporter:
    """Imports instances into the archive of one site; shared by the import's worker threads."""

    def __init__(self, store: ObjectStore, claims: InstanceClaims | None, site: str) -> None:
        self._store = store
        self._claims = claims
        self.site = site
        # Two files of one instance in a source would otherwise both find no object and both
        # count as stored. A key's check and write run under the lock that its hash selects.
        self._key_locks = [threading.Lock() for _ in range(_KEY_LOCKS)]

    def import_file(self, path: Path, name: str) -> Outcome:
        """Import the file ``path``, which the report calls ``name``.

        A file that is not Part 10 DICOM, or is a DICOMDIR, is skipped, except a ZIP file, which
        fails because the source named it as no ZIP file (see ``sources``). Raises
        ``StoreUnavailableError`` when the object store or the index fail.
        """
        with path.open("rb") as file:
            start = file.read(_PREAMBLE_BYTES + len(_PREFIX))
        if start[_PREAMBLE_BYTES:] != _PREFIX:
            result, reason = _not_part10(start)
            return Outcome(name, result, reason, path.stat().st_size)
        # Imported here: the gateway's modules load pynetdicom, which a folder import needs
        # for nothing else.
        from cirrus.gateway.spool import read_spooled_header

        try:
            header, size = read_spooled_header(path)
        except InvalidInstanceError as exc:
            return Outcome(name, Result.REJECTED, str(exc), path.stat().st_size)
        except Exception as exc:  # noqa: BLE001 - any parser error rejects this file only
            reason = f"data set could not be parsed: {type(exc).__name__}"
            return Outcome(name, Result.REJECTED, reason, path.stat().st_size)
        if _is_dicomdir(header):
            return Outcome(name, Result.SKIPPED, DICOMDIR, size)
        try:
            check_size(size)
            checked = check_header(header, self.site)
        except InvalidInstanceError as exc:
            return Outcome(name, Result.REJECTED, str(exc), size)
        return self._write(name, checked, size, path=path)

    def import_bytes(self, data: bytes, name: str) -> Outcome:
        """Import the Part 10 object ``data`` that a remote source sent.

        Bytes that are not a Part 10 instance, or are a DICOMDIR, are rejected, because the
        source announced them as an instance. Raises ``StoreUnavailableError`` as
        ``import_file`` does.
        """
        if data[_PREAMBLE_BYTES : _PREAMBLE_BYTES + len(_PREFIX)] != _PREFIX:
            result, reason = _not_part10(data[: len(_ZIP_SIGNATURE)], Result.REJECTED)
            return Outcome(name, result, reason, len(data))
        try:
            header = parse_instance(data)
            if _is_dicomdir(header):
                return Outcome(name, Result.REJECTED, DICOMDIR, len(data))
            checked = check_instance(data, self.site, header)
        except InvalidInstanceError as exc:
            return Outcome(name, Result.REJECTED, str(exc), len(data))
        except Exception as exc:  # noqa: BLE001 - any parser error rejects this instance only
            reason = f"data set could not be parsed: {type(exc).__name__}"
            return Outcome(name, Result.REJECTED, reason, len(data))
        return self._write(name, checked, len(data), data=data)

    def _write(
        self,
        name: str,
        checked: CheckedInstance,
        size: int,
        path: Path | None = None,
        data: bytes | None = None,
    ) -> Outcome:
        key = checked.key.object_key
        with self._key_locks[hash(key) % _KEY_LOCKS]:
            return self._write_locked(name, checked, size, path, data)

    def _write_locked(
        self,
        name: str,
        checked: CheckedInstance,
        size: int,
        path: Path | None,
        data: bytes | None,
    ) -> Outcome:
        key = checked.key.object_key
        existing = self._stored_size(key)
        if existing is None and self._claims is not None:
            try:
                created = self._claims.claim(checked.key)
            except ConflictError as exc:
                return Outcome(name, Result.REJECTED, str(exc), size, key)
            if not created:
                # Another writer claimed this key, and its object was missing at the check
                # above: another import of the same source, or a C-STORE, is writing it now.
                existing = self._wait_for_object(key)
            else:
                return self._write_claimed(name, checked, size, path, data)
        if existing == size and self._same_content(key, _chunks(path, data)):
            return Outcome(name, Result.DUPLICATE, size=size, object_key=key)
        try:
            self._archive(checked, path, data, self._claims)
        except (ConflictError, InvalidInstanceError) as exc:
            return Outcome(name, Result.REJECTED, str(exc), size, key)
        result = Result.STORED if existing is None else Result.REPLACED
        return Outcome(name, result, size=size, object_key=key)

    def _write_claimed(
        self,
        name: str,
        checked: CheckedInstance,
        size: int,
        path: Path | None,
        data: bytes | None,
    ) -> Outcome:
        """Write an instance whose claim this call created; release the claim if that fails."""
        assert self._claims is not None
        key = checked.key.object_key
        try:
            self._archive(checked, path, data, None)
        except BaseException as exc:
            self._claims.release(checked.key)
            if isinstance(exc, InvalidInstanceError):
                return Outcome(name, Result.REJECTED, str(exc), size, key)
            raise
        return Outcome(name, Result.STORED, size=size, object_key=key)

    def _archive(
        self,
        checked: CheckedInstance,
        path: Path | None,
        data: bytes | None,
        claims: InstanceClaims | None,
    ) -> None:
        if path is not None:
            archive_file(self._store, path, checked, claims)
        else:
            assert data is not None
            archive_instance(self._store, self.site, data, checked, claims)

    def _wait_for_object(self, key: str) -> int | None:
        """Return the size of object ``key`` once another writer has stored it.

        Returns None when it is still missing after ``CLAIM_WAIT_SECONDS``: the other write
        failed, or takes longer, and this one then writes the instance too.
        """
        deadline = time.monotonic() + CLAIM_WAIT_SECONDS
        while True:
            size = self._stored_size(key)
            if size is not None or time.monotonic() >= deadline:
                return size
            time.sleep(_CLAIM_POLL_SECONDS)

    def _stored_size(self, key: str) -> int | None:
        try:
            return self._store.size(key)
        except NotFoundError:
            return None

    def _same_content(self, key: str, chunks: Iterator[bytes]) -> bool:
        """Tell whether object ``key`` has the bytes of ``chunks``, read in ranges.

        The ETag is no content hash for an object encrypted with SSE-KMS, so the bytes are
        compared.
        """
        offset = 0
        for chunk in chunks:
            stored, _ = self._store.get_range(key, offset, offset + len(chunk))
            if stored != chunk:
                return False
            offset += len(chunk)
        return True


def _chunks(path: Path | None, data: bytes | None) -> Iterator[bytes]:
    if data is not None:
        for start in range(0, len(data), _COMPARE_CHUNK_BYTES):
            yield data[start : start + _COMPARE_CHUNK_BYTES]
        return
    assert path is not None
    with path.open("rb") as file:
        while chunk := file.read(_COMPARE_CHUNK_BYTES):
            yield chunk


def _not_part10(start: bytes, result: Result = Result.SKIPPED) -> tuple[Result, str]:
    """Return how to count a file that is not Part 10: a ZIP file fails, so the run exits 1."""
    if start.startswith(_ZIP_SIGNATURE):
        return Result.FAILED, UNNAMED_ZIP
    return result, NOT_PART10


def _is_dicomdir(header: InstanceHeader) -> bool:
    sop_class = header.file_meta.get("MediaStorageSOPClassUID", "")
    return str(sop_class) == MediaStorageDirectoryStorage
