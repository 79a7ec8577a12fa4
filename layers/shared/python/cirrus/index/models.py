"""The DynamoDB index: one table holding study, series and instance records.

All records of one study share a partition, so a series list, an instance list or series
metadata is one Query on that partition::

    pk = "{site}#{study}"   sk = "STUDY" | "SERIES#{series}" | "INSTANCE#{series}#{sop}"

Two global secondary indexes serve searches that do not name the study:

- ``by-level``: ``level_pk = "{site}#{LEVEL}"``, ``level_sk`` sortable by study date, so a site's
  studies, series or instances can be listed and date ranges are key conditions;
- ``by-patient``: study records only, ``patient_pk = "{site}#{PatientID}"``.

The site leads every key, so a query for one site cannot read another's records.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from pynamodb.attributes import (
    BinaryAttribute,
    JSONAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from cirrus.config import Settings

STUDY: Final = "STUDY"
SERIES: Final = "SERIES"
INSTANCE: Final = "INSTANCE"


class LevelIndex(GlobalSecondaryIndex["IndexRecord"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "by-level"
        projection = AllProjection()

    level_pk = UnicodeAttribute(hash_key=True)
    level_sk = UnicodeAttribute(range_key=True)


class PatientIndex(GlobalSecondaryIndex["IndexRecord"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "by-patient"
        projection = AllProjection()

    patient_pk = UnicodeAttribute(hash_key=True)
    patient_sk = UnicodeAttribute(range_key=True)


class IndexRecord(Model):
    """A study, series or instance record.

    ``attrs`` is the DICOM JSON of the attributes a query at that level can match and return.
    Instance records also carry the whole instance metadata, zlib-compressed, unless it is too
    large for an item; then ``metadata_key`` names the object that contains it.
    """

    class Meta:
        table_name = "unbound"
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    level = UnicodeAttribute()
    site = UnicodeAttribute()
    level_pk = UnicodeAttribute()
    level_sk = UnicodeAttribute()
    patient_pk = UnicodeAttribute(null=True)
    patient_sk = UnicodeAttribute(null=True)
    attrs = JSONAttribute(default=dict)

    # Study and series aggregates, kept exact by transactional counters.
    series_count = NumberAttribute(null=True)
    instance_count = NumberAttribute(null=True)
    modalities = UnicodeSetAttribute(null=True)
    sop_classes = UnicodeSetAttribute(null=True)

    # Instance records only.
    object_key = UnicodeAttribute(null=True)
    size = NumberAttribute(null=True)
    etag = UnicodeAttribute(null=True)
    sequencer = UnicodeAttribute(null=True)
    transfer_syntax = UnicodeAttribute(null=True)
    pixel_offset = NumberAttribute(null=True)
    pixel_length = NumberAttribute(null=True)
    metadata = BinaryAttribute(null=True, legacy_encoding=False)
    metadata_key = UnicodeAttribute(null=True)

    by_level: ClassVar[LevelIndex] = LevelIndex()
    by_patient: ClassVar[PatientIndex] = PatientIndex()


def bind_index_model(settings: Settings) -> type[IndexRecord]:
    """Return an ``IndexRecord`` model bound to the table and endpoint of ``settings``."""
    meta_attrs: dict[str, Any] = {
        "table_name": settings.table,
        "region": settings.region,
        "billing_mode": "PAY_PER_REQUEST",
        "connect_timeout_seconds": 5,
        "read_timeout_seconds": 10,
        "max_retry_attempts": 5,
    }
    if settings.endpoint_url:
        meta_attrs["host"] = settings.endpoint_url
    meta = type("Meta", (), meta_attrs)
    # Fresh index objects, because pynamodb binds each index object to one model class.
    namespace = {"Meta": meta, "by_level": LevelIndex(), "by_patient": PatientIndex()}
    bound: type[IndexRecord] = type("BoundIndexRecord", (IndexRecord,), namespace)
    return bound


def study_pk(site: str, study: str) -> str:
    return f"{site}#{study}"


def series_sk(series: str) -> str:
    return f"{SERIES}#{series}"


def instance_sk(series: str, sop: str) -> str:
    return f"{INSTANCE}#{series}#{sop}"


def level_pk(site: str, level: str) -> str:
    return f"{site}#{level}"


def get_record(
    model: type[IndexRecord], pk: str, sk: str, *, consistent_read: bool = False
) -> IndexRecord | None:
    """Return the record with these keys, or None."""
    try:
        return model.get(pk, sk, consistent_read=consistent_read)
    except model.DoesNotExist:
        return None
