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
from cirrus.errors import (
    CirrusError,
    ConflictError,
    InvalidInstanceError,
    StoreUnavailableError,
)
from cirrus.index.attributes import JsonDict
from cirrus.index.claims import InstanceClaims
from cirrus.index.writer import MAX_BATCH_INSTANCES, IndexedObject, IndexOutcome, IndexWriter
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


class RefreshScheduler(Protocol):
    """The receiver of refresh requests from ``ingest_object``: a refresher or a batch."""

    def schedule(self, key: InstanceKey, version: str) -> None: ...


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


@dataclass(frozen=True)
class PreparedObject:
    """An object whose header was read and checked, ready to be indexed."""

    obj: IndexedObject
    metadata: JsonDict


def prepare_object(store: ObjectReader, event: ObjectEvent) -> PreparedObject:
    """Read and check the header of the object of ``event``.

    Raises ``InvalidInstanceError`` when the object is not an instance whose UIDs match its
    key, and ``StoreUnavailableError`` when S3 fails.
    """
    key = InstanceKey.parse(event.key)
    header, size = read_header(store, event.key)
    stored_key = header.instance_key(key.site)
    if stored_key != key:
        raise InvalidInstanceError(
            f"object {event.key} contains the instance {stored_key.object_key}; "
            "its key does not match its UIDs"
        )
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
    return PreparedObject(obj, instance_metadata(header))


def ingest_object(
    store: ObjectStore,
    writer: IndexWriter,
    event: ObjectEvent,
    refresher: RefreshScheduler | None = None,
    prepared: PreparedObject | None = None,
) -> IndexOutcome:
    """Index the object of ``event``.

    ``prepared`` is the result of ``prepare_object`` for ``event`` when the caller has it.
    When the index changed, ``refresher`` schedules the precomputing of the metadata bundles
    of its series and study. Raises ``InvalidInstanceError`` when the object is not an
    instance whose UIDs match its key, and ``StoreUnavailableError`` when S3 or DynamoDB
    fail. Neither changes the index.
    """
    if prepared is None:
        prepared = prepare_object(store, event)
    key = prepared.obj.key
    version = uuid.uuid4().hex
    outcome = writer.put_instance(prepared.obj, prepared.metadata, version)
    _record_claim(writer, key)
    if refresher is not None and outcome in (IndexOutcome.CREATED, IndexOutcome.UPDATED):
        refresher.schedule(key, version)
    logger.info("instance indexed", extra={"object_key": event.key, "outcome": outcome.value})
    return outcome


class BatchIngest:
    """Indexes the object events of one queue batch, new instances of a series together.

    ``run`` reads the header of every event and writes the new instances of each series in
    one transaction (``IndexWriter.put_new_instances``). That needs the series indexed
    already, so for a series that is new, ``run`` indexes its first instance on its own and
    then the others together. ``ingest`` then returns the outcome of an event that was indexed
    so, and indexes any other event on its own, with the header already read. An event whose
    header cannot be read is read again by ``ingest``, which raises the error for that event
    alone.

    The bundle refresh requests wait until ``send_refreshes``: one per series changed in the
    batch, with the version of its last write. An earlier version's request would be dropped
    on delivery anyway, because a later write of its series changed the version.
    """

    def __init__(
        self, store: ObjectStore, writer: IndexWriter, refresher: BundleRefresher | None = None
    ) -> None:
        self._store = store
        self._writer = writer
        self._refresher = _LatestRefreshes(refresher) if refresher is not None else None
        self._prepared: dict[ObjectEvent, PreparedObject] = {}
        self._outcomes: dict[ObjectEvent, IndexOutcome] = {}

    def run(self, events: list[ObjectEvent]) -> None:
        """Read the headers of ``events`` and index the new instances of each series together.

        Raises nothing for a single event: its error is raised again by ``ingest``.
        """
        groups: dict[tuple[str, str, str], list[ObjectEvent]] = {}
        for event in events:
            try:
                prepared = prepare_object(self._store, event)
            except Exception:  # noqa: BLE001, S112
                # Whatever failed, ``ingest`` meets it again for this event alone, and the
                # batch processor logs and reports that event without failing the others.
                continue
            self._prepared[event] = prepared
            key = prepared.obj.key
            groups.setdefault((key.site, key.study, key.series), []).append(event)
        for group in groups.values():
            keys = {self._prepared[event].obj.key for event in group}
            if 1 < len(group) <= MAX_BATCH_INSTANCES and len(keys) == len(group):
                self._index_together(group)

    def ingest(self, event: ObjectEvent) -> IndexOutcome:
        """Return the outcome of ``event``, indexing it now unless ``run`` did.

        Raises as ``ingest_object``.
        """
        outcome = self._outcomes.get(event)
        if outcome is not None:
            return outcome
        return ingest_object(
            self._store, self._writer, event, self._refresher, self._prepared.get(event)
        )

    def send_refreshes(self) -> None:
        """Send the bundle refresh request of each series that the batch changed."""
        if self._refresher is not None:
            self._refresher.send()

    def prepared(self, event: ObjectEvent) -> PreparedObject | None:
        """Return the header that ``run`` read for ``event``, if it read one."""
        return self._prepared.get(event)

    def _index_together(self, group: list[ObjectEvent]) -> None:
        if self._write_together(group) or len(group) < 3:
            return
        # The series or the modality may be new, which only a single write adds. With the
        # first instance indexed so, the others can go together.
        first = group[0]
        try:
            self._outcomes[first] = ingest_object(
                self._store, self._writer, first, self._refresher, self._prepared[first]
            )
        except (CirrusError, ValueError):
            # ``ingest`` meets the error again for this event and reports it.
            return
        self._write_together(group[1:])

    def _write_together(self, group: list[ObjectEvent]) -> bool:
        """Index ``group`` in one transaction; return False if it wrote nothing."""
        entries = [(self._prepared[e].obj, self._prepared[e].metadata) for e in group]
        version = uuid.uuid4().hex
        try:
            written = self._writer.put_new_instances(entries, version)
        except StoreUnavailableError as exc:
            logger.warning(
                "batch index write failed; indexing one by one",
                extra={"instances": len(group), "error": str(exc)},
            )
            return False
        if not written:
            return False
        self._outcomes.update(dict.fromkeys(group, IndexOutcome.CREATED))
        if self._refresher is not None:
            self._refresher.schedule(entries[-1][0].key, version)
        for event in group:
            logger.info("instance indexed", extra={"object_key": event.key, "outcome": "created"})
        return True


class _LatestRefreshes:
    """The last refresh request of each series of a batch, sent by ``send``."""

    def __init__(self, refresher: BundleRefresher) -> None:
        self._refresher = refresher
        self._latest: dict[tuple[str, str, str], tuple[InstanceKey, str]] = {}

    def schedule(self, key: InstanceKey, version: str) -> None:
        self._latest[(key.site, key.study, key.series)] = (key, version)

    def send(self) -> None:
        latest, self._latest = self._latest, {}
        for key, version in latest.values():
            self._refresher.schedule(key, version)


def _record_claim(writer: IndexWriter, key: InstanceKey) -> None:
    """Record the object's claim, so that an index rebuilt from the bucket has every claim."""
    try:
        InstanceClaims(writer.model).record(key)
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
