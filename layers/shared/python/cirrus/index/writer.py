"""Writes instance records and keeps study and series aggregates exact.

A new instance is written in one DynamoDB transaction with the counters of its series and
study, conditional on the instance record not existing yet. A redelivered notification of
the same object fails that condition and changes nothing, so the counters count each instance
once however often it is delivered. The same transaction, and the one that replaces an
instance, sets ``metadata_version`` of the series and study records to a new token, so a
precomputed metadata bundle built from an older state no longer matches.
"""

from __future__ import annotations

import json
import logging
import uuid
import zlib
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from botocore.exceptions import BotoCoreError
from pynamodb.connection import Connection
from pynamodb.exceptions import PynamoDBException, TransactWriteError
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
from cirrus.index.models import (
    INSTANCE,
    SERIES,
    STUDY,
    IndexRecord,
    get_record,
    instance_sk,
    level_pk,
    level_shard,
    modality_marker,
    series_sk,
    study_index_keys,
    study_pk,
)
from cirrus.storage.keys import InstanceKey
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

# Compressed metadata above this size goes to an object of its own: a DynamoDB item is at most
# 400 KB, and the rest of the record needs room.
MAX_INLINE_METADATA: Final = 300 * 1024
METADATA_SUFFIX: Final = ".metadata.json.zz"
_ATTEMPTS: Final = 4


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
    def __init__(self, model: type[IndexRecord], store: ObjectStore) -> None:
        self.model = model
        self._model = model
        self._store = store
        meta = model.Meta
        self._connection = Connection(
            region=getattr(meta, "region", None), host=getattr(meta, "host", None)
        )

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
        try:
            for _ in range(_ATTEMPTS):
                if self._add_to_existing_series(instance, obj, metadata, version):
                    return IndexOutcome.CREATED
                if self._add_with_new_series(instance, obj, metadata, version):
                    return IndexOutcome.CREATED
                outcome = self._replace_existing(instance, obj, version)
                if outcome is not None:
                    return outcome
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(
                f"index write for {obj.key.object_key} failed: {type(exc).__name__}"
            ) from exc
        raise StoreUnavailableError(
            f"index write for {obj.key.object_key} kept conflicting with concurrent writes"
        )

    def _instance_record(self, obj: IndexedObject, metadata: JsonDict) -> IndexRecord:
        key = obj.key
        record = self._model(
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
        compressed = zlib.compress(json.dumps(metadata, separators=(",", ":")).encode(), 6)
        if len(compressed) <= MAX_INLINE_METADATA:
            record.metadata = compressed
        else:
            record.metadata_key = key.object_key + METADATA_SUFFIX
            self._store.put(record.metadata_key, compressed, content_type="application/zlib")
        return record

    def _add_to_existing_series(
        self, instance: IndexRecord, obj: IndexedObject, metadata: JsonDict, version: str
    ) -> bool:
        model = self._model
        series = model(instance.pk, series_sk(obj.key.series))
        with_series = [
            model.instance_count.add(1),
            model.metadata_version.set(version),
            *self._set_additions(model, metadata),
        ]
        return self._transact(
            instance,
            updates=[
                (series, with_series, model.pk.exists()),
                (self._study_key(instance), self._study_actions(obj, metadata, 0, version), None),
            ],
        )

    def _add_with_new_series(
        self, instance: IndexRecord, obj: IndexedObject, metadata: JsonDict, version: str
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
        saves: list[tuple[IndexRecord, Any]] = [(series, model.pk.does_not_exist())]
        modality = first_value(metadata, "00080060")
        if modality:
            series.modalities = {str(modality)}
            # The marker that lists the study in ``by-modality``; writing it again is harmless.
            study_date = str(first_value(metadata, "00080020") or "")
            marker = modality_marker(model, key.site, key.study, str(modality), study_date)
            saves.append((marker, None))
        return self._transact(
            instance,
            saves=saves,
            updates=[
                (self._study_key(instance), self._study_actions(obj, metadata, 1, version), None)
            ],
        )

    def _transact(
        self,
        instance: IndexRecord,
        saves: list[tuple[IndexRecord, Any]] = (),  # type: ignore[assignment]
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
        self, instance: IndexRecord, obj: IndexedObject, version: str
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
        if not self._save_replacement(instance, existing, obj.key.series, version):
            return None
        return IndexOutcome.UPDATED

    def _save_replacement(
        self, instance: IndexRecord, existing: IndexRecord, series: str, version: str
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
                transaction.save(instance, condition=unchanged)
                for record in (model(instance.pk, series_sk(series)), self._study_key(instance)):
                    transaction.update(record, actions=changed, condition=model.pk.exists())
        except TransactWriteError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

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
    def _set_additions(model: type[IndexRecord], metadata: JsonDict) -> list[Any]:
        actions = []
        modality = first_value(metadata, "00080060")
        if modality:
            actions.append(model.modalities.add({str(modality)}))
        sop_class = first_value(metadata, "00080016")
        if sop_class:
            actions.append(model.sop_classes.add({str(sop_class)}))
        return actions


def _condition_failed(exc: TransactWriteError) -> bool:
    codes = [reason.code if reason else None for reason in exc.cancellation_reasons]
    return "ConditionalCheckFailed" in codes


def _is_older(sequencer: str | None, than: str | None) -> bool:
    """Compare S3 event sequencers, which order the events of one key when left-padded."""
    if not sequencer or not than:
        return False
    width = max(len(sequencer), len(than))
    return sequencer.rjust(width, "0") < than.rjust(width, "0")
