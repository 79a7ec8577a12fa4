"""Writes instance records and keeps study and series aggregates exact.

A new instance is written in one DynamoDB transaction with the counters of its series and
study, conditional on the instance record not existing yet. A redelivered notification of
the same object fails that condition and changes nothing, so the counters count each instance
once however often it is delivered. The same transaction, and the one that replaces an
instance, sets ``metadata_version`` of the series and study records to a new token, so a
precomputed metadata bundle built from an older state no longer matches.

The ``by-modality`` markers of a study carry a copy of the study record's attributes, counts
and sets (``cirrus.index.models``). Each store reads the study record first and updates the
markers of the modalities it lists in the same transaction as the study record. That
transaction is conditional on the study's modalities being the ones read, so no marker is
missed. A store that adds a modality also writes the new marker from the counts read, and is
then conditional on those counts too.

A replacement that changes an instance's SOP class or modality recomputes the sets of its
series, its study and the study's markers from the instance records of the study partition.
That reads the whole partition, which is acceptable because replacements are rare.
"""

from __future__ import annotations

import json
import logging
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.expressions.condition import size
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from cirrus.errors import StoreUnavailableError
from cirrus.index.attributes import (
    INSTANCE_TAGS,
    SERIES_TAGS,
    STUDY_TAGS,
    JsonDict,
    first_value,
    select,
)
from cirrus.index.claims import claim_condition, claim_record
from cirrus.index.models import (
    INSTANCE,
    MODALITY,
    SERIES,
    STUDY,
    IndexRecord,
    get_record,
    instance_sk,
    level_pk,
    level_shard,
    modality_marker,
    modality_sk,
    series_sk,
    study_index_keys,
    study_pk,
    transaction_connection,
)
from cirrus.storage.keys import InstanceKey
from cirrus.storage.objects import ObjectStore

if TYPE_CHECKING:
    from cirrus.events.feed import ChangeFeed, Ticket

logger = logging.getLogger(__name__)

# Compressed metadata above this size goes to an object of its own: a DynamoDB item is at most
# 400 KB, and the rest of the record needs room.
MAX_INLINE_METADATA: Final = 300 * 1024
METADATA_SUFFIX: Final = ".metadata.json.zz"
_ATTEMPTS: Final = 4
# The maximum number of instances that ``put_new_instances`` writes in one transaction. Each
# takes three of the 100 items that DynamoDB allows in a transaction: its record, its claim and
# its change of the feed. The series, the study and its modality markers take the rest.
MAX_BATCH_INSTANCES: Final = 28
_SOP_CLASS_UID: Final = "00080016"
_MODALITY: Final = "00080060"
# The attributes that the recomputation of a study's sets reads from each record of its partition.
_SET_ATTRIBUTES: Final = (
    "pk", "sk", "level", "site", "attrs", "series_count", "instance_count", "modalities",
    "sop_classes",
)  # fmt: skip


class IndexOutcome(Enum):
    CREATED = "created"
    UPDATED = "updated"
    DUPLICATE = "duplicate"
    STALE = "stale"


@dataclass(frozen=True)
class IndexedObject:
    """The facts of a stored object that ingest records besides its metadata."""

    key: InstanceKey
    size: int
    etag: str
    sequencer: str | None
    transfer_syntax: str
    pixel_offset: int | None
    pixel_length: int | None


