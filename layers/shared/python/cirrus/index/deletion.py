"""Removes instance records from the index and keeps the study and series aggregates exact.

Each instance leaves the index in one transaction that deletes its record and decrements the
instance counts of its series and study, conditional on the record still holding the object
that was deleted from S3. A removal that runs twice therefore counts once.

Afterwards ``settle`` brings the aggregates of each touched series and study in line with what
is left: a series or study without instances is deleted, the SOP classes and modalities of
the others are recomputed from their remaining records, and the ``by-modality`` markers of
modalities no series has any more are deleted with the study's update. The same transaction
rewrites the other markers from the settled study record, because each marker carries a copy
of the study's counts and sets. These writes are
conditional on the counts read before, so a concurrent store makes them start again instead
of being overwritten.
Every step can run again after a crash, so a retried delete finishes what a failed one left.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError
from pynamodb.exceptions import DeleteError, PynamoDBException, TransactWriteError
from pynamodb.transactions import TransactWrite

from cirrus.errors import ConflictError, StoreUnavailableError
from cirrus.index.claims import CLAIM, InstanceClaims, claim_pk
from cirrus.index.models import (
    INSTANCE,
    MODALITY,
    SERIES,
    STUDY,
    IndexRecord,
    get_record,
    instance_sk,
    modality_marker,
    series_sk,
    study_pk,
    transaction_connection,
)
from cirrus.storage.keys import InstanceKey

if TYPE_CHECKING:
    from cirrus.events.feed import ChangeFeed

logger = logging.getLogger(__name__)

_SOP_CLASS_UID: Final = "00080016"
# Conditional writes that lose to a concurrent store are tried again this many times.
_ATTEMPTS: Final = 5


@dataclass(frozen=True)
class IndexedInstance:
    """An instance record that a delete removes, with the objects it refers to."""

    key: InstanceKey
    etag: str | None
    metadata_key: str | None

    @property
    def object_keys(self) -> list[str]:
        """Return the archive objects of the instance: the Part 10 object and its metadata."""
        keys = [self.key.object_key]
        if self.metadata_key:
            keys.append(self.metadata_key)
        return keys


class IndexDeleter:
    """Finds and removes the instance records of a study, series or instance.

    With ``changes``, the removal of each record saves its ``deleted`` change of the feed in
    the same transaction. It has no default, so that every caller states whether the
    deployment has a feed: ``Services.change_feed`` is None only without a changes table.
    """

    def __init__(self, model: type[IndexRecord], changes: ChangeFeed | None) -> None:
        self._model = model
        self._changes = changes
        self._connection = transaction_connection(model)

    def find(
        self, site: str, study: str, series: str | None = None, sop: str | None = None
    ) -> list[IndexedInstance]:
        """Return the instance records under a study, a series or one instance, in key order."""
        model = self._model
        if sop is not None and series is not None:
            prefix = f"{INSTANCE}#{series}#{sop}"
        elif series is not None:
            prefix = f"{INSTANCE}#{series}#"
        else:
            prefix = f"{INSTANCE}#"
        found = []
        try:
            for record in model.query(
                study_pk(site, study), model.sk.startswith(prefix), consistent_read=True
            ):
                _, record_series, record_sop = record.sk.split("#", 2)
                if sop is not None and record_sop != sop:
                    continue  # a longer SOP Instance UID that starts with ``sop``
                key = InstanceKey(site, study, record_series, record_sop)
                found.append(IndexedInstance(key, record.etag, record.metadata_key))
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(f"index query of study {study} failed: {exc}") from exc
        return found

    def has_aggregates(self, site: str, study: str, series: str | None = None) -> bool:
        """Tell whether the study record, or the series record when given, exists."""
        sk = series_sk(series) if series is not None else STUDY
        return self._get(study_pk(site, study), sk) is not None

    def remove(self, instance: IndexedInstance) -> bool:
        """Delete the record of ``instance`` and count it out of its series and study.

        Returns False when the record is gone already or now refers to another object (a newer
        store of the same UIDs), in which case the index keeps it. The claim of the SOP
        Instance UID is released first, so that no crash leaves a claim without a record.
        """
        self.release_claim(instance.key)
        removed = self._remove_with_change(instance)
        if not removed:
            self._restore_claim(instance.key)
        return removed

    def _remove_with_change(self, instance: IndexedInstance) -> bool:
        """Remove the record, with its ``deleted`` change of the feed when there is a feed."""
        changes = self._changes
        if changes is None:
            return self._remove_record(instance, [])
        ticket = changes.allocate(instance.key.site)
        try:
            change = changes.change(ticket, 0, "deleted", instance.key)
            removed = self._remove_record(instance, [change])
            if removed:
                changes.written(ticket, [0])
            return removed
        finally:
            changes.void(ticket)

    def _remove_record(self, instance: IndexedInstance, change: list[tuple[Any, Any]]) -> bool:
        model = self._model
        key = instance.key
        pk = study_pk(key.site, key.study)
        record = model(pk, _instance_sk(key))
        condition = model.pk.exists()
        if instance.etag is not None:
            condition = condition & (model.etag == instance.etag)
        series = model(pk, series_sk(key.series))
        study = model(pk, STUDY)
        try:
            with TransactWrite(connection=self._connection) as transaction:
                transaction.delete(record, condition=condition)
                for saved, saved_condition in change:
                    transaction.save(saved, condition=saved_condition)
                transaction.update(
                    series, actions=[model.instance_count.add(-1)], condition=model.pk.exists()
                )
                transaction.update(
                    study, actions=[model.instance_count.add(-1)], condition=model.pk.exists()
                )
        except TransactWriteError as exc:
            codes = [reason.code if reason else None for reason in exc.cancellation_reasons]
            if "ConditionalCheckFailed" not in codes:
                raise _unavailable(key, exc) from exc
            if codes[0] == "ConditionalCheckFailed":
                return False
            # The series or study record is missing, so there is no count to keep.
            logger.warning("instance removed without aggregates", extra={"sop": key.sop})
            return self._delete_alone(record, condition, key, change)
        except (PynamoDBException, BotoCoreError) as exc:
            raise _unavailable(key, exc) from exc
        return True

    def release_claim(self, key: InstanceKey) -> None:
        """Delete the claim of ``key.sop`` if the claim belongs to ``key``."""
        model = self._model
        claim = model(claim_pk(key.site, key.sop), CLAIM)
        try:
            claim.delete(condition=model.object_key == key.object_key)
        except DeleteError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise _unavailable(key, exc) from exc
        except (PynamoDBException, BotoCoreError) as exc:
            raise _unavailable(key, exc) from exc

    def settle(self, site: str, study: str, series: Iterable[str]) -> None:
        """Delete the empty ones of ``series`` and ``study`` and recompute the others' sets."""
        try:
            for series_uid in sorted(set(series)):
                self._retry(functools.partial(self._settle_series, site, study, series_uid))
            self._retry(functools.partial(self._settle_study, site, study))
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(
                f"index update of study {study} after a delete failed: {exc}"
            ) from exc

    def _settle_series(self, site: str, study: str, series: str) -> bool:
        model = self._model
        pk = study_pk(site, study)
        record = self._get(pk, series_sk(series))
        if record is None:
            return True
        count = int(record.instance_count or 0)
        unchanged = model.instance_count == record.instance_count
        if count <= 0:
            return self._transact_or_conflict(
                deletes=[(record, unchanged)],
                updates=[(model(pk, STUDY), [model.series_count.add(-1)], model.pk.exists())],
            )
        prefix = f"{INSTANCE}#{series}#"
        modalities = self._modalities(pk, prefix, set(record.modalities or ()))
        actions = [
            _set_or_remove(model.sop_classes, self._sop_classes(pk, prefix)),
            _set_or_remove(model.modalities, modalities),
        ]
        return self._transact_or_conflict(updates=[(record, actions, unchanged)])

    def _settle_study(self, site: str, study: str) -> bool:
        model = self._model
        pk = study_pk(site, study)
        record = self._get(pk, STUDY)
        if record is None:
            return True
        unchanged = (model.instance_count == record.instance_count) & (
            model.series_count == record.series_count
        )
        markers = list(model.query(pk, model.sk.startswith(f"{MODALITY}#"), consistent_read=True))
        if int(record.series_count or 0) <= 0 and int(record.instance_count or 0) <= 0:
            deletes = [(record, unchanged), *((marker, None) for marker in markers)]
            return self._transact_or_conflict(deletes=deletes)
        modalities: set[str] = set()
        for series in model.query(pk, model.sk.startswith(f"{SERIES}#"), consistent_read=True):
            modalities |= set(series.modalities or ())
        # A by-modality marker goes with the last series of its modality.
        unused = [(m, None) for m in markers if m.sk.split("#", 1)[1] not in modalities]
        record.modalities = modalities or None
        record.sop_classes = self._sop_classes(pk, f"{INSTANCE}#") or None
        actions = [
            _set_or_remove(model.modalities, modalities),
            _set_or_remove(model.sop_classes, set(record.sop_classes or ())),
        ]
        # NOTE: from ``remove`` until this write, the markers still count the removed instances.
        markers_kept = [modality_marker(model, record, modality) for modality in sorted(modalities)]
        return self._transact_or_conflict(
            deletes=unused, updates=[(record, actions, unchanged)], saves=markers_kept
        )

    def _sop_classes(self, pk: str, prefix: str) -> set[str]:
        model = self._model
        classes = set()
        for record in model.query(pk, model.sk.startswith(prefix), consistent_read=True):
            value = (record.attrs or {}).get(_SOP_CLASS_UID, {}).get("Value")
            if value:
                classes.add(str(value[0]))
        return classes

    def _modalities(self, pk: str, prefix: str, series_modalities: set[str]) -> set[str]:
        """Return the modalities of the instance records under ``prefix``.

        An instance indexed without its own modality counts with ``series_modalities``.
        """
        model = self._model
        modalities: set[str] = set()
        for record in model.query(pk, model.sk.startswith(prefix), consistent_read=True):
            modalities |= set(record.modalities or series_modalities)
        return modalities

    def _transact_or_conflict(
        self,
        deletes: list[tuple[IndexRecord, Any]] = (),  # type: ignore[assignment]
        updates: list[tuple[IndexRecord, list[Any], Any]] = (),  # type: ignore[assignment]
        saves: list[IndexRecord] = (),  # type: ignore[assignment]
    ) -> bool:
        """Run one transaction; False if a condition failed because of a concurrent write."""
        try:
            with TransactWrite(connection=self._connection) as transaction:
                for record, condition in deletes:
                    transaction.delete(record, condition=condition)
                for saved in saves:
                    transaction.save(saved)
                for record, actions, condition in updates:
                    transaction.update(record, actions=actions, condition=condition)
        except TransactWriteError as exc:
            codes = [reason.code if reason else None for reason in exc.cancellation_reasons]
            if "ConditionalCheckFailed" in codes:
                return False
            raise
        return True

    def _retry(self, step: Callable[[], bool]) -> None:
        for _ in range(_ATTEMPTS):
            if step():
                return
        raise StoreUnavailableError(
            "index update after a delete kept conflicting with concurrent writes; retry the delete"
        )

    def _delete_alone(
        self, record: IndexRecord, condition: Any, key: InstanceKey, change: list[tuple[Any, Any]]
    ) -> bool:
        try:
            with TransactWrite(connection=self._connection) as transaction:
                transaction.delete(record, condition=condition)
                for saved, saved_condition in change:
                    transaction.save(saved, condition=saved_condition)
        except TransactWriteError as exc:
            codes = [reason.code if reason else None for reason in exc.cancellation_reasons]
            if "ConditionalCheckFailed" in codes:
                return False
            raise _unavailable(key, exc) from exc
        except (PynamoDBException, BotoCoreError) as exc:
            raise _unavailable(key, exc) from exc
        return True

    def _restore_claim(self, key: InstanceKey) -> None:
        if get_record(self._model, study_pk(key.site, key.study), _instance_sk(key)) is None:
            return
        try:
            InstanceClaims(self._model).claim(key)
        except ConflictError:
            logger.warning("claim not restored", extra={"object_key": key.object_key})

    def _get(self, pk: str, sk: str) -> IndexRecord | None:
        try:
            return get_record(self._model, pk, sk, consistent_read=True)
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(f"index read of {pk} {sk} failed: {exc}") from exc


def _instance_sk(key: InstanceKey) -> str:
    return instance_sk(key.series, key.sop)


def _set_or_remove(attribute: Any, values: set[str]) -> Any:
    # DynamoDB stores no empty sets, so an empty result removes the attribute.
    return attribute.set(values) if values else attribute.remove()


def _unavailable(key: InstanceKey, exc: Exception) -> StoreUnavailableError:
    return StoreUnavailableError(f"index delete of {key.object_key} failed: {type(exc).__name__}")
