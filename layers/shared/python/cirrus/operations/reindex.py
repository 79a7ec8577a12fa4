"""``cirrus reindex``: rebuild the index from the archived objects through ingest.

Each object goes through ``BatchIngest``, as the ingest Lambda indexes a queue batch, so a
rebuilt record is the record that normal ingest writes. There are two exceptions. A listing
has no notification sequencer, so rebuilt records have none, and ``metadata_version`` tokens
are new. Objects are fed in key order, in batches of up to ``BATCH_SIZE``, so the instances
of one series arrive together as they do from the queue. An object whose record has the same
ETag and whose claim is in place is left unchanged, so a second run changes nothing.

After the objects and the index entries, the studies pass recomputes the counts of every
study, its series and its modality markers from the instance records and writes those that
differ (``CountRepair``). A record deleted without ``IndexDeleter`` and then indexed again
has been counted twice, and this pass repairs that.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from botocore.exceptions import BotoCoreError
from pynamodb.exceptions import PynamoDBException

from cirrus.errors import InvalidInstanceError, NotFoundError, StoreUnavailableError
from cirrus.index.claims import CLAIM, claim_pk
from cirrus.index.deletion import IndexDeleter, IndexedInstance
from cirrus.index.models import IndexRecord, instance_sk, study_pk
from cirrus.index.writer import IndexOutcome
from cirrus.ingest import BatchIngest, ObjectEvent
from cirrus.local.poller import BATCH_SIZE
from cirrus.operations.checkpoint import (
    INDEX_PHASE,
    OBJECTS_PHASE,
    STUDIES_PHASE,
    Checkpoint,
    Progress,
    Run,
)
from cirrus.operations.counts import CountRepair
from cirrus.operations.scan import (
    archived_instances,
    instance_records,
    object_exists,
    study_prefix,
    study_records,
    with_etag,
)
from cirrus.operations.target import Target
from cirrus.storage.keys import InstanceKey
from cirrus.storage.objects import StoredObject

logger = logging.getLogger(__name__)

_RESULTS: Final = {
    IndexOutcome.CREATED: "indexed",
    IndexOutcome.UPDATED: "updated",
    IndexOutcome.DUPLICATE: "unchanged",
    IndexOutcome.STALE: "unchanged",
}


class Result(StrEnum):
    INDEXED = "indexed"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    # Ingest rejects the object, for example because its UIDs do not match its key.
    REJECTED = "rejected"
    # An index entry whose object is gone: removed with --prune, else only reported.
    PRUNED = "pruned"
    MISSING_OBJECT = "missing object"
    # A study whose counts were rewritten; the summary counts the records written.
    COUNTS_REPAIRED = "counts repaired"


@dataclass(frozen=True)
class Outcome:
    result: Result
    object_key: str
    reason: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {"result": self.result.value, "key": self.object_key, "reason": self.reason}
        )


class LimitReached(Exception):
    """The run stopped after ``limit`` objects, and the checkpoint contains where to continue."""

    def __init__(self, progress: Progress, message: str) -> None:
        super().__init__(message)
        self.progress = progress


def reindex(
    target: Target,
    site: str | None,
    checkpoint: Checkpoint,
    report: Callable[[Outcome], None],
    advance: Callable[[], None] = lambda: None,
    prune: bool = False,
    limit: int | None = None,
) -> Progress:
    """Index every object under the site's prefix; return the final counts.

    ``report`` receives each outcome other than unchanged, and ``advance`` is called for each
    object, index entry and study finished. With ``prune``, index entries whose object is
    gone are removed as a delete removes them (``IndexDeleter``); without it they are
    reported. Then the counts of each study are repaired, and the ``counts repaired`` count
    is the number of study, series and marker records written. Raises
    ``LimitReached`` after ``limit`` objects and ``StoreUnavailableError`` when S3 or
    DynamoDB fail. The checkpoint then contains the last finished position.
    """
    services = target.services
    model = services.index_model
    done = 0
    with Run(checkpoint, advance) as run:
        progress = run.progress

        def record(outcome: Outcome) -> None:
            progress.add(outcome.result.value)
            if outcome.result is not Result.UNCHANGED:
                report(outcome)

        if run.in_phase(OBJECTS_PHASE):
            prefix = target.object_prefix(site)
            listing = archived_instances(services.store, prefix, progress.after_key)
            for batch in _batches(listing, BATCH_SIZE, limit):
                for outcome in _ingest_batch(target, batch):
                    record(outcome)
                    run.finished_object(outcome.object_key)
                done += len(batch)
                if limit is not None and done >= limit:
                    raise LimitReached(progress, f"stopped after {done} objects")
            run.start_phase(INDEX_PHASE)
        if run.in_phase(INDEX_PHASE):
            deleter = IndexDeleter(model, services.change_feed) if prune else None
            for entry in run.records(instance_records(model, site, progress.after_record)):
                object_key = entry.object_key
                if object_key and not object_exists(services.store, object_key):
                    record(_missing(deleter, entry.etag, entry.metadata_key, object_key))
            run.start_phase(STUDIES_PHASE)
        repair = CountRepair(model)
        for study in run.records(study_records(model, site, progress.after_record)):
            written = repair.repair(study.pk)
            if written:
                progress.add(Result.COUNTS_REPAIRED.value, written)
                report(Outcome(Result.COUNTS_REPAIRED, study_prefix(study), f"{written} records"))
    return progress


def _batches(
    listing: Iterator[tuple[StoredObject, InstanceKey]], size: int, limit: int | None
) -> Iterator[list[StoredObject]]:
    """Yield the listed objects in batches of ``size``, and at most ``limit`` in all."""
    batch: list[StoredObject] = []
    for count, (stored, _) in enumerate(listing, start=1):
        batch.append(stored)
        if count == limit:
            break
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ingest_batch(target: Target, batch: list[StoredObject]) -> Iterator[Outcome]:
    """Index one batch as the ingest handler does; yield each object's outcome in key order.

    Raises ``StoreUnavailableError`` at the first object that S3 or DynamoDB fail on, so the
    outcomes yielded before it are the finished ones.
    """
    services = target.services
    events = []
    for listed in batch:
        try:
            stored = with_etag(services.store, listed)
        except NotFoundError:
            continue  # deleted since it was listed: nothing to index
        events.append(ObjectEvent(stored.key, stored.size, stored.etag))
    indexed = _indexed_already(services.index_model, events)
    # NOTE: no BundleRefresher, so rebuilt series get their metadata bundles on first read
    # instead of in advance.
    ingest = BatchIngest(services.store, services.index_writer)
    ingest.run([event for event in events if event.key not in indexed])
    for event in events:
        if event.key in indexed:
            yield Outcome(Result.UNCHANGED, event.key)
            continue
        try:
            outcome = ingest.ingest(event)
        except InvalidInstanceError as exc:
            yield Outcome(Result.REJECTED, event.key, str(exc))
            continue
        except NotFoundError:
            continue
        except StoreUnavailableError:
            logger.warning("reindex stopped by a failed request", extra={"object_key": event.key})
            raise
        yield Outcome(Result(_RESULTS[outcome]), event.key)


def _indexed_already(model: type[IndexRecord], events: list[ObjectEvent]) -> set[str]:
    """Return the keys of ``events`` whose record and claim ingest would leave unchanged.

    Ingest finds such an object a duplicate too, but only after a read and two failed
    transactions, so this one BatchGetItem per batch makes a second run several times faster.
    """
    if not events:
        return set()
    keys = {event.key: InstanceKey.parse(event.key) for event in events}
    keys_to_read = []
    for key in keys.values():
        keys_to_read += [
            (study_pk(key.site, key.study), instance_sk(key.series, key.sop)),
            (claim_pk(key.site, key.sop), CLAIM),
        ]
    try:
        found = {
            (record.pk, record.sk): record
            for record in model.batch_get(
                keys_to_read,
                consistent_read=True,
                attributes_to_get=["pk", "sk", "object_key", "etag"],
            )
        }
    except (PynamoDBException, BotoCoreError) as exc:
        raise StoreUnavailableError(f"index read failed: {type(exc).__name__}") from exc
    unchanged = set()
    for event in events:
        key = keys[event.key]
        record = found.get((study_pk(key.site, key.study), instance_sk(key.series, key.sop)))
        claim = found.get((claim_pk(key.site, key.sop), CLAIM))
        if (
            record is not None
            and record.etag == event.etag
            and claim is not None
            and claim.object_key == event.key
        ):
            unchanged.add(event.key)
    return unchanged


def _missing(
    deleter: IndexDeleter | None, etag: str | None, metadata_key: str | None, object_key: str
) -> Outcome:
    if deleter is None:
        return Outcome(Result.MISSING_OBJECT, object_key)
    key = InstanceKey.parse(object_key)
    removed = deleter.remove(IndexedInstance(key, etag, metadata_key))
    deleter.settle(key.site, key.study, [key.series])
    if not removed:
        return Outcome(Result.MISSING_OBJECT, object_key, "changed while pruning; run again")
    return Outcome(Result.PRUNED, object_key)
