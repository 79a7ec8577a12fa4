"""The DynamoDB index: one table holding study, series and instance records.

All records of one study share a partition, so a series list, an instance list or series
metadata is one Query on that partition::

    pk = "{site}#{study}"   sk = "STUDY" | "SERIES#{series}" | "INSTANCE#{series}#{sop}"
                                 | "MODALITY#{modality}"

Global secondary indexes serve the searches that do not name the study. Each is sparse (a
record without the key attributes is not in it) and projects every attribute, so a search
reads one item per candidate:

- ``by-level``: every study, series and instance, ``level_pk = "{site}#{LEVEL}#{shard}"`` with
  ``LEVEL_SHARDS`` shards chosen by a hash of the study UID, so the writes of a busy site spread
  over several partitions. Study sort keys are ``"{StudyDate}#{study}"``, so a date or date range
  is a key condition on each shard; series and instance sort keys start with the study UID.
- ``by-patient``: study records, ``"{site}#{PatientID}"``, sorted by ``"{StudyDate}#{study}"``.
- ``by-accession``: study records, ``"{site}#{AccessionNumber}"``, sorted the same way.
- ``by-name``: study records, ``"{site}#{first two characters}"`` of the normalized alphabetic
  group of PatientName, sorted by ``"{normalized name}#{study}"``, so a name prefix of two or
  more characters is a ``begins_with`` condition on one partition.
- ``by-modality``: one marker item per study and modality (``sk = "MODALITY#{modality}"``),
  ``"{site}#{modality}"`` sorted by ``"{StudyDate}#{study}"``, so "CT studies of a date range"
  is one key condition. A marker is written with the first series of its modality and carries
  a copy of the study's attributes, counts and sets, which every write of the study record
  updates in the same transaction (``cirrus.index.writer``).

Only the study-level indexes take a write per stored instance (the study counters change
with each one); ``by-patient``, ``by-accession`` and ``by-name`` partitions belong to one
patient, one order or a two-letter name bucket, and the ``by-level`` shards split the rest.
The site leads every key, so a query for one site cannot read another's records.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Final

from pynamodb.attributes import (
    BinaryAttribute,
    JSONAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.connection import Connection
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from cirrus.config import Settings

STUDY: Final = "STUDY"
SERIES: Final = "SERIES"
INSTANCE: Final = "INSTANCE"
MODALITY: Final = "MODALITY"

# The number of ``by-level`` partitions per site and level. Changing it changes every
# ``level_pk``, so the index must then be rebuilt from the archive.
LEVEL_SHARDS: Final = 16
# The number of leading characters of a normalized name that form its ``by-name`` partition.
NAME_BUCKET_LENGTH: Final = 2

# (index name, partition key attribute, sort key attribute), shared with the CDK stack.
GLOBAL_SECONDARY_INDEXES: Final = (
    ("by-level", "level_pk", "level_sk"),
    ("by-patient", "patient_pk", "patient_sk"),
    ("by-accession", "accession_pk", "accession_sk"),
    ("by-name", "name_pk", "name_sk"),
    ("by-modality", "modality_pk", "modality_sk"),
)


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


class AccessionIndex(GlobalSecondaryIndex["IndexRecord"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "by-accession"
        projection = AllProjection()

    accession_pk = UnicodeAttribute(hash_key=True)
    accession_sk = UnicodeAttribute(range_key=True)


class NameIndex(GlobalSecondaryIndex["IndexRecord"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "by-name"
        projection = AllProjection()

    name_pk = UnicodeAttribute(hash_key=True)
    name_sk = UnicodeAttribute(range_key=True)


class ModalityIndex(GlobalSecondaryIndex["IndexRecord"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "by-modality"
        projection = AllProjection()

    modality_pk = UnicodeAttribute(hash_key=True)
    modality_sk = UnicodeAttribute(range_key=True)


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
    level_pk = UnicodeAttribute(null=True)
    level_sk = UnicodeAttribute(null=True)
    patient_pk = UnicodeAttribute(null=True)
    patient_sk = UnicodeAttribute(null=True)
    accession_pk = UnicodeAttribute(null=True)
    accession_sk = UnicodeAttribute(null=True)
    name_pk = UnicodeAttribute(null=True)
    name_sk = UnicodeAttribute(null=True)
    modality_pk = UnicodeAttribute(null=True)
    modality_sk = UnicodeAttribute(null=True)
    attrs = JSONAttribute(default=dict)

    # Study and series aggregates, kept exact by transactional counters.
    series_count = NumberAttribute(null=True)
    instance_count = NumberAttribute(null=True)
    modalities = UnicodeSetAttribute(null=True)
    sop_classes = UnicodeSetAttribute(null=True)
    # A fresh token whenever one of its instances is stored or replaced, so a precomputed
    # metadata bundle can tell that it is stale (``cirrus.dicomweb.bundles``).
    metadata_version = UnicodeAttribute(null=True)

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
    by_accession: ClassVar[AccessionIndex] = AccessionIndex()
    by_name: ClassVar[NameIndex] = NameIndex()
    by_modality: ClassVar[ModalityIndex] = ModalityIndex()


def bind_index_model(settings: Settings) -> type[IndexRecord]:
    """Return an ``IndexRecord`` model bound to the table and endpoint of ``settings``."""
    meta_attrs: dict[str, Any] = {
        "table_name": settings.table,
        "region": settings.region,
        "billing_mode": "PAY_PER_REQUEST",
        "connect_timeout_seconds": 5,
        "read_timeout_seconds": 10,
        "max_retry_attempts": 5,
        # A merged search reads the first page of its 16 ``by-level`` shards in parallel.
        "max_pool_connections": 20,
    }
    if settings.json_endpoint:
        meta_attrs["host"] = settings.json_endpoint
    meta = type("Meta", (), meta_attrs)
    # Fresh index objects, because pynamodb binds each index object to one model class.
    namespace = {
        "Meta": meta,
        "by_level": LevelIndex(),
        "by_patient": PatientIndex(),
        "by_accession": AccessionIndex(),
        "by_name": NameIndex(),
        "by_modality": ModalityIndex(),
    }
    bound: type[IndexRecord] = type("BoundIndexRecord", (IndexRecord,), namespace)
    return bound


def study_pk(site: str, study: str) -> str:
    return f"{site}#{study}"


def series_sk(series: str) -> str:
    return f"{SERIES}#{series}"


def instance_sk(series: str, sop: str) -> str:
    return f"{INSTANCE}#{series}#{sop}"


def modality_sk(modality: str) -> str:
    return f"{MODALITY}#{modality}"


def level_shard(study: str) -> int:
    """Return the ``by-level`` shard of a study's records, stable across processes."""
    digest = hashlib.blake2b(study.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % LEVEL_SHARDS


def level_pk(site: str, level: str, shard: int) -> str:
    return f"{site}#{level}#{shard:02d}"


def level_pks(site: str, level: str) -> list[str]:
    """Return the ``by-level`` partition keys of every shard of one site and level."""
    return [level_pk(site, level, shard) for shard in range(LEVEL_SHARDS)]


def date_sort_key(study_date: str, study: str) -> str:
    """Return the sort key that orders a study's index entries by date, then by UID."""
    return f"{study_date}#{study}"


def normalize_name(name: str) -> str:
    """Return the form of a person name that ``by-name`` keys use: upper case.

    Matching is case-insensitive (``cirrus.query.matching``), so a query prefix normalized the
    same way is a prefix of every name it can match.
    """
    return name.upper()


def name_keys(site: str, name: str, study: str) -> tuple[str, str] | None:
    """Return the ``by-name`` keys of a study whose alphabetic PatientName is ``name``."""
    normalized = normalize_name(name)
    if not normalized:
        return None
    return f"{site}#{normalized[:NAME_BUCKET_LENGTH]}", f"{normalized}#{study}"


def study_index_keys(site: str, study: str, attrs: dict[str, Any]) -> dict[str, str]:
    """Return the secondary index keys of a study record from its DICOM JSON attributes."""
    study_date = _first_text(attrs, "00080020")
    sort_key = date_sort_key(study_date, study)
    keys = {
        "level_pk": level_pk(site, STUDY, level_shard(study)),
        "level_sk": sort_key,
        "patient_pk": f"{site}#{_first_text(attrs, '00100020')}",
        "patient_sk": sort_key,
    }
    accession = _first_text(attrs, "00080050")
    if accession:
        keys["accession_pk"] = f"{site}#{accession}"
        keys["accession_sk"] = sort_key
    names = attrs.get("00100010", {}).get("Value") or [{}]
    alphabetic = names[0].get("Alphabetic", "") if isinstance(names[0], dict) else ""
    name = name_keys(site, str(alphabetic), study)
    if name is not None:
        keys["name_pk"], keys["name_sk"] = name
    return keys


def modality_marker(model: type[IndexRecord], study: IndexRecord, modality: str) -> IndexRecord:
    """Return the ``by-modality`` marker that lists ``study`` under one of its modalities.

    The marker carries a copy of what a study search matches and returns (``attrs``, the
    counts and the sets), so a search through ``by-modality`` reads no study record.
    """
    site = str(study.site)
    uid = study.pk[len(site) + 1 :]
    study_date = _first_text(study.attrs or {}, "00080020")
    return model(
        study.pk,
        modality_sk(modality),
        level=MODALITY,
        site=site,
        modality_pk=f"{site}#{modality}",
        modality_sk=date_sort_key(study_date, uid),
        attrs=dict(study.attrs or {}),
        series_count=study.series_count,
        instance_count=study.instance_count,
        modalities=set(study.modalities or ()) or None,
        sop_classes=set(study.sop_classes or ()) or None,
    )


def _first_text(attrs: dict[str, Any], tag: str) -> str:
    values = attrs.get(tag, {}).get("Value")
    return str(values[0]) if values and values[0] is not None else ""


def transaction_connection(model: type[IndexRecord]) -> Connection:
    """Return a connection for ``TransactWrite`` to the region and endpoint of ``model``."""
    meta = model.Meta
    return Connection(region=getattr(meta, "region", None), host=getattr(meta, "host", None))


def get_record(
    model: type[IndexRecord], pk: str, sk: str, *, consistent_read: bool = False
) -> IndexRecord | None:
    """Return the record with these keys, or None."""
    try:
        return model.get(pk, sk, consistent_read=consistent_read)
    except model.DoesNotExist:
        return None
