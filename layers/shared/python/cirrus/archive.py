"""The write path that the gateway (C-STORE) and STOW-RS share.

An instance is checked, given its storage key and written to S3 as the Part 10 bytes received.
Indexing happens afterwards, from the bucket's object-created notification, so the object in S3
is the source of truth and the index can always be rebuilt from it.

An instance of a study under legal hold that is stored already may be sent again with the same
bytes, but not replaced with other bytes (``LegalHolds.check_replaceable``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cirrus.dicom.instance import (
    DECODING_ERRORS,
    InstanceHeader,
    checked_instance_key,
    parse_instance,
)
from cirrus.errors import InvalidInstanceError
from cirrus.index.claims import InstanceClaims
from cirrus.lifecycle.holds import LegalHolds
from cirrus.storage.keys import InstanceKey, check_conformant_uid, check_uid
from cirrus.storage.objects import Admission, ObjectStore, StoredObject
from cirrus.storage.tags import instance_tags

logger = logging.getLogger(__name__)


# S3 takes at most 5 GiB in one PUT; larger objects would need a multipart upload.
MAX_OBJECT_BYTES: Final = 5 * 1024**3

# Every SOP class whose name ends so has the Image Pixel module, which requires Pixel Data,
# Float Pixel Data or Double Float Pixel Data (PS3.3 C.7.6.3).
_IMAGE_SUFFIX: Final = "Image Storage"
_PIXEL_TAGS: Final = (0x7FE00010, 0x7FE00008, 0x7FE00009)
# The UIDs that must follow PS3.5 9.1 in a new instance, named as in error messages.
_CONFORMANT_UIDS: Final = (
    "StudyInstanceUID (0020,000D)",
    "SeriesInstanceUID (0020,000E)",
    "SOPInstanceUID (0008,0018)",
    "SOPClassUID (0008,0016)",
)


@dataclass(frozen=True)
class CheckedInstance:
    """An instance that may be archived: its header, storage key and SOP Class UID."""

    header: InstanceHeader
    key: InstanceKey
    sop_class_uid: str


@dataclass(frozen=True)
class ArchivedInstance:
    key: InstanceKey
    sop_class_uid: str
    stored: StoredObject
    header: InstanceHeader


def check_instance(
    part10: bytes, site: str, header: InstanceHeader | None = None
) -> CheckedInstance:
    """Parse and check a whole Part 10 object.

    A caller that parsed ``part10`` already passes the result as ``header``, so that a deflated
    data set is not inflated twice. Raises ``InvalidInstanceError`` naming what is missing or
    malformed.
    """
    check_size(len(part10))
    if header is None:
        header = parse_instance(part10)
    return check_header(header, site)


def check_size(size: int) -> None:
    """Raise ``InvalidInstanceError`` for an object of ``size`` bytes that S3 cannot hold."""
    if size > MAX_OBJECT_BYTES:
        raise InvalidInstanceError(
            f"instance of {size} bytes is larger than the {MAX_OBJECT_BYTES} bytes "
            "one object may hold"
        )


def check_header(header: InstanceHeader, site: str) -> CheckedInstance:
    """Check the parsed header of an instance and return its storage key.

    Raises ``InvalidInstanceError`` naming what is missing or malformed.
    """
    from pydicom.uid import UID

    # Each UID is read from the data set once, because every read of an element goes through
    # pydicom's keyword lookup even after its value has been decoded.
    uids: dict[str, str] = {}
    try:
        for keyword in _CONFORMANT_UIDS:
            element_keyword = keyword.split()[0]
            uids[element_keyword] = str(header.dataset.get(element_keyword, ""))
            check_conformant_uid(keyword, uids[element_keyword])
    except DECODING_ERRORS as exc:
        # pydicom decodes elements when they are first read: an unknown VR raises
        # NotImplementedError, a malformed value ValueError.
        raise InvalidInstanceError(f"data set cannot be decoded: {exc}", undecodable=True) from exc
    key = checked_instance_key(
        site, uids["StudyInstanceUID"], uids["SeriesInstanceUID"], uids["SOPInstanceUID"]
    )
    sop_class = check_uid("SOPClassUID (0008,0016)", uids["SOPClassUID"])
    name = UID(sop_class).name
    has_pixels = header.pixel_data is not None or any(t in header.dataset for t in _PIXEL_TAGS)
    if name.endswith(_IMAGE_SUFFIX) and not has_pixels:
        raise InvalidInstanceError(f"{name} instance has no Pixel Data (7FE0,0010)")
    return CheckedInstance(header, key, sop_class)


def archive_instance(
    store: ObjectStore,
    site: str,
    part10: bytes,
    checked: CheckedInstance | None = None,
    claims: InstanceClaims | None = None,
) -> ArchivedInstance:
    """Check ``part10`` and write it to the archive; return once S3 has acknowledged it.

    A caller that ran ``check_instance`` already passes its result as ``checked``. With
    ``claims``, the SOP Instance UID is claimed for the instance's key first. Raises
    ``InvalidInstanceError`` for an instance that cannot be archived, ``ConflictError`` when its
    SOP Instance UID is stored under other study or series UIDs, ``LegalHoldError`` (a
    ``ConflictError``) when it would replace an instance of a held study with other bytes, and
    ``StoreUnavailableError`` when S3 or DynamoDB fail. Nothing is stored in any of these cases.
    """
    if checked is None:
        checked = check_instance(part10, site)
    key = checked.key
    tags = instance_tags(key.site, checked.header.dataset)
    stored = _write_claimed(
        store,
        key,
        claims,
        lambda claim: store.put_after(key.object_key, part10, claim, tags=tags),
        lambda stored: stored == part10,
    )
    return _archived(checked, stored)


def archive_file(
    store: ObjectStore,
    path: Path,
    checked: CheckedInstance,
    claims: InstanceClaims | None = None,
) -> ArchivedInstance:
    """Write the checked Part 10 file ``path`` to the archive, as ``archive_instance`` does.

    The file is streamed (``ObjectStore.put_file``), so only one part of it is in memory.
    """
    key = checked.key
    tags = instance_tags(key.site, checked.header.dataset)
    stored = _write_claimed(
        store,
        key,
        claims,
        lambda claim: store.put_file_after(key.object_key, path, claim, tags=tags),
        lambda stored: _file_equals(path, stored),
    )
    return _archived(checked, stored)


def _write_claimed(
    store: ObjectStore,
    key: InstanceKey,
    claims: InstanceClaims | None,
    write: Callable[[Admission], StoredObject],
    same_content: Callable[[bytes], bool],
) -> StoredObject:
    """Claim ``key`` and run ``write``; release a claim that this call made if the write fails.

    The claim is ``write``'s admission (``ObjectStore.put_after``), so the local object store
    flushes the file while the claim's request is in flight.
    """
    claim = _Claim(store, key, claims, same_content)
    try:
        return write(claim)
    except BaseException:
        if claims is not None and claim.created:
            claims.release(key)
        raise


class _Claim:
    """The admission of one instance: its SOP Instance UID claim, then a legal hold's check.

    When ``key`` was claimed already, the instance may be stored, so the legal hold of its
    study is checked before the object is replaced. A new claim means a new instance, which a
    hold allows, and saves the read of the hold on most stores.
    """

    def __init__(
        self,
        store: ObjectStore,
        key: InstanceKey,
        claims: InstanceClaims | None,
        same_content: Callable[[bytes], bool],
    ) -> None:
        self._store = store
        self._key = key
        self._claims = claims
        self._same_content = same_content
        self.created = False

    def begin(self) -> None:
        if self._claims is not None:
            self.created = self._claims.claim(self._key)

    def finish(self) -> None:
        # NOTE: two writes of one new instance at the same moment can both pass: the one that
        # creates the claim skips the hold, and the other may check before the first is stored.
        if not self.created:
            LegalHolds(self._store).check_replaceable(self._key, self._same_content)


def _file_equals(path: Path, data: bytes) -> bool:
    if path.stat().st_size != len(data):
        return False
    with path.open("rb") as file:
        return file.read() == data


def _archived(checked: CheckedInstance, stored: StoredObject) -> ArchivedInstance:
    key = checked.key
    logger.info(
        "instance stored",
        extra={
            "object_key": key.object_key,
            "size": stored.size,
            "sop_class_uid": checked.sop_class_uid,
        },
    )
    return ArchivedInstance(
        key=key, sop_class_uid=checked.sop_class_uid, stored=stored, header=checked.header
    )
