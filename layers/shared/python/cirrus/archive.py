"""The write path that the gateway (C-STORE) and STOW-RS share.

An instance is checked, given its storage key and written to S3 as the Part 10 bytes received.
Indexing happens afterwards, from the bucket's object-created notification, so the object in S3
is the source of truth and the index can always be rebuilt from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cirrus.dicom.instance import InstanceHeader, parse_instance
from cirrus.errors import InvalidInstanceError
from cirrus.storage.keys import InstanceKey, check_uid, is_conformant_uid
from cirrus.storage.objects import ObjectStore, StoredObject

logger = logging.getLogger(__name__)

_DECODING_ERRORS = (NotImplementedError, ValueError, TypeError, KeyError, UnicodeError)


@dataclass(frozen=True)
class ArchivedInstance:
    key: InstanceKey
    sop_class_uid: str
    stored: StoredObject
    header: InstanceHeader


def check_instance(part10: bytes, site: str) -> tuple[InstanceHeader, InstanceKey, str]:
    """Parse and check a whole Part 10 object; return its header, key and SOP Class UID.

    Raises ``InvalidInstanceError`` naming what is missing or malformed.
    """
    header = parse_instance(part10)
    try:
        key = header.instance_key(site)
        sop_class = check_uid("SOPClassUID (0008,0016)", str(header.dataset.get("SOPClassUID", "")))
    except _DECODING_ERRORS as exc:
        # pydicom decodes elements when they are first read: an unknown VR raises
        # NotImplementedError, a malformed value ValueError.
        raise InvalidInstanceError(f"data set cannot be decoded: {exc}", undecodable=True) from exc
    for keyword, uid in (("StudyInstanceUID", key.study), ("SeriesInstanceUID", key.series)):
        if not is_conformant_uid(uid):
            logger.warning("non-conformant UID accepted", extra={"keyword": keyword, "uid": uid})
    return header, key, sop_class


def archive_instance(store: ObjectStore, site: str, part10: bytes) -> ArchivedInstance:
    """Check ``part10`` and write it to the archive; return once S3 has acknowledged it.

    Raises ``InvalidInstanceError`` for an instance that cannot be archived and
    ``StoreUnavailableError`` when S3 fails; nothing is stored in either case.
    """
    header, key, sop_class = check_instance(part10, site)
    stored = store.put(key.object_key, part10)
    logger.info(
        "instance stored",
        extra={"object_key": key.object_key, "size": stored.size, "sop_class_uid": sop_class},
    )
    return ArchivedInstance(key=key, sop_class_uid=sop_class, stored=stored, header=header)
