"""The counts of a study, its series and its modality markers, checked and repaired.

The instance records of a study partition are the truth for its counts: a series counts its
instance records, the study counts its instance records and the series that have any, and
each ``by-modality`` marker copies the study's counts. ``count_drift`` names the counts that
differ (``cirrus verify``), and ``CountRepair`` writes the recomputed ones (``cirrus
reindex``).

A repair reads the study record with a consistent GetItem before it queries the partition,
and its writes are conditional on the study's counts still being the ones read. Every store
and delete changes the study record's counts in the transaction that adds or removes an
instance record (``cirrus.index.writer``, ``cirrus.index.deletion``). So a store that
commits between the read and the write fails the condition, and the repair reads again
instead of overwriting the store's count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Final

from botocore.exceptions import BotoCoreError
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.transactions import TransactWrite

from cirrus.errors import StoreUnavailableError
from cirrus.index.models import (
    INSTANCE,
    MODALITY,
    SERIES,
    STUDY,
    IndexRecord,
    get_record,
    modality_marker,
    transaction_connection,
)

logger = logging.getLogger(__name__)

# The attributes of a study partition's records that the counts need.
PARTITION_ATTRIBUTES: Final = ["pk", "sk", "site", "level", "instance_count", "series_count"]
# Repairs that lose to a concurrent store are tried again this many times.
_ATTEMPTS: Final = 5
# DynamoDB's limit of items in one transaction.
_TRANSACTION_ITEMS: Final = 100


@dataclass(frozen=True)
class StudyCounts:
    """The counts that the instance records of one study partition give."""

    instances_by_series: dict[str, int] = field(default_factory=dict)

    @property
    def instance_count(self) -> int:
        return sum(self.instances_by_series.values())

    @property
    def series_count(self) -> int:
        return len(self.instances_by_series)

    def of_series(self, series_record: IndexRecord) -> int:
        return self.instances_by_series.get(series_uid(series_record), 0)


def series_uid(record: IndexRecord) -> str:
    """Return the Series Instance UID of a series record (sort key ``SERIES#{uid}``)."""
    return record.sk.split("#", 1)[1]


def read_partition(model: type[IndexRecord], pk: str) -> list[IndexRecord]:
    """Return the count attributes of every record of the study partition ``pk``."""
    try:
        return list(model.query(pk, consistent_read=True, attributes_to_get=PARTITION_ATTRIBUTES))
    except (PynamoDBException, BotoCoreError) as exc:
        raise StoreUnavailableError(f"index query of {pk} failed: {exc}") from exc


def count_instances(records: list[IndexRecord]) -> StudyCounts:
    """Count the instance records of a partition by series (sort key ``INSTANCE#{series}#…``)."""
    by_series: dict[str, int] = {}
    for record in records:
        if record.level == INSTANCE:
            series = record.sk.split("#", 2)[1]
            by_series[series] = by_series.get(series, 0) + 1
    return StudyCounts(by_series)


def count_drift(study: IndexRecord, records: list[IndexRecord]) -> list[str]:
    """Describe each count of ``study``, its series and its markers that ``records`` contradict.

    A marker is compared with the study record's stored count, so a study whose count is
    wrong is named once and not again for each of its markers.
    """
    counts = count_instances(records)
    wrong = []
    if study.instance_count != counts.instance_count:
        wrong.append(
            f"study instance_count {_text(study.instance_count)} but "
            f"{counts.instance_count} records"
        )
    if study.series_count != counts.series_count:
        wrong.append(f"series_count {_text(study.series_count)} but {counts.series_count} series")
    for record in records:
        if record.level == SERIES and record.instance_count != counts.of_series(record):
            wrong.append(
                f"series {series_uid(record)} instance_count {_text(record.instance_count)} "
                f"but {counts.of_series(record)} records"
            )
        elif record.level == MODALITY and record.instance_count != study.instance_count:
            wrong.append(
                f"{record.sk} instance_count {_text(record.instance_count)} but study "
                f"{_text(study.instance_count)}"
            )
    return wrong


class CountRepair:
    """Writes the counts that a study's instance records give, where the index differs."""

    def __init__(self, model: type[IndexRecord]) -> None:
        self._model = model
        self._connection = transaction_connection(model)

    def repair(self, pk: str) -> int:
        """Repair the counts of the study partition ``pk``; return the records written.

        Raises ``StoreUnavailableError`` when DynamoDB fails, or when concurrent stores
        change the study on every attempt.
        """
        try:
            for _ in range(_ATTEMPTS):
                written = self._try_repair(pk)
                if written is not None:
                    return written
        except (PynamoDBException, BotoCoreError) as exc:
            raise StoreUnavailableError(f"count repair of {pk} failed: {exc}") from exc
        raise StoreUnavailableError(
            f"count repair of {pk} kept conflicting with concurrent writes; run reindex again"
        )

    def _try_repair(self, pk: str) -> int | None:
        """Write the recomputed counts once; None if a concurrent write changed the study."""
        model = self._model
        # The study record is read before the partition, so a store that the query misses
        # changes the counts that the writes below are conditional on.
        study = get_record(model, pk, STUDY, consistent_read=True)
        if study is None:
            # TODO: a partition without its study record keeps its counts; verify skips it too.
            return 0
        records = read_partition(model, pk)
        counts = count_instances(records)
        unchanged = _equals(model.instance_count, study.instance_count) & _equals(
            model.series_count, study.series_count
        )
        if counts.instance_count == 0:
            # No instance is left, so the study goes with its series and markers, as a delete
            # of its last instance removes them.
            deletes = [record for record in records if record.level in (SERIES, MODALITY)]
            return self._write(study, unchanged, deletes=deletes, delete_study=True)

        updates: list[tuple[IndexRecord, list[Any], Any]] = []
        deletes = []
        for record in records:
            if record.level != SERIES or record.instance_count == counts.of_series(record):
                continue
            if counts.of_series(record) == 0:
                deletes.append(record)  # a series without instance records
            else:
                actions = [model.instance_count.set(counts.of_series(record))]
                condition = _equals(model.instance_count, record.instance_count)
                updates.append((record, actions, condition))
        study_wrong = (
            study.instance_count != counts.instance_count
            or study.series_count != counts.series_count
        )
        study.instance_count = counts.instance_count
        study.series_count = counts.series_count
        markers = {
            record.sk.split("#", 1)[1]: record for record in records if record.level == MODALITY
        }
        saves = []
        for modality in sorted(study.modalities or ()):
            marker = markers.get(modality)
            if (
                marker is None
                or marker.instance_count != study.instance_count
                or marker.series_count != study.series_count
            ):
                saves.append(modality_marker(model, study, modality))
        if study_wrong:
            actions = [
                model.instance_count.set(counts.instance_count),
                model.series_count.set(counts.series_count),
            ]
            updates.append((model(pk, STUDY), actions, unchanged))
        return self._write(study, unchanged, updates=updates, deletes=deletes, saves=saves)

    def _write(
        self,
        study: IndexRecord,
        unchanged: Any,
        updates: list[tuple[IndexRecord, list[Any], Any]] | None = None,
        deletes: list[IndexRecord] | None = None,
        saves: list[IndexRecord] | None = None,
        delete_study: bool = False,
    ) -> int | None:
        """Write in transactions that each check the study's counts; None on a conflict."""
        model = self._model
        writes: list[tuple[str, Any]] = [
            *(("delete", record) for record in deletes or ()),
            *(("save", record) for record in saves or ()),
            *(("update", update) for update in updates or ()),
        ]
        if delete_study:
            writes.append(("delete study", study))
        if not writes:
            return 0
        # Each transaction checks the study's counts, so one with more writes than fit is
        # split, and every part is conditional on the counts read.
        size = _TRANSACTION_ITEMS - 1
        try:
            for start in range(0, len(writes), size):
                part = writes[start : start + size]
                # DynamoDB allows one action per item in a transaction, so a part that writes
                # the study record makes its condition there instead of in a separate check.
                writes_study = any(
                    kind == "delete study" or (kind == "update" and item[0].sk == STUDY)
                    for kind, item in part
                )
                with TransactWrite(connection=self._connection) as transaction:
                    if not writes_study:
                        transaction.condition_check(model, study.pk, STUDY, condition=unchanged)
                    for kind, item in part:
                        if kind == "update":
                            record, actions, condition = item
                            transaction.update(record, actions=actions, condition=condition)
                        elif kind == "delete study":
                            transaction.delete(model(study.pk, STUDY), condition=unchanged)
                        elif kind == "delete":
                            transaction.delete(item, condition=None)
                        else:
                            transaction.save(item)
        except TransactWriteError as exc:
            codes = [reason.code if reason else None for reason in exc.cancellation_reasons]
            if "ConditionalCheckFailed" in codes:
                return None
            raise
        logger.info("counts repaired", extra={"study_pk": study.pk, "records": len(writes)})
        return len(writes)


def _equals(attribute: Any, value: Any) -> Any:
    """Return the condition that ``attribute`` still has ``value``, absent when None."""
    return attribute.does_not_exist() if value is None else attribute == value


def _text(value: object) -> str:
    return "missing" if value is None else str(int(value))  # type: ignore[call-overload]
