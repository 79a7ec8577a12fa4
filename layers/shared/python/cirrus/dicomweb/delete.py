"""DELETE of a study, series or instance: objects, index records, changes, events and audit.

PS3.18 defines no delete transaction. Cirrus follows the convention of dcm4chee and the Google
Cloud Healthcare API: ``DELETE`` on a study, series or instance URL removes it for good and
returns 204, and a resource that is not in the index gets 404.

The steps run in an order that a retry can always finish:

1. The instance records under the URL are read, and the archive objects under its key
   prefix are listed, which finds instances stored but not indexed yet. Neither, and no
   study or series record left over by an earlier failed delete, means 404. A study under
   legal hold (``cirrus.lifecycle.holds``) means 409, for the study and everything in it.
2. The audit record is written. If that fails, nothing is deleted (503).
3. For each batch of instances, the objects are deleted from S3, then each index record is
   removed with its counts and its ``deleted`` change of the feed (``cirrus.index.deletion``).
4. Empty series and studies are deleted and the others' aggregates recomputed.
5. The stored metadata bundles of the study and the touched series are deleted, because they
   contain the deleted instances. A read rebuilds those still needed.
6. An InstanceDeleted event is sent for each instance whose record this call removed, also
   when a later step fails.

Every caller (DICOMweb DELETE, retention) goes through ``delete_resource``, so none can skip
the change feed or the events.

A failure after step 2 leaves records whose objects may be gone. Such instances are still
listed by QIDO, and their retrieval fails, until the client sends the DELETE again, which
finds the same records and completes. The store is never left with objects the index lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from cirrus.audit import Actor, AuditLog, DeletionRecord, Transport
from cirrus.dicomweb.bundles import bundle_key
from cirrus.errors import NotFoundError
from cirrus.events.model import instance_deleted
from cirrus.events.publisher import Publisher
from cirrus.index.deletion import IndexDeleter, IndexedInstance
from cirrus.lifecycle.holds import LegalHolds
from cirrus.storage.keys import INSTANCE_SUFFIX, InstanceKey, site_prefix
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

# Instances whose objects are deleted in one S3 request before their records are removed.
BATCH_SIZE: Final = 100


@dataclass(frozen=True)
class DeleteTarget:
    """The resource a DELETE names: a study, or a series or instance in it."""

    site: str
    study: str
    series: str | None = None
    sop: str | None = None

    def key_prefix(self) -> str:
        """Return the prefix of the archive keys of the resource's instances."""
        if self.sop is not None and self.series is not None:
            return InstanceKey(self.site, self.study, self.series, self.sop).object_key
        prefix = f"{site_prefix(self.site)}studies/{self.study}/"
        return f"{prefix}series/{self.series}/" if self.series is not None else prefix

    def describe(self) -> str:
        if self.sop is not None:
            return f"instance {self.sop} in series {self.series} of study {self.study}"
        if self.series is not None:
            return f"series {self.series} of study {self.study}"
        return f"study {self.study}"


@dataclass(frozen=True)
class DeleteOutcome:
    """The result of one delete: the number of instances removed and the audit record's id.

    ``instances`` are the keys of the instances whose index records this delete removed.
    """

    removed: int
    audit_record: str
    instances: tuple[InstanceKey, ...] = field(default=())


def delete_resource(
    store: ObjectStore,
    deleter: IndexDeleter,
    audit: AuditLog,
    events: Publisher,
    target: DeleteTarget,
    actor: Actor,
    request_id: str,
    transport: Transport = "DICOMweb",
) -> DeleteOutcome:
    """Delete every instance under ``target`` from the archive and the index.

    ``deleter`` writes the ``deleted`` changes when it has the change feed, and ``events``
    receives one InstanceDeleted event per removed instance.

    Raises ``NotFoundError`` when the index has nothing under ``target``, ``LegalHoldError``
    when its study is under legal hold, and ``StoreUnavailableError`` when S3 or DynamoDB
    fail, after which the same call completes it.
    """
    instances = deleter.find(target.site, target.study, target.series, target.sop)
    instances += _unindexed(store, target, instances)
    if not instances and not _has_leftovers(deleter, target):
        raise NotFoundError(f"{target.describe()} not found")
    # NOTE: a hold set between this check and the S3 delete does not stop this delete.
    LegalHolds(store).check_deletable(target.site, target.study)
    record = DeletionRecord(
        site=target.site,
        actor=actor,
        request_id=request_id,
        study=target.study,
        series=target.series,
        sop=target.sop,
        instances=[instance.key for instance in instances],
        transport=transport,
    )
    audit_record = audit.record_deletion(record)
    removed_keys: list[InstanceKey] = []
    try:
        for start in range(0, len(instances), BATCH_SIZE):
            removed_keys += _delete_batch(store, deleter, instances[start : start + BATCH_SIZE])
    finally:
        # The feed has the changes of these removals already, so their events go out even
        # when a later batch fails. ``publish`` never raises.
        events.publish([instance_deleted(key) for key in removed_keys])
    removed = len(removed_keys)
    touched = {instance.key.series for instance in instances}
    if target.series is not None:
        touched.add(target.series)
    deleter.settle(target.site, target.study, touched)
    _delete_bundles(store, target, touched)
    logger.info(
        "resource deleted",
        extra={
            "level": record.level,
            "study": target.study,
            "series": target.series,
            "sop": target.sop,
            "instances": removed,
            "audit_record": audit_record,
        },
    )
    return DeleteOutcome(removed, audit_record, tuple(removed_keys))


def _unindexed(
    store: ObjectStore, target: DeleteTarget, indexed: list[IndexedInstance]
) -> list[IndexedInstance]:
    """Return the archived instances under ``target`` that the index has no record of yet."""
    known = {instance.key.object_key for instance in indexed}
    found = []
    for obj in store.list_keys(target.key_prefix()):
        if obj.key in known or not obj.key.endswith(INSTANCE_SUFFIX):
            continue
        try:
            key = InstanceKey.parse(obj.key)
        except ValueError:
            continue  # not an instance of the archive layout, so not the delete's to remove
        if target.sop is None or key.sop == target.sop:
            found.append(IndexedInstance(key, etag=None, metadata_key=None))
    return found


def _delete_bundles(store: ObjectStore, target: DeleteTarget, series: set[str]) -> None:
    keys = []
    for scope in (None, *sorted(series)):
        folder = bundle_key(target.site, target.study, scope, "").rsplit("/", 1)[0] + "/"
        keys += [obj.key for obj in store.list_keys(folder)]
    store.delete(keys)


def _has_leftovers(deleter: IndexDeleter, target: DeleteTarget) -> bool:
    # An instance is only an index record, but a study or series with no instances left can
    # remain as an empty aggregate after a delete that failed before it settled them.
    if target.sop is not None:
        return False
    return deleter.has_aggregates(target.site, target.study, target.series)


def _delete_batch(
    store: ObjectStore, deleter: IndexDeleter, instances: list[IndexedInstance]
) -> list[InstanceKey]:
    store.delete([key for instance in instances for key in instance.object_keys])
    # NOTE: if the same UIDs are stored again between the S3 delete and this removal, and the
    # bytes are identical (same ETag), the record is removed although S3 contains the new
    # object. Only a rebuild of the index from the bucket restores it; the local stack
    # rebuilds at every start.
    return [instance.key for instance in instances if deleter.remove(instance)]
