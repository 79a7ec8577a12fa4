"""Received C-STORE data sets go to files in a spool folder, within the gateway's limits.

pynetdicom 3.0.4 writes a C-STORE data set to a file instead of memory when
``_config.STORE_RECV_CHUNKED_DATASET`` is true. ``C_STORE_RQ.decode_msg`` (in
``pynetdicom.dimse_messages``) opens the file with ``NamedTemporaryFile`` once the command set
has arrived, writes a File Meta Information and then each data set fragment to it, and
``StorageServiceClass.SCP`` closes and deletes the file after the EVT_C_STORE handler.

That flag and that function are process-wide, and other AEs in the process (test peers, the
SCU side of C-GET) must keep pynetdicom's default behaviour. So ``install_spooling``
replaces both names in ``pynetdicom.dimse_messages`` with versions that act differently only
in the DUL thread of an association of an AE that has a ``Spool`` (the gateway's
``GatewayAE``). There the data set goes to a ``SpoolFile`` in that spool's folder, which
keeps three bounds as the bytes arrive:

- a data set larger than ``max_instance_bytes`` is dropped from then on;
- a data set whose bytes would take the bytes of its association's spool files past
  ``association_spool_limit`` is dropped as well;
- so is a data set whose bytes would take the bytes of all spool files past ``spool_bytes``.

A dropped data set is still read to its end, because DIMSE has no way to stop a C-STORE
midway, and the command set of a C-STORE request has no data set length to check first.
Only its size is kept. The C-STORE handler then finds ``rejection`` set and returns 0xA700.
Spool files of associations that end before their handler runs (an abort in the middle of a
data set, for one) are deleted by ``discard`` at the end of the association.

In the same threads, ``install_spooling`` also replaces ``create_file_meta`` and
``write_file_meta_info`` of ``pynetdicom.dimse_messages``, so that the File Meta Information
of a spool file is encoded by ``SpoolFileMeta`` instead of through a pydicom data set, which
took 2.3 M of the 14.8 M instructions that the stubbed gateway of ``bench/gateway_alone.py``
ran per stored instance (callgrind).
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pynetdicom import (
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    _config,
    dimse_messages,
)
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

from cirrus.dicom.instance import MAX_INFLATED_BYTES, InstanceHeader
from cirrus.errors import InstanceTooLargeError
from cirrus.gateway.limits import GatewayLimits
from cirrus.ingest import FIRST_READ_BYTES, read_header

logger = logging.getLogger(__name__)

SPOOL_PREFIX: Final = "cirrus-spool-"
SPOOL_SUFFIX: Final = ".dcm"
# The start of a Part 10 file (PS3.10 7.1): a 128-byte preamble of zeros, as pynetdicom
# writes it, and the "DICM" prefix.
PREAMBLE_AND_PREFIX: Final = b"\0" * 128 + b"DICM"
# The maximum number of bytes that ``read_spooled_header`` reads at once. Ingest reads a
# header in ranges, but a deflated data set, or elements after encapsulated Pixel Data, need
# the whole object.
MAX_WHOLE_READ_BYTES: Final = MAX_INFLATED_BYTES
# The first bytes of a spool file that ``SpoolFile`` keeps in memory: the first range that
# ``cirrus.ingest.read_header`` reads, which contains the whole header of most instances.
HEAD_BYTES: Final = FIRST_READ_BYTES

# The maximum even length of a value in an explicit VR element with a 2-byte length field.
_MAX_SHORT_VALUE_BYTES: Final = 0xFFFE

_install_lock = threading.Lock()
_original_named_temporary_file: Any = None
_original_create_file_meta: Any = None
_original_write_file_meta_info: Any = None


class SpoolFile:
    """One received data set on disk, as a file that pynetdicom writes to.

    pynetdicom uses ``name``, ``write``, ``file.flush()`` and ``close`` of the object that
    ``NamedTemporaryFile`` returns, so this class offers the same. The file is unbuffered, so
    that a failed write (a full disk, a file size limit) raises in ``write``, which turns it
    into a rejection. pynetdicom calls ``file.flush()`` itself, outside any handler, and an
    error there would end the association's DUL thread and leave the sender waiting.
    """

    def __init__(self, spool: Spool, assoc: Association) -> None:
        fd, name = tempfile.mkstemp(dir=spool.directory, prefix="store-", suffix=SPOOL_SUFFIX)
        self.name = name
        self._file = os.fdopen(fd, "wb", buffering=0)
        self.path = Path(name)
        self.received = 0
        self.rejection: str | None = None
        # The first bytes of the file, which ``read_spool_file_header`` reads from memory.
        self.head = bytearray()
        self.assoc = assoc
        self._spool = spool
        self._reserved = 0
        self._closed = False

    def write(self, data: bytes) -> int:
        """Write ``data`` unless the data set is rejected, and count it in either case."""
        self.received += len(data)
        if self.rejection is not None:
            return len(data)
        rejection = self._spool.reserve(self, len(data))
        if rejection is not None:
            self.reject(rejection)
            return len(data)
        view = memoryview(data)
        missing = HEAD_BYTES - len(self.head)
        if missing > 0:
            self.head += view[:missing]
        try:
            # An unbuffered write may take only part of the data, when the disk is nearly full.
            while view:
                view = view[self._file.write(view) :]
        except OSError as exc:
            self.reject(f"the gateway could not spool the data set: {exc.strerror}")
        return len(data)

    @property
    def file(self) -> SpoolFile:
        """This object, for pynetdicom's ``file.flush()``."""
        return self

    def flush(self) -> None:
        """Do nothing: the file is unbuffered, so ``write`` has written everything."""

    def reject(self, reason: str) -> None:
        """Drop what was written and keep no more, so the spool space is free for others."""
        self.rejection = reason
        self.head = bytearray()
        try:
            self._file.truncate(0)
        except OSError as exc:
            logger.warning("spool file not truncated", extra={"path": self.name, "error": str(exc)})
        self._release()

    def close(self) -> None:
        """Close the file, which keeps its place in the spool until ``delete``."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.close()
        except OSError as exc:
            logger.warning("spool file not closed", extra={"path": self.name, "error": str(exc)})

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        if self._reserved:
            self._spool.release(self.assoc, self._reserved)
            self._reserved = 0

    def _add_reserved(self, size: int) -> None:
        self._reserved += size


class Spool:
    """The spool folder of one gateway and the count of the bytes in it."""

    def __init__(self, limits: GatewayLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._directory: Path | None = None
        self._used = 0
        # The reserved bytes of each association that has any.
        self._association_used: dict[Association, int] = {}
        self._open: dict[Association, set[SpoolFile]] = {}

    @property
    def directory(self) -> Path:
        """The spool folder, created for the first data set.

        Each gateway has a folder of its own under ``limits.spool_root``, so that several
        gateway processes can share one spool root.
        """
        with self._lock:
            if self._directory is None:
                root = self.limits.spool_root
                self._directory = Path(tempfile.mkdtemp(prefix=SPOOL_PREFIX, dir=root))
            return self._directory

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used

    def open_file(self, assoc: Association) -> SpoolFile:
        spool_file = SpoolFile(self, assoc)
        with self._lock:
            self._open.setdefault(assoc, set()).add(spool_file)
        return spool_file

    def reserve(self, spool_file: SpoolFile, size: int) -> str | None:
        """Count ``size`` more bytes of ``spool_file``; return a rejection when a bound is hit.

        The rejection is the Error Comment of the C-STORE response.
        """
        limits = self.limits
        if spool_file.received > limits.max_instance_bytes:
            return f"instance exceeds the gateway's maximum of {limits.max_instance_bytes} bytes"
        assoc = spool_file.assoc
        association_limit = limits.association_spool_limit
        with self._lock:
            association_used = self._association_used.get(assoc, 0)
            if association_used + size > association_limit:
                return f"association exceeds its maximum of {association_limit} spooled bytes"
            if self._used + size > limits.spool_bytes:
                return "the gateway's spool space is full; retry later"
            self._used += size
            self._association_used[assoc] = association_used + size
        spool_file._add_reserved(size)
        return None

    def release(self, assoc: Association, size: int) -> None:
        with self._lock:
            self._used -= size
            remaining = self._association_used.pop(assoc, 0) - size
            if remaining > 0:
                self._association_used[assoc] = remaining

    def take(self, spool_file: SpoolFile) -> None:
        """Hand ``spool_file`` to its C-STORE handler, which deletes it when done."""
        with self._lock:
            files = self._open.get(spool_file.assoc)
            if files is not None:
                files.discard(spool_file)

    def discard(self, assoc: Association) -> None:
        """Delete the spool files of ``assoc`` that no handler took."""
        with self._lock:
            files = self._open.pop(assoc, set())
        for spool_file in files:
            spool_file.delete()
        if files:
            logger.info(
                "spooled data sets of an ended association deleted", extra={"files": len(files)}
            )

    def remove(self) -> None:
        """Delete the spool folder with whatever it still contains."""
        with self._lock:
            directory, self._directory = self._directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


class _FileReader:
    """A spooled file as ``cirrus.ingest.read_header`` reads an object, by byte ranges.

    A range within ``head``, the first bytes of the file, is read from memory.
    """

    def __init__(self, path: Path, head: bytes | bytearray = b"", size: int | None = None) -> None:
        self._path = path
        self._head = head
        self.size = path.stat().st_size if size is None else size

    def get(self, key: str) -> bytes:
        if self.size > MAX_WHOLE_READ_BYTES:
            raise InstanceTooLargeError(
                f"reading this header needs the whole {self.size}-byte instance; "
                f"the gateway reads at most {MAX_WHOLE_READ_BYTES} bytes at once"
            )
        return self._path.read_bytes()

    def get_range(self, key: str, start: int, end: int | None = None) -> tuple[bytes, int]:
        stop = self.size if end is None else min(end, self.size)
        if stop <= len(self._head):
            with memoryview(self._head) as head:
                return bytes(head[start:stop]), self.size
        with self._path.open("rb") as file:
            file.seek(start)
            data = file.read(-1 if end is None else max(0, end - start))
        return data, self.size


def read_spooled_header(path: Path) -> tuple[InstanceHeader, int]:
    """Parse the header of the spooled Part 10 file ``path``; return it and the file's size.

    Reads only what ingest will read from S3, so Pixel Data stays on disk. Raises what
    ``cirrus.dicom.instance.parse_instance`` raises, and ``InstanceTooLargeError``.
    """
    reader = _FileReader(path)
    return read_header(reader, path.name)


def read_spool_file_header(spool_file: SpoolFile) -> tuple[InstanceHeader, int]:
    """Parse the header of the closed ``spool_file`` as ``read_spooled_header`` does.

    The ranges within the first ``HEAD_BYTES`` come from the bytes that ``write`` kept, which
    saves opening the file for most headers. Only for a file that was not rejected, because
    a rejected file is empty.
    """
    reader = _FileReader(spool_file.path, spool_file.head, spool_file.received)
    return read_header(reader, spool_file.path.name)


def _short_element(tag: int, vr: bytes, value: bytes) -> bytes:
    """Return an Explicit VR Little Endian element whose VR has a 2-byte length."""
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _padded(text: str, padding: bytes) -> bytes:
    encoded = text.encode("ascii")
    return encoded + padding if len(encoded) % 2 else encoded


@dataclass(frozen=True)
class SpoolFileMeta:
    """The File Meta Information that pynetdicom writes ahead of a spooled C-STORE data set.

    ``encode`` returns the bytes that pydicom's ``write_file_meta_info`` writes for the data
    set of pynetdicom 3.0.4's ``create_file_meta`` with the same values.
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    implementation_uid: str = PYNETDICOM_IMPLEMENTATION_UID
    implementation_version: str = PYNETDICOM_IMPLEMENTATION_VERSION

    def encode(self) -> bytes | None:
        """Return the group 0002 elements, or None for a value that is empty or not short ASCII.

        pydicom then encodes the values, or raises for an empty one, as for any File Meta
        Information without its Type 1 elements.
        """
        uids = (self.sop_class_uid, self.sop_instance_uid, self.transfer_syntax)
        if not all(uids):
            return None
        if not all(value.isascii() for value in (*uids, self.implementation_uid)):
            return None
        if not self.implementation_version.isascii():
            return None
        padded_uids = [_padded(uid, b"\0") for uid in (*uids, self.implementation_uid)]
        padded_version = _padded(self.implementation_version, b" ")
        if any(len(value) > _MAX_SHORT_VALUE_BYTES for value in (*padded_uids, padded_version)):
            return None
        body = b"".join(
            [
                # (0002,0001) File Meta Information Version: OB has a 4-byte length.
                struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\0\1",
                _short_element(0x00020002, b"UI", padded_uids[0]),
                _short_element(0x00020003, b"UI", padded_uids[1]),
                _short_element(0x00020010, b"UI", padded_uids[2]),
                _short_element(0x00020012, b"UI", padded_uids[3]),
                _short_element(0x00020013, b"SH", padded_version),
            ]
        )
        group_length = _short_element(0x00020000, b"UL", struct.pack("<I", len(body)))
        return group_length + body