class IndexWriter:
    """Writes instance records; with ``changes``, each write also saves its change of the feed."""

    def __init__(
        self, model: type[IndexRecord], store: ObjectStore, changes: ChangeFeed | None = None
    ) -> None:
        self.model = model
        self._model = model
        self._store = store
        self._changes = changes
        self._connection = transaction_connection(model)

    def put_instance(
        self, obj: IndexedObject, metadata: JsonDict, version: str | None = None
    ) -> IndexOutcome:
        """Index one stored instance; return whether it was new, changed or seen already.

        A new or replaced instance sets ``version`` (a fresh random token when None) as the
        ``metadata_version`` of its series and study.

        Raises ``StoreUnavailableError`` when DynamoDB keeps failing, so the notification is
        retried and, after the queue's receive limit, kept in the dead-letter queue.
        """
        instance = self._instance_record(obj, metadata)
        version = version or uuid.uuid4().hex
        ticket: Ticket | None = None
        try:
            for _ in range(_ATTEMPTS):
                study, series_indexed = self._study_and_series(obj.key)
                if ticket is None:
                    ticket = self._take_numbers(obj.key.site, 1)
                ticket, change = self._changes_of(ticket, [(obj, metadata)])
                # Both kinds of transaction are tried, the one that the read points to first,
                # because the series may be added or deleted meanwhile.
                adds = [self._add_to_existing_series, self._add_with_new_series]
                if not series_indexed:
                    adds.reverse()
                for add in adds:
                    if add(instance, obj, metadata, version, study, change):
                        self._note_written(ticket)
                        return IndexOutcome.CREATED
                outcome = self._replace_existing(instance, obj, version, change)
                if outcome is IndexOutcome.UPDATED:
                    self._note_written(ticket)
                if outcome is not None:
                    return outcome
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(
                f"index write for {obj.key.object_key} failed: {type(exc).__name__}"
            ) from exc
        finally:
            self._void_unused(ticket)
        raise StoreUnavailableError(
            f"index write for {obj.key.object_key} kept conflicting with concurrent writes"
        )

    def put_new_instances(
        self, entries: Sequence[tuple[IndexedObject, JsonDict]], version: str
    ) -> bool:
        """Index new instances of one indexed series, and record their claims, in one transaction.

        Instances that arrive together then cost one read (of two items) and one transaction
        instead of three requests each. This applies when the series is indexed already, none
        of the instances is, each claim is free or held by the instance's own key, and the
        study lists every instance's modality. It then returns True. Otherwise it writes nothing
        and returns False, and the caller indexes each instance with ``put_instance``. Raises
        ``StoreUnavailableError`` when DynamoDB fails.
        """
        keys = [obj.key for obj, _ in entries]
        first = keys[0]
        same_series = all(
            (key.site, key.study, key.series) == (first.site, first.study, first.series)
            for key in keys
        )
        if not same_series or len(set(keys)) != len(keys) or len(keys) > MAX_BATCH_INSTANCES:
            raise ValueError(
                f"a batch must contain distinct instances of one series, at most "
                f"{MAX_BATCH_INSTANCES}; got {len(keys)}, {len(set(keys))} distinct"
            )
        metadatas = [metadata for _, metadata in entries]
        try:
            study, series_indexed = self._study_and_series(first)
            if study is None or not series_indexed:
                return False
            known = set(study.modalities or ())
            modalities = {str(m) for m in map(_first_modality, metadatas) if m}
            if not modalities <= known:
                return False
            ticket = self._take_numbers(first.site, len(entries))
            try:
                ticket, change = self._changes_of(ticket, entries)
                written = self._transact_batch(entries, study, known, version, change)
                if written:
                    self._note_written(ticket)
                return written
            finally:
                self._void_unused(ticket)
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(
                f"index write of {len(entries)} instances of series {first.series} failed: "
                f"{type(exc).__name__}"
            ) from exc

    def _study_and_series(self, key: InstanceKey) -> tuple[IndexRecord | None, bool]:
        """Read the study record of ``key`` and whether its series is indexed, in one request.

        Knowing whether the series exists saves the first instance of each new series a
        transaction that would fail on its condition.
        """
        pk = study_pk(key.site, key.study)
        wanted = [(pk, STUDY), (pk, series_sk(key.series))]
        found = {
            record.sk: record for record in self._model.batch_get(wanted, consistent_read=True)
        }
        return found.get(STUDY), series_sk(key.series) in found

    def _transact_batch(
        self,
        entries: Sequence[tuple[IndexedObject, JsonDict]],
        study: IndexRecord,
        known: set[str],
        version: str,
        change: list[tuple[Model, Any]],
    ) -> bool:
        model = self._model
        obj = entries[0][0]
        count = len(entries)
        additions = self._set_additions(model, *(metadata for _, metadata in entries))
        # The study and series records exist, so the attributes that their first instance set
        # stay as they are, and the updates stay short.
        actions = [model.instance_count.add(count), model.metadata_version.set(version)]
        try:
            with TransactWrite(connection=self._connection) as transaction:
                for record, condition in change:
                    transaction.save(record, condition=condition)
                for entry_obj, entry_metadata in entries:
                    instance = self._instance_record(entry_obj, entry_metadata)
                    transaction.save(instance, condition=model.pk.does_not_exist())
                    claim = claim_record(model, entry_obj.key)
                    transaction.save(claim, condition=claim_condition(model, entry_obj.key))
                series = model(study.pk, series_sk(obj.key.series))
                transaction.update(
                    series, actions=[*actions, *additions], condition=model.pk.exists()
                )
                transaction.update(
                    model(study.pk, STUDY),
                    actions=[*actions, *additions],
                    condition=model.pk.exists() & self._modalities_are(known),
                )
                for modality in sorted(known):
                    transaction.update(
                        model(study.pk, modality_sk(modality)),
                        actions=[model.instance_count.add(count), *additions],
                    )
        except TransactWriteError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    def _instance_record(self, obj: IndexedObject, metadata: JsonDict) -> IndexRecord:
        key = obj.key
        record = instance_record(self._model, obj, metadata)
        compressed = zlib.compress(json.dumps(metadata, separators=(",", ":")).encode(), 6)
        if len(compressed) <= MAX_INLINE_METADATA:
            record.metadata = compressed
        else:
            record.metadata_key = key.object_key + METADATA_SUFFIX
            self._store.put(record.metadata_key, compressed, content_type="application/zlib")
        return record

    def _add_to_existing_series(
        self,
        instance: IndexRecord,
        obj: IndexedObject,
        metadata: JsonDict,
        version: str,
        study: IndexRecord | None,
        change: list[tuple[Model, Any]],
    ) -> bool:
        model = self._model
        series = model(instance.pk, series_sk(obj.key.series))
        with_series = [
            model.instance_count.add(1),
            model.metadata_version.set(version),
            *self._set_additions(model, metadata),
        ]
        saves, updates = self._study_writes(obj, metadata, 0, version, study)
        return self._transact(
            instance,
            saves=[*change, *saves],
            updates=[(series, with_series, model.pk.exists()), *updates],
        )

    def _add_with_new_series(
        self,
        instance: IndexRecord,
        obj: IndexedObject,
        metadata: JsonDict,
        version: str,
        study: IndexRecord | None,
        change: list[tuple[Model, Any]],
    ) -> bool:
        model = self._model
        key = obj.key
        series = model(
            instance.pk,
            series_sk(key.series),
            level=SERIES,
            site=key.site,
            level_pk=level_pk(key.site, SERIES, level_shard(key.study)),
            level_sk=f"{key.study}#{key.series}",
            attrs=select(metadata, SERIES_TAGS),
            instance_count=1,
            metadata_version=version,
        )
        modality = first_value(metadata, _MODALITY)
        if modality:
            series.modalities = {str(modality)}
        sop_class = first_value(metadata, _SOP_CLASS_UID)
        if sop_class:
            series.sop_classes = {str(sop_class)}
        saves, updates = self._study_writes(obj, metadata, 1, version, study)
        return self._transact(
            instance,
            saves=[*change, (series, model.pk.does_not_exist()), *saves],
            updates=updates,
        )

    def _study_writes(
        self,
        obj: IndexedObject,
        metadata: JsonDict,
        new_series: int,
        version: str,
        study: IndexRecord | None,
    ) -> tuple[list[tuple[IndexRecord, Any]], list[tuple[IndexRecord, list[Any], Any]]]:
        """Return the saves and updates of the study record and its markers for one store.

        ``study`` is the study record as read before the transaction, or None.
        """
        model = self._model
        pk = study_pk(obj.key.site, obj.key.study)
        known = set(study.modalities or ()) if study is not None else set()
        guard = self._modalities_are(known) if study is not None else model.pk.does_not_exist()
        marker_actions = [model.instance_count.add(1), *self._set_additions(model, metadata)]
        if new_series:
            marker_actions.append(model.series_count.add(new_series))
        updates = [(model(pk, modality_sk(m)), marker_actions, None) for m in sorted(known)]
        saves = []
        modality = first_value(metadata, _MODALITY)
        if modality and str(modality) not in known:
            # The new marker starts from the counts read, so they must still be current.
            if study is not None:
                guard = guard & _equals(model.instance_count, study.instance_count)
                guard = guard & _equals(model.series_count, study.series_count)
            state = self._study_after(obj, metadata, new_series, study)
            saves.append((modality_marker(model, state, str(modality)), None))
        study_update = (model(pk, STUDY), self._study_actions(obj, metadata, new_series, version))
        return saves, [(*study_update, guard), *updates]

    def _study_after(
        self, obj: IndexedObject, metadata: JsonDict, new_series: int, study: IndexRecord | None
    ) -> IndexRecord:
        """Return the study record as ``_study_actions`` leaves it, without writing it."""
        model = self._model
        key = obj.key
        state = model(study_pk(key.site, key.study), STUDY, level=STUDY, site=key.site)
        state.attrs = (study.attrs if study is not None else None) or select(metadata, STUDY_TAGS)
        state.series_count = int(study.series_count or 0 if study else 0) + new_series
        state.instance_count = int(study.instance_count or 0 if study else 0) + 1
        modalities = set(study.modalities or ()) if study is not None else set()
        sop_classes = set(study.sop_classes or ()) if study is not None else set()
        for values, tag in ((modalities, _MODALITY), (sop_classes, _SOP_CLASS_UID)):
            value = first_value(metadata, tag)
            if value:
                values.add(str(value))
        state.modalities = modalities or None
        state.sop_classes = sop_classes or None
        return state

    def _modalities_are(self, modalities: set[str]) -> Any:
        """Return the condition that the study record lists exactly ``modalities``."""
        attribute = self._model.modalities
        if not modalities:
            return attribute.does_not_exist()
        condition = size(attribute) == len(modalities)  # type: ignore[no-untyped-call]
        for modality in sorted(modalities):
            condition = condition & attribute.contains(modality)
        return condition

    def _transact(
        self,
        instance: IndexRecord,
        saves: list[tuple[Model, Any]] = (),  # type: ignore[assignment]
        updates: list[tuple[IndexRecord, list[Any], Any]] = (),  # type: ignore[assignment]
    ) -> bool:
        """Run one transaction that creates ``instance``; False if a condition failed."""
        try:
            with TransactWrite(connection=self._connection) as transaction:
                transaction.save(instance, condition=self._model.pk.does_not_exist())
                for record, condition in saves:
                    transaction.save(record, condition=condition)
                for record, actions, condition in updates:
                    transaction.update(record, actions=actions, condition=condition)
        except TransactWriteError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    def _replace_existing(
        self,
        instance: IndexRecord,
        obj: IndexedObject,
        version: str,
        change: list[tuple[Model, Any]],
    ) -> IndexOutcome | None:
        """Handle an instance record that exists already; None if it vanished meanwhile."""
        existing = get_record(self._model, instance.pk, instance.sk, consistent_read=True)
        if existing is None:
            return None
        if existing.etag == obj.etag:
            return IndexOutcome.DUPLICATE
        if _is_older(obj.sequencer, existing.sequencer):
            logger.info("stale notification skipped", extra={"object_key": obj.key.object_key})
            return IndexOutcome.STALE
        # NOTE: the series and study records keep the attributes of the first version; a
        # replaced instance with other study attributes does not change them.
        if not self._save_replacement(instance, existing, obj.key.series, version, change):
            return None
        if _sets_of(existing) != _sets_of(instance):
            self._recompute_sets(obj.key)
        return IndexOutcome.UPDATED

    def _save_replacement(
        self,
        instance: IndexRecord,
        existing: IndexRecord,
        series: str,
        version: str,
        change: list[tuple[Model, Any]],
    ) -> bool:
        """Save a replaced instance and set ``version`` on its series and study records.

        The save is conditional on the record still holding the object of ``existing``, so a
        concurrent replacement makes the caller read the record again. False if a condition
        failed.
        """
        model = self._model
        unchanged = (
            model.etag == existing.etag
            if existing.etag is not None
            else model.etag.does_not_exist()
        )
        changed: list[Any] = [model.metadata_version.set(version)]
        try:
            with TransactWrite(connection=self._connection) as transaction:
                for record, condition in change:
                    transaction.save(record, condition=condition)
                transaction.save(instance, condition=unchanged)
                for record in (model(instance.pk, series_sk(series)), self._study_key(instance)):
                    transaction.update(record, actions=changed, condition=model.pk.exists())
        except TransactWriteError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    def _recompute_sets(self, key: InstanceKey) -> None:
        """Recompute the modalities and SOP classes of a series, its study and its markers."""
        for _ in range(_ATTEMPTS):
            if self._try_recompute_sets(key):
                return
        raise StoreUnavailableError(
            f"index update of study {key.study} kept conflicting with concurrent writes"
        )

    def _try_recompute_sets(self, key: InstanceKey) -> bool:
        model = self._model
        pk = study_pk(key.site, key.study)
        records = list(
            model.query(pk, consistent_read=True, attributes_to_get=list(_SET_ATTRIBUTES))
        )
        by_sk = {record.sk: record for record in records}
        study, series = by_sk.get(STUDY), by_sk.get(series_sk(key.series))
        if study is None or series is None:
            return True  # deleted meanwhile, and the delete settles the sets
        series_sets = _sets_by_series(records, by_sk)
        study.modalities = set().union(*(m for m, _ in series_sets.values())) or None
        study.sop_classes = set().union(*(c for _, c in series_sets.values())) or None
        own_modalities, own_sop_classes = series_sets.get(key.series, (set(), set()))
        markers = [record for record in records if record.level == MODALITY]
        modalities_left = set(study.modalities or ())
        try:
            with TransactWrite(connection=self._connection) as transaction:
                transaction.update(
                    series,
                    actions=[
                        _set_or_remove(model.modalities, own_modalities),
                        _set_or_remove(model.sop_classes, own_sop_classes),
                    ],
                    condition=_equals(model.instance_count, series.instance_count),
                )
                transaction.update(
                    study,
                    actions=[
                        _set_or_remove(model.modalities, modalities_left),
                        _set_or_remove(model.sop_classes, set(study.sop_classes or ())),
                    ],
                    condition=_equals(model.instance_count, study.instance_count)
                    & _equals(model.series_count, study.series_count),
                )
                for marker in markers:
                    if marker.sk.split("#", 1)[1] not in modalities_left:
                        transaction.delete(marker)
                for modality in sorted(modalities_left):
                    transaction.save(modality_marker(model, study, modality))
        except TransactWriteError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    def _take_numbers(self, site: str, count: int) -> Ticket | None:
        """Take ``count`` sequence numbers of the change feed, or None without a feed."""
        return self._changes.allocate(site, count) if self._changes is not None else None

    def _changes_of(
        self, ticket: Ticket | None, entries: Sequence[tuple[IndexedObject, JsonDict]]
    ) -> tuple[Ticket | None, list[tuple[Model, Any]]]:
        """Return the ticket to use now and the ``stored`` changes of ``entries`` to save."""
        if ticket is None or self._changes is None:
            return ticket, []
        ticket = self._changes.fresh(ticket)
        changes: list[tuple[Model, Any]] = []
        for index, (obj, metadata) in enumerate(entries):
            sop_class = first_value(metadata, _SOP_CLASS_UID)
            changes.append(
                self._changes.change(
                    ticket, index, "stored", obj.key, str(sop_class) if sop_class else None
                )
            )
        return ticket, changes

    def _note_written(self, ticket: Ticket | None) -> None:
        if ticket is not None and self._changes is not None:
            self._changes.written(ticket, range(ticket.count))

    def _void_unused(self, ticket: Ticket | None) -> None:
        if ticket is not None and self._changes is not None:
            self._changes.void(ticket)

    def _study_key(self, instance: IndexRecord) -> IndexRecord:
        return self._model(instance.pk, STUDY)

    def _study_actions(
        self, obj: IndexedObject, metadata: JsonDict, new_series: int, version: str
    ) -> list[Any]:
        model = self._model
        key = obj.key
        attrs = select(metadata, STUDY_TAGS)
        # Each key is set only where it is missing, so the first instance decides them.
        keys: list[Any] = [
            getattr(model, name).set(getattr(model, name) | value)
            for name, value in study_index_keys(key.site, key.study, attrs).items()
        ]
        actions = [
            model.level.set(model.level | STUDY),
            model.site.set(model.site | key.site),
            *keys,
            model.attrs.set(model.attrs | attrs),
            model.instance_count.add(1),
            *self._set_additions(model, metadata),
        ]
        if new_series:
            actions.append(model.series_count.add(new_series))
        actions.append(model.metadata_version.set(version))
        return actions

    @staticmethod
    def _set_additions(model: type[IndexRecord], *metadatas: JsonDict) -> list[Any]:
        """Return the additions of the modalities and SOP classes of ``metadatas`` to the sets."""
        actions = []
        modalities = {str(m) for m in map(_first_modality, metadatas) if m}
        if modalities:
            actions.append(model.modalities.add(modalities))
        sop_classes = {str(first_value(m, _SOP_CLASS_UID) or "") for m in metadatas} - {""}
        if sop_classes:
            actions.append(model.sop_classes.add(sop_classes))
        return actions


