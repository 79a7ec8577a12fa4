"""The append-only DynamoDB table of audit records, and its two queries: by time and by study.

Every item is written with PutItem under ``attribute_not_exists(pk)``, so an item is never
replaced, and the model refuses updates and deletes. When the condition fails, a strongly
consistent GetItem reads the stored item, and an item equal to the one being written counts
as written. This is needed because botocore retries a PutItem whose response was lost, and
the retry finds the item that its first attempt put. Keys::

    pk = "{yyyy-mm-dd}#{shard}"                    the UTC day, and a shard from 0 to 7
    sk = "{time}#{request id}#{token}#{sequence}"  2026-05-04T10:15:02.123456Z#r1#1f2e3d4c#0000

The record id is ``sk`` without the sequence: the time, the request id (characters other than
letters, digits, ``-`` and ``_`` replaced) and a random token, so that two records of one
request never collide. The shard is a hash of the record id, which spreads the writes of a
busy day over ``AUDIT_SHARDS`` partitions. A time range is one Query per day and shard, merged
in time order.

A record is one or more items with consecutive sequence numbers:

- ``head`` (sequence 0): the zlib-compressed JSON of the message, or its first part, and the
  summary attributes ``site``, ``action``, ``outcome``, ``transport``, ``request_id`` and
  ``user_agent``. Its ``study_pk`` is the first study of the record.
- ``part`` (sequence 1 to ``parts - 1``): the rest of a compressed message larger than
  ``PART_BYTES``, which keeps every item below DynamoDB's 400 KB limit.
- ``study`` (after the parts): an index entry for each further study, with ``study_pk`` only.

The global secondary index ``by-study`` has ``study_pk`` (the Study Instance UID) and
``study_sk`` (the item's ``sk``), so the records of a study are one Query in time order,
however many studies each record names. The head is written last, and readers ignore items
whose head is missing, so a record that failed half way is never read.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import secrets
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, NoReturn

from botocore.exceptions import BotoCoreError
from pynamodb.attributes import BinaryAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.connection import Connection
from pynamodb.exceptions import PutError, PynamoDBException, TransactWriteError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from cirrus.config import Settings
from cirrus.errors import StoreUnavailableError

# Partitions per UTC day. Changing it moves new records only; readers query every shard.
AUDIT_SHARDS: Final = 8
# Bytes of compressed message per item, well below the 400 KB item limit of DynamoDB.
PART_BYTES: Final = 300_000
# Items and compressed message bytes of one ``write_entries`` transaction, below the limits
# of TransactWriteItems (100 items, 4 MB).
TRANSACTION_ITEMS: Final = 100
TRANSACTION_BYTES: Final = 2_000_000
# (index name, partition key attribute, sort key attribute), for the CDK stack.
STUDY_INDEX: Final = ("by-study", "study_pk", "study_sk")

# The code of (110180, DCM, "Study Instance UID"), the ID type of a study participant object.
STUDY_INSTANCE_UID_CODE: Final = "110180"

HEAD: Final = "head"
PART: Final = "part"
STUDY_ENTRY: Final = "study"

_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
_DAY_FORMAT: Final = "%Y-%m-%d"


class AppendOnlyError(TypeError):
    """Code tried to change or delete an audit record, which the table never allows."""


class AuditRecordExistsError(StoreUnavailableError):
    """An item with the key of a new record's item exists already, and was kept."""