def _create_file_meta(**kwargs: Any) -> Any:
    """Return a ``SpoolFileMeta`` in a spooling thread, else pynetdicom's data set."""
    if _spool_of_current_thread() is None:
        return _original_create_file_meta(**kwargs)
    values = [kwargs[name] for name in ("sop_class_uid", "sop_instance_uid", "transfer_syntax")]
    sop_class, sop_instance, transfer_syntax = ["" if v is None else str(v) for v in values]
    return SpoolFileMeta(sop_class, sop_instance, transfer_syntax)


def _write_file_meta_info(fp: Any, file_meta: Any, *args: Any, **kwargs: Any) -> None:
    if not isinstance(file_meta, SpoolFileMeta):
        _original_write_file_meta_info(fp, file_meta, *args, **kwargs)
        return
    encoded = file_meta.encode()
    if encoded is None:
        dataset = _original_create_file_meta(
            sop_class_uid=file_meta.sop_class_uid,
            sop_instance_uid=file_meta.sop_instance_uid,
            transfer_syntax=file_meta.transfer_syntax,
        )
        _original_write_file_meta_info(fp, dataset, *args, **kwargs)
        return
    fp.write(encoded)


def write_file_meta(spool_file: SpoolFile, meta: SpoolFileMeta) -> None:
    """Write the File Meta Information ``meta`` to ``spool_file``, through pydicom if needed."""
    _write_file_meta_info(spool_file, meta)