def instance_record(
    model: type[IndexRecord], obj: IndexedObject, metadata: JsonDict
) -> IndexRecord:
    """Return the instance record that ingest writes for ``obj``, without its metadata."""
    key = obj.key
    record = model(
        study_pk(key.site, key.study),
        instance_sk(key.series, key.sop),
        level=INSTANCE,
        site=key.site,
        level_pk=level_pk(key.site, INSTANCE, level_shard(key.study)),
        level_sk=f"{key.study}#{key.series}#{key.sop}",
        attrs=select(metadata, INSTANCE_TAGS),
        object_key=key.object_key,
        size=obj.size,
        etag=obj.etag,
        sequencer=obj.sequencer,
        transfer_syntax=obj.transfer_syntax,
        pixel_offset=obj.pixel_offset,
        pixel_length=obj.pixel_length,
    )
    modality = first_value(metadata, _MODALITY)
    if modality:
        # Kept per instance so that a replacement can recompute the series' modalities.
        record.modalities = {str(modality)}
    return record


def _first_modality(metadata: JsonDict) -> Any:
    return first_value(metadata, _MODALITY)


def _sets_by_series(
    records: list[IndexRecord], by_sk: dict[str, IndexRecord]
) -> dict[str, tuple[set[str], set[str]]]:
    """Return the modalities and SOP classes of the instance records, by series UID."""
    sets: dict[str, tuple[set[str], set[str]]] = {}
    for record in records:
        if record.level != INSTANCE:
            continue
        series_uid = record.sk.split("#", 2)[1]
        modalities, sop_classes = sets.setdefault(series_uid, (set(), set()))
        series = by_sk.get(series_sk(series_uid))
        # An instance indexed without its own modality counts with its series' modalities.
        modalities |= set(record.modalities or (series.modalities if series else None) or ())
        sop_class = first_value(record.attrs or {}, _SOP_CLASS_UID)
        if sop_class:
            sop_classes.add(str(sop_class))
    return sets


def _sets_of(instance: IndexRecord) -> tuple[set[str], Any]:
    """Return what an instance adds to its series' sets: its modalities and SOP class."""
    return set(instance.modalities or ()), first_value(instance.attrs or {}, _SOP_CLASS_UID)


def _equals(attribute: Any, value: Any) -> Any:
    """Return the condition that ``attribute`` still has ``value``, absent when None."""
    return attribute.does_not_exist() if value is None else attribute == value


def _set_or_remove(attribute: Any, values: set[str]) -> Any:
    # DynamoDB stores no empty sets, so an empty result removes the attribute.
    return attribute.set(values) if values else attribute.remove()


def _condition_failed(exc: TransactWriteError) -> bool:
    codes = [reason.code if reason else None for reason in exc.cancellation_reasons]
    return "ConditionalCheckFailed" in codes


def _is_older(sequencer: str | None, than: str | None) -> bool:
    """Compare S3 event sequencers, which order the events of one key when left-padded."""
    if not sequencer or not than:
        return False
    width = max(len(sequencer), len(than))
    return sequencer.rjust(width, "0") < than.rjust(width, "0")