class StudyIndex(GlobalSecondaryIndex["AuditRecord"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = STUDY_INDEX[0]
        projection = AllProjection()

    study_pk = UnicodeAttribute(hash_key=True)
    study_sk = UnicodeAttribute(range_key=True)


class AuditRecord(Model):
    """One item of an audit record: its head, a part of its message, or a study entry."""

    class Meta:
        table_name = "unbound"
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute()
    study_pk = UnicodeAttribute(null=True)
    study_sk = UnicodeAttribute(null=True)
    # Head and parts.
    message = BinaryAttribute(null=True, legacy_encoding=False)
    # Head only.
    parts = NumberAttribute(null=True)
    site = UnicodeAttribute(null=True)
    action = UnicodeAttribute(null=True)
    outcome = NumberAttribute(null=True)
    transport = UnicodeAttribute(null=True)
    request_id = UnicodeAttribute(null=True)
    user_agent = UnicodeAttribute(null=True)

    by_study: ClassVar[StudyIndex] = StudyIndex()

    def save(self, condition: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Put the item only if no item has its key; raise ``PutError`` if one has."""
        absent = type(self).pk.does_not_exist()
        return super().save(absent if condition is None else absent & condition, **kwargs)

    def update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit records cannot be updated")

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit records cannot be deleted")

    @classmethod
    def batch_write(cls, *args: Any, **kwargs: Any) -> NoReturn:
        # BatchWriteItem has no conditions, so it could replace a record.
        raise AppendOnlyError("audit records are written one by one, under a condition")


def bind_audit_model(settings: Settings) -> type[AuditRecord] | None:
    """Return an ``AuditRecord`` model bound to the audit table of ``settings``, if it has one."""
    if not settings.audit_table:
        return None
    meta_attrs: dict[str, Any] = {
        "table_name": settings.audit_table,
        "region": settings.region,
        "billing_mode": "PAY_PER_REQUEST",
        "connect_timeout_seconds": 5,
        "read_timeout_seconds": 10,
        "max_retry_attempts": 5,
    }
    if settings.json_endpoint:
        meta_attrs["host"] = settings.json_endpoint
    meta = type("Meta", (), meta_attrs)
    # A fresh index object, because pynamodb binds each index object to one model class.
    namespace = {"Meta": meta, "by_study": StudyIndex()}
    bound: type[AuditRecord] = type("BoundAuditRecord", (AuditRecord,), namespace)
    return bound


@dataclass(frozen=True)
class AuditEntry:
    """One audit record: its id, summary attributes, the studies it names and its message."""

    record_id: str
    site: str | None
    action: str
    outcome: int
    transport: str | None
    request_id: str
    user_agent: str | None
    studies: tuple[str, ...]
    message: dict[str, Any]

    @property
    def time(self) -> datetime:
        return record_time(self.record_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "time": self.time.isoformat(timespec="microseconds"),
            "site": self.site,
            "action": self.action,
            "outcome": self.outcome,
            "transport": self.transport,
            "request_id": self.request_id,
            "user_agent": self.user_agent,
            "studies": list(self.studies),
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditEntry:
        return cls(
            record_id=str(data["record_id"]),
            site=data.get("site"),
            action=str(data["action"]),
            outcome=int(data["outcome"]),
            transport=data.get("transport"),
            request_id=str(data["request_id"]),
            user_agent=data.get("user_agent"),
            studies=tuple(str(study) for study in data.get("studies", ())),
            message=dict(data["message"]),
        )


# --- keys --------------------------------------------------------------------------------


def new_record_id(time: datetime, request_id: str) -> str:
    """Return a new record id: the UTC time, the request id and a random token."""
    safe_id = "".join(char if char.isalnum() or char in "-_" else "_" for char in request_id)
    return f"{_time_key(time)}#{safe_id or 'none'}#{secrets.token_hex(4)}"


def record_time(record_id: str) -> datetime:
    """Return the time that a record id starts with."""
    return datetime.strptime(record_id.split("#", 1)[0], _TIME_FORMAT).replace(tzinfo=UTC)


def record_pk(record_id: str) -> str:
    """Return the partition key of a record's items: its UTC day and its shard."""
    digest = hashlib.blake2b(record_id.encode(), digest_size=4).digest()
    shard = int.from_bytes(digest, "big") % AUDIT_SHARDS
    return f"{record_time(record_id).strftime(_DAY_FORMAT)}#{shard:02d}"


def item_sk(record_id: str, sequence: int) -> str:
    return f"{record_id}#{sequence:04d}"


def _time_key(time: datetime) -> str:
    return time.astimezone(UTC).strftime(_TIME_FORMAT)


# --- writing -----------------------------------------------------------------------------


def entry_items(model: type[AuditRecord], entry: AuditEntry) -> list[AuditRecord]:
    """Return the items of ``entry`` in sequence order: the head, its parts, its study entries."""
    body = json.dumps(entry.message, separators=(",", ":"), sort_keys=True).encode()
    compressed = zlib.compress(body)
    starts = range(0, len(compressed), PART_BYTES)
    chunks = [compressed[start : start + PART_BYTES] for start in starts]
    pk = record_pk(entry.record_id)
    first_study = entry.studies[0] if entry.studies else None
    head_sk = item_sk(entry.record_id, 0)

    items = [
        model(
            pk,
            head_sk,
            kind=HEAD,
            message=chunks[0],
            parts=len(chunks),
            site=entry.site,
            action=entry.action,
            outcome=entry.outcome,
            transport=entry.transport,
            request_id=entry.request_id,
            user_agent=entry.user_agent,
            study_pk=first_study,
            study_sk=head_sk if first_study is not None else None,
        )
    ]
    for sequence, chunk in enumerate(chunks[1:], 1):
        items.append(model(pk, item_sk(entry.record_id, sequence), kind=PART, message=chunk))
    for sequence, study in enumerate(entry.studies[1:], len(chunks)):
        sk = item_sk(entry.record_id, sequence)
        items.append(model(pk, sk, kind=STUDY_ENTRY, study_pk=study, study_sk=sk))
    return items


def write_entry(model: type[AuditRecord], entry: AuditEntry) -> None:
    """Put every item of ``entry``, the head last; raise ``StoreUnavailableError`` on failure.

    An item that the table has already, with every attribute equal, counts as written, so
    writing an entry again succeeds. Raises ``AuditRecordExistsError`` when a different item
    has the key of one of the entry's items; that item is kept.

    NOTE: a different entry under the record id of a stored one still puts the items that
    the stored record lacks before the first differing item raises. Record ids end with a
    random token, so only a bug can reuse one.
    """
    head, *others = entry_items(model, entry)
    for item in (*others, head):
        try:
            item.save()
        except PutError as exc:
            if not _is_condition_failure(exc):
                raise StoreUnavailableError(
                    f"audit record {entry.record_id} was not written: {_cause(exc)}"
                ) from exc
            if not _is_stored(model, item, entry.record_id):
                raise AuditRecordExistsError(
                    f"audit record {entry.record_id} exists already with other content;"
                    " it was not replaced"
                ) from exc
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(
                f"audit record {entry.record_id} was not written: {_cause(exc)}"
            ) from exc


def write_entries(
    model: type[AuditRecord],
    entries: Iterable[AuditEntry],
    connection: Connection | None = None,
) -> list[AuditEntry]:
    """Put the items of ``entries``, many in one transaction; return the entries rejected.

    Each item is put under the condition of ``write_entry``, so a stored record is never
    replaced. A transaction contains whole entries with distinct record ids. When one is
    cancelled, each of its entries is written again by ``write_entry``, which counts an
    identical stored record as written. The entries returned are those for which a record
    with other content is stored (``AuditRecordExistsError``). Raises
    ``StoreUnavailableError`` when the table fails. ``connection`` is the transactions'
    connection to the model's table (``audit_connection``), new for this call without one.
    """
    if connection is None:
        connection = audit_connection(model)
    rejected: list[AuditEntry] = []
    chunk: list[tuple[AuditEntry, list[AuditRecord]]] = []
    size = 0

    def flush() -> None:
        nonlocal size
        rejected.extend(_write_together(model, connection, chunk))
        chunk.clear()
        size = 0

    for entry in entries:
        items = entry_items(model, entry)
        message_bytes = sum(len(item.message or b"") for item in items)
        queued_items = sum(len(items) for _, items in chunk)
        if (
            queued_items + len(items) > TRANSACTION_ITEMS
            or size + message_bytes > TRANSACTION_BYTES
            or any(other.record_id == entry.record_id for other, _ in chunk)
        ):
            flush()
        chunk.append((entry, items))
        size += message_bytes
    flush()
    return rejected


def audit_connection(model: type[AuditRecord]) -> Connection:
    """Return a new connection to the table of ``model``, for ``write_entries``.

    Each connection creates its own botocore client on first use, so a caller that writes
    many times keeps one.
    """
    return Connection(
        region=getattr(model.Meta, "region", None), host=getattr(model.Meta, "host", None)
    )


def _write_together(
    model: type[AuditRecord],
    connection: Connection,
    chunk: list[tuple[AuditEntry, list[AuditRecord]]],
) -> list[AuditEntry]:
    """Put the items of ``chunk`` in one transaction, or entry by entry if it is cancelled."""
    if not chunk:
        return []
    if len(chunk) > 1 or len(chunk[0][1]) <= TRANSACTION_ITEMS:
        absent = model.pk.does_not_exist()
        try:
            with TransactWrite(connection=connection) as transaction:
                for _, items in chunk:
                    for item in items:
                        transaction.save(item, condition=absent)
            return []
        except TransactWriteError as exc:
            if exc.cause_response_code != "TransactionCanceledException":
                raise StoreUnavailableError(
                    f"audit records were not written: {_cause(exc)}"
                ) from exc
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(f"audit records were not written: {_cause(exc)}") from exc
    rejected = []
    for entry, _ in chunk:
        try:
            write_entry(model, entry)
        except AuditRecordExistsError:
            rejected.append(entry)
    return rejected


def _is_stored(model: type[AuditRecord], item: AuditRecord, record_id: str) -> bool:
    """Return whether the table's item with the key of ``item`` has exactly its attributes.

    Raises ``StoreUnavailableError`` when the item cannot be read.
    """
    try:
        stored = model.get(item.pk, item.sk, consistent_read=True)
    except (PynamoDBException, BotoCoreError) as exc:
        raise StoreUnavailableError(
            f"audit record {record_id} was not written: reading back its existing item"
            f" {item.sk} failed with {_cause(exc)}"
        ) from exc
    return stored.serialize() == item.serialize()


def _is_condition_failure(exc: PutError) -> bool:
    return exc.cause_response_code == "ConditionalCheckFailedException"


def _cause(exc: Exception) -> str:
    code = getattr(exc, "cause_response_code", None)
    return str(code) if code else type(exc).__name__


# --- reading -----------------------------------------------------------------------------


def read_records_between(
    model: type[AuditRecord], since: datetime, until: datetime
) -> Iterator[AuditEntry]:
    """Yield the records from ``since`` to ``until`` (exclusive) in time order.

    Runs one Query per UTC day and shard, lazily, and merges their results.
    """
    low, high = _time_key(since), _time_key(until)
    if low >= high:
        return iter(())
    streams = []
    day = since.astimezone(UTC).date()
    last = until.astimezone(UTC).date()
    while day <= last:
        for shard in range(AUDIT_SHARDS):
            pk = f"{day.strftime(_DAY_FORMAT)}#{shard:02d}"
            streams.append(_partition_records(model, pk, low, high))
        day += timedelta(days=1)
    return heapq.merge(*streams, key=lambda record: record.record_id)


def _partition_records(
    model: type[AuditRecord], pk: str, low: str, high: str
) -> Iterator[AuditEntry]:
    try:
        items = model.query(pk, model.sk.between(low, high))
        yield from _assemble(items)
    except (PynamoDBException, BotoCoreError) as exc:
        raise StoreUnavailableError(f"audit table query failed: {_cause(exc)}") from exc


def read_records_of_study(
    model: type[AuditRecord],
    study: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[AuditEntry]:
    """Yield the records that name ``study`` in time order: one Query of ``by-study``.

    A record whose message has parts, or that names the study after its first, costs one
    more Query of its own partition.
    """
    condition: Any = None
    if since is not None and until is not None:
        condition = model.study_sk.between(_time_key(since), _time_key(until))
    elif since is not None:
        condition = model.study_sk >= _time_key(since)
    elif until is not None:
        condition = model.study_sk < _time_key(until)
    try:
        for hit in model.by_study.query(study, range_key_condition=condition):
            if hit.kind == HEAD and int(hit.parts or 1) == 1:
                yield _stored(hit, [hit])
            else:
                yield from _read_record(model, hit.sk.rsplit("#", 1)[0])
    except (PynamoDBException, BotoCoreError) as exc:
        raise StoreUnavailableError(f"audit table query failed: {_cause(exc)}") from exc


def read_record(model: type[AuditRecord], record_id: str) -> AuditEntry | None:
    """Return the record ``record_id``, or None when it does not exist (or is incomplete)."""
    try:
        return next(_read_record(model, record_id), None)
    except (PynamoDBException, BotoCoreError) as exc:
        raise StoreUnavailableError(f"audit table query failed: {_cause(exc)}") from exc


def _read_record(model: type[AuditRecord], record_id: str) -> Iterator[AuditEntry]:
    items = model.query(
        record_pk(record_id), model.sk.startswith(f"{record_id}#"), consistent_read=True
    )
    yield from _assemble(items)


def _assemble(items: Iterable[AuditRecord]) -> Iterator[AuditEntry]:
    """Group a partition's items, in sort key order, into records; skip headless ones."""
    head: AuditRecord | None = None
    chunks: list[AuditRecord] = []
    for item in items:
        record_id = item.sk.rsplit("#", 1)[0]
        if item.kind == HEAD:
            if head is not None:
                yield from _complete(head, chunks)
            head, chunks = item, [item]
        elif head is not None and item.kind == PART and head.sk.rsplit("#", 1)[0] == record_id:
            chunks.append(item)
    if head is not None:
        yield from _complete(head, chunks)


def _complete(head: AuditRecord, chunks: list[AuditRecord]) -> Iterator[AuditEntry]:
    # A head whose parts are missing cannot be read, so it does not count as written.
    if len(chunks) == int(head.parts or 1):
        yield _stored(head, chunks)


def _stored(head: AuditRecord, chunks: list[AuditRecord]) -> AuditEntry:
    compressed = b"".join(bytes(chunk.message or b"") for chunk in chunks)
    message = json.loads(zlib.decompress(compressed))
    studies = [
        item["ParticipantObjectID"]
        for item in message.get("ParticipantObjectIdentification", ())
        if item.get("ParticipantObjectIDTypeCode", {}).get("csd-code") == STUDY_INSTANCE_UID_CODE
    ]
    return AuditEntry(
        record_id=head.sk.rsplit("#", 1)[0],
        site=head.site,
        action=str(head.action),
        outcome=int(head.outcome or 0),
        transport=head.transport,
        request_id=str(head.request_id),
        user_agent=head.user_agent,
        studies=tuple(studies),
        message=message,
    )