def spool_of(assoc: Association) -> Spool | None:
    spool = getattr(assoc.ae, "spool", None)
    return spool if isinstance(spool, Spool) else None


def _current_association() -> Association | None:
    thread = threading.current_thread()
    if isinstance(thread, DULServiceProvider):
        return thread.assoc
    return None


def _spool_of_current_thread() -> tuple[Spool, Association] | None:
    assoc = _current_association()
    if assoc is None:
        return None
    spool = spool_of(assoc)
    return None if spool is None else (spool, assoc)


class _ReceiveConfig:
    """pynetdicom's ``_config`` module as ``pynetdicom.dimse_messages`` reads it when spooling.

    Every setting is the module's, except that chunked receiving is on in a gateway's threads.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(_config, name)

    @property
    def STORE_RECV_CHUNKED_DATASET(self) -> bool:
        return _config.STORE_RECV_CHUNKED_DATASET or _spool_of_current_thread() is not None


def _named_temporary_file(*args: Any, **kwargs: Any) -> Any:
    current = _spool_of_current_thread()
    if current is None:
        return _original_named_temporary_file(*args, **kwargs)
    spool, assoc = current
    return spool.open_file(assoc)


def install_spooling() -> None:
    """Route the C-STORE data sets of every ``Spool``-owning AE to its spool; idempotent."""
    global _original_named_temporary_file, _original_create_file_meta
    global _original_write_file_meta_info
    with _install_lock:
        if _original_named_temporary_file is not None:
            return
        _original_named_temporary_file = getattr(dimse_messages, "NamedTemporaryFile")  # noqa: B009
        _original_create_file_meta = getattr(dimse_messages, "create_file_meta")  # noqa: B009
        _original_write_file_meta_info = getattr(dimse_messages, "write_file_meta_info")  # noqa: B009
        setattr(dimse_messages, "NamedTemporaryFile", _named_temporary_file)  # noqa: B010
        setattr(dimse_messages, "create_file_meta", _create_file_meta)  # noqa: B010
        setattr(dimse_messages, "write_file_meta_info", _write_file_meta_info)  # noqa: B010
        setattr(dimse_messages, "_config", _ReceiveConfig())  # noqa: B010
