"""``cirrus verify``: compare the archive's objects with the index and report each difference.

The objects are the source of truth. The objects pass reads each instance's header, as ingest
does, and compares the instance record with the record that ingest would write from it, and
checks the claim of its SOP Instance UID. The index pass then looks for instance records
whose object is gone, and the studies pass checks the counts of each study
(``cirrus.operations.counts``). No pass changes anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from botocore.exceptions import BotoCoreError
from pynamodb.exceptions import PynamoDBException

from cirrus.errors import InvalidInstanceError, NotFoundError, StoreUnavailableError
from cirrus.index.claims import CLAIM, claim_pk
from cirrus.index.models import IndexRecord, get_record, instance_sk, study_pk
from cirrus.index.writer import instance_record
from cirrus.ingest import ObjectEvent, prepare_object
from cirrus.operations.checkpoint import (
    INDEX_PHASE,
    OBJECTS_PHASE,
    STUDIES_PHASE,
    Checkpoint,
    Progress,
    Run,
)
from cirrus.operations.counts import count_drift, read_partition
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

# Record attributes that a correct index may hold differently from a fresh ingest: the
# sequencer of the notification that was ingested (a listing has none), and the inline or
# separate metadata, which is compared decompressed instead.
_NOT_COMPARED: Final = frozenset({"sequencer", "metadata", "metadata_key"})


class Difference(StrEnum):
    NOT_INDEXED = "not indexed"
    MISSING_OBJECT = "missing object"
    DIFFERENT = "different"
    # An object that ingest rejects, such as one whose UIDs do not match its key.
    INVALID_OBJECT = "invalid object"


@dataclass(frozen=True)
class Finding:
    kind: Difference
    object_key: str
    # The differing record attributes, or why ingest rejects the object.
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind.value, "key": self.object_key, "detail": self.detail})


# Count names of a verify run besides the kinds of difference.
OBJECTS = "objects"
RECORDS = "index entries"
STUDIES = "studies"


def verify(
    target: Target,
    site: str | None,
    checkpoint: Checkpoint,
    report: Callable[[Finding], None],
    advance: Callable[[], None] = lambda: None,
) -> Progress:
    """Compare the objects under the site's prefix with the index; return the final counts.

    Three passes: the objects, the instance records, and the counts of each study. ``report``
    receives each difference and ``advance`` is called for each object, index entry and
    study finished. With a checkpoint, a run continues after the last saved position and
    counts on from the saved counts. Raises ``StoreUnavailableError`` when S3 or DynamoDB
    fail. The checkpoint then contains the last finished position.
    """
    store = target.services.store
    model = target.services.index_model
    with Run(checkpoint, advance) as run:

        def found(finding: Finding) -> None:
            run.progress.add(finding.kind.value)
            report(finding)

        if run.in_phase(OBJECTS_PHASE):
            prefix = target.object_prefix(site)
            for stored, key in archived_instances(store, prefix, run.progress.after_key):
                finding = _check_object(target, stored, key)
                if finding is not None:
                    found(finding)
                run.progress.add(OBJECTS)
                run.finished_object(stored.key)
            run.start_phase(INDEX_PHASE)
        if run.in_phase(INDEX_PHASE):
            for record in run.records(instance_records(model, site, run.progress.after_record)):
                if record.object_key and not object_exists(store, record.object_key):
                    found(Finding(Difference.MISSING_OBJECT, record.object_key))
                run.progress.add(RECORDS)
            run.start_phase(STUDIES_PHASE)
        for study in run.records(study_records(model, site, run.progress.after_record)):
            for finding in _check_counts(model, study):
                found(finding)
            run.progress.add(STUDIES)
    return run.progress


def _check_object(target: Target, listed: StoredObject, key: InstanceKey) -> Finding | None:
    """Return the difference between an object and its index record, or None."""
    store = target.services.store
    try:
        stored = with_etag(store, listed)
    except NotFoundError:
        return None  # deleted since it was listed
    services = target.services
    try:
        prepared = prepare_object(store, ObjectEvent(stored.key, stored.size, stored.etag))
    except InvalidInstanceError as exc:
        return Finding(Difference.INVALID_OBJECT, stored.key, str(exc))
    except NotFoundError:
        return None

    model = services.index_model
    pk, sk = study_pk(key.site, key.study), instance_sk(key.series, key.sop)
    try:
        record = get_record(model, pk, sk, consistent_read=True)
    except (PynamoDBException, BotoCoreError) as exc:
        raise StoreUnavailableError(f"index read of {stored.key} failed: {exc}") from exc
    if record is None:
        return Finding(Difference.NOT_INDEXED, stored.key)

    expected = instance_record(model, prepared.obj, prepared.metadata).attribute_values
    actual = record.attribute_values
    names = sorted((set(expected) | set(actual)) - _NOT_COMPARED)
    differing = [
        name for name in names if _as_json(expected.get(name)) != _as_json(actual.get(name))
    ]

    try:
        claim = get_record(model, claim_pk(key.site, key.sop), CLAIM, consistent_read=True)
    except (PynamoDBException, BotoCoreError) as exc:
        raise StoreUnavailableError(f"index read of {stored.key} failed: {exc}") from exc
    if claim is None or claim.object_key != stored.key:
        differing.append("claim")

    try:
        if services.index_reader.metadata_of(record) != _as_json(prepared.metadata):
            differing.append("metadata")
    except NotFoundError:
        differing.append("metadata")
    if differing:
        return Finding(Difference.DIFFERENT, stored.key, ", ".join(differing))
    return None


def _as_json(value: object) -> object:
    """Return ``value`` as the index stores it: a dict or list after a JSON round trip."""
    if isinstance(value, dict | list | tuple):
        return json.loads(json.dumps(value))
    return value


def _check_counts(model: type[IndexRecord], study: IndexRecord) -> list[Finding]:
    """Compare the counts of a study, its series and markers with its instance records."""
    wrong = count_drift(study, read_partition(model, study.pk))
    if not wrong:
        return []
    return [Finding(Difference.DIFFERENT, study_prefix(study), "; ".join(wrong))]
