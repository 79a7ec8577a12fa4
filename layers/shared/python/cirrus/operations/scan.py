"""The passes of ``verify`` and ``reindex``: archived objects, index records, then studies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError
from pynamodb.exceptions import PynamoDBException

from cirrus.errors import NotFoundError, StoreUnavailableError
from cirrus.index.models import INSTANCE, STUDY, IndexRecord
from cirrus.operations.counts import PARTITION_ATTRIBUTES
from cirrus.storage.keys import INSTANCE_SUFFIX, InstanceKey
from cirrus.storage.objects import ObjectStore, StoredObject

# The attributes of an instance record that the index pass reads.
_RECORD_ATTRIBUTES = ["pk", "sk", "site", "object_key", "etag", "metadata_key"]


def archived_instances(
    store: ObjectStore, prefix: str, start_after: str
) -> Iterator[tuple[StoredObject, InstanceKey]]:
    """Yield the instances stored under ``prefix`` after ``start_after``, in key order.

    Other objects (the metadata objects of large instances, stray files) are skipped, as the
    bucket's notification filter skips them.
    """
    for stored in store.list_keys(prefix, start_after=start_after):
        if not stored.key.endswith(INSTANCE_SUFFIX):
            continue
        try:
            key = InstanceKey.parse(stored.key)
        except ValueError:
            continue
        yield stored, key


def with_etag(store: ObjectStore, stored: StoredObject) -> StoredObject:
    """Return ``stored`` with its ETag, which a data folder's listing leaves empty."""
    if stored.etag:
        return stored
    return StoredObject(stored.key, stored.size, store.etag(stored.key))


def instance_records(
    model: type[IndexRecord], site: str | None, after: dict[str, Any] | None
) -> Iterator[tuple[IndexRecord, dict[str, Any]]]:
    """Yield every instance record (of ``site`` when given) with its position in the Scan.

    A Scan from a position continues after the record that the position names.
    """
    return records_of_level(model, INSTANCE, site, after, _RECORD_ATTRIBUTES)


def study_records(
    model: type[IndexRecord], site: str | None, after: dict[str, Any] | None
) -> Iterator[tuple[IndexRecord, dict[str, Any]]]:
    """Yield the count attributes of every study record with its position in the Scan."""
    return records_of_level(model, STUDY, site, after, PARTITION_ATTRIBUTES)


def study_prefix(study: IndexRecord) -> str:
    """Return the object key prefix of a study record's instances."""
    site = str(study.site)
    return f"sites/{site}/studies/{study.pk[len(site) + 1 :]}/"


def records_of_level(
    model: type[IndexRecord],
    level: str,
    site: str | None,
    after: dict[str, Any] | None,
    attributes: list[str],
) -> Iterator[tuple[IndexRecord, dict[str, Any]]]:
    """Yield the ``attributes`` of every record of ``level`` with its position in the Scan."""
    condition = model.level == level
    if site:
        condition = condition & (model.site == site)
    try:
        results = model.scan(condition, last_evaluated_key=after, attributes_to_get=attributes)
        for record in results:
            yield record, {"pk": {"S": record.pk}, "sk": {"S": record.sk}}
    except (PynamoDBException, BotoCoreError) as exc:
        raise StoreUnavailableError(f"index scan failed: {type(exc).__name__}") from exc


def object_exists(store: ObjectStore, key: str) -> bool:
    try:
        store.size(key)
    except NotFoundError:
        return False
    return True
