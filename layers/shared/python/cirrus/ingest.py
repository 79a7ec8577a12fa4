"""Ingest: index an archived object from its header, without downloading Pixel Data.

Called by the ingest Lambda for every object-created notification, by the local stack's queue
poller with the same events, and by a rebuild of the index from the bucket.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from cirrus.dicom.dicomjson import instance_metadata
from cirrus.dicom.instance import InstanceHeader, parse_instance
from cirrus.dicom.scan import SEQUENCE_DELIMITER_TAG, TruncatedError
from cirrus.errors import ConflictError, InvalidInstanceError
from cirrus.index.claims import InstanceClaims
from cirrus.index.writer import IndexedObject, IndexOutcome, IndexWriter
from cirrus.storage.keys import InstanceKey
from cirrus.storage.objects import ObjectStore

if TYPE_CHECKING:
    from cirrus.dicomweb.bundle_refresh import BundleRefresher

logger = logging.getLogger(__name__)

# The first read covers the header of nearly every instance; larger headers take more reads.
FIRST_READ_BYTES: Final = 64 * 1024
# Past this size a header is read with the rest of the object in one GET.
MAX_RANGED_HEADER: Final = 16 * 1024 * 1024
# The 8 bytes of a little endian sequence delimiter item (FFFE,E0DD) with length 0.
_SEQUENCE_DELIMITER: Final = (
    (SEQUENCE_DELIMITER_TAG >> 16).to_bytes(2, "little")
    + (SEQUENCE_DELIMITER_TAG & 0xFFFF).to_bytes(2, "little")
    + b"\0\0\0\0"
)


class ObjectReader(Protocol):
    """The source of ``read_header``: an ``ObjectStore``, or a file of the gateway's spool."""

    def get(self, key: str) -> bytes: ...

    def get_range(self, key: str, start: int, end: int | None = None) -> tuple[bytes, int]: ...


@dataclass(frozen=True)
class ObjectEvent:
    """One object-created notification."""

    key: str
    size: int | None = None
    etag: str | None = None
    sequencer: str | None = None


def ingest_object(
    store: ObjectStore,
    writer: IndexWriter,
    event: ObjectEvent,
    refresher: BundleRefresher | None = None,
) -> IndexOutcome:
    """Index the object of ``event``.

    When the index changed, ``refresher`` schedules the precomputing of the metadata bundles
    of its series and study. Raises ``InvalidInstanceError`` when the object is not an
    instance whose UIDs match its key, and ``StoreUnavailableError`` when S3 or DynamoDB
    fail. Neither changes the index.
    """
    key = InstanceKey.parse(event.key)
    header, size = read_header(store, event.key)
    stored_key = header.instance_key(key.site)
    if stored_key != key:
        raise InvalidInstanceError(
            f"object {event.key} contains the instance {stored_key.object_key}; "
            "its key does not match its UIDs"
        )
    metadata = instance_metadata(header)
    pixel = header.pixel_data
    obj = IndexedObject(
        key=key,
        size=size,
        etag=event.etag or "",
        sequencer=event.sequencer,
        transfer_syntax=header.transfer_syntax,
        pixel_offset=pixel.value_offset if pixel and pixel.value_offset >= 0 else None,
        pixel_length=pixel.length if pixel else None,
    )
    version = uuid.uuid4().hex
    outcome = writer.put_instance(obj, metadata, version)
    _record_claim(writer, key)
    if refresher is not None and outcome in (IndexOutcome.CREATED, IndexOutcome.UPDATED):
        refresher.schedule(key, version)
    logger.info("instance indexed", extra={"object_key": event.key, "outcome": outcome.value})
    return outcome


def _record_claim(writer: IndexWriter, key: InstanceKey) -> None:
    """Record the object's claim, so that an index rebuilt from the bucket has every claim."""
    try:
        InstanceClaims(writer.model).claim(key)
    except ConflictError as exc:
        # Both objects exist, so both stay indexed; the store and the index must agree.
        logger.warning(
            "SOP Instance UID stored under two keys",
            extra={"object_key": key.object_key, "reason": str(exc)},
        )


def read_header(store: ObjectReader, key: str) -> tuple[InstanceHeader, int]:
    """Read the header of an object with as few and as small ranged GETs as it needs."""
    data, total = store.get_range(key, 0, FIRST_READ_BYTES)
    while True:
        try:
            header = parse_instance(data, total)
            break
        except TruncatedError as exc:
            if exc.needed > MAX_RANGED_HEADER or exc.needed >= total:
                data = store.get(key)
                return parse_instance(data), len(data)
            more, total = store.get_range(key, len(data), max(exc.needed, 2 * len(data)))
            data += more
    if header.tail_offset is not None:
        tail, _ = store.get_range(key, header.tail_offset)
        header.merge_tail(tail)
    elif header.tail_unknown:
        last, _ = store.get_range(key, max(total - len(_SEQUENCE_DELIMITER), 0))
        if last != _SEQUENCE_DELIMITER:
            # Elements follow the encapsulated Pixel Data: only a whole read finds them.
            data = store.get(key)
            return parse_instance(data), len(data)
        header.tail_unknown = False
    return header, total
