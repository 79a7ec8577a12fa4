"""Reads the index for WADO-RS and the gateway's retrieves: instance lookups and lists, a
patient's studies, and stored metadata."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cirrus.errors import NotFoundError
from cirrus.index.models import INSTANCE, IndexRecord, get_record, instance_sk, study_pk
from cirrus.storage.objects import ObjectStore

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class InstanceRef:
    """The storage location of an indexed instance and what a retrieve needs of it."""

    site: str
    study: str
    series: str
    sop: str
    sop_class_uid: str
    object_key: str
    transfer_syntax: str
    size: int
    pixel_offset: int | None
    pixel_length: int | None


class IndexReader:
    def __init__(self, model: type[IndexRecord], store: ObjectStore) -> None:
        self._model = model
        self._store = store

    def instance(self, site: str, study: str, series: str, sop: str) -> InstanceRef:
        """Return one instance, or raise ``NotFoundError``."""
        record = get_record(self._model, study_pk(site, study), instance_sk(series, sop))
        if record is None:
            raise NotFoundError(f"instance {sop} not found in series {series} of study {study}")
        return _to_ref(record)

    def instances(self, site: str, study: str, series: str | None = None) -> list[InstanceRef]:
        """Return the instances of a study or series in key order, or raise ``NotFoundError``."""
        refs = [_to_ref(record) for record in self._instance_records(site, study, series)]
        if not refs:
            scope = f"series {series} of study {study}" if series else f"study {study}"
            raise NotFoundError(f"{scope} not found")
        return refs

    def contains(
        self, site: str, study: str, series: str | None = None, sop: str | None = None
    ) -> bool:
        """Tell whether a study, series or instance has an indexed instance, with one read."""
        if sop is not None:
            if series is None:
                raise ValueError("an instance is looked up with its series")
            pk, sk = study_pk(site, study), instance_sk(series, sop)
            return get_record(self._model, pk, sk) is not None
        records = self._model.query(
            study_pk(site, study), self._model.sk.startswith(_instance_prefix(series)), limit=1
        )
        return next(iter(records), None) is not None

    def patient_studies(self, site: str, patient_id: str) -> list[str]:
        """Return the Study Instance UIDs of a patient's studies, from the ``by-patient`` index.

        The index is eventually consistent, so a study indexed a moment ago may be missing.
        """
        records = self._model.by_patient.query(f"{site}#{patient_id}")
        return [record.pk.split("#", 1)[1] for record in records]

    def metadata(self, site: str, study: str, series: str | None = None) -> list[JsonDict]:
        """Return the stored DICOM JSON of every instance of a study or series.

        Bulk data references are relative (``bulkdata/...``); ``NotFoundError`` when empty.
        """
        result = [
            self.metadata_of(record) for record in self._instance_records(site, study, series)
        ]
        if not result:
            scope = f"series {series} of study {study}" if series else f"study {study}"
            raise NotFoundError(f"{scope} not found")
        return result

    def instance_metadata(self, site: str, study: str, series: str, sop: str) -> JsonDict:
        record = get_record(self._model, study_pk(site, study), instance_sk(series, sop))
        if record is None:
            raise NotFoundError(f"instance {sop} not found in series {series} of study {study}")
        return self.metadata_of(record)

    def _instance_records(self, site: str, study: str, series: str | None) -> Iterator[IndexRecord]:
        prefix = _instance_prefix(series)
        return self._model.query(study_pk(site, study), self._model.sk.startswith(prefix))

    def metadata_of(self, record: IndexRecord) -> JsonDict:
        """Return the whole metadata of an instance record, inline or from its object."""
        if record.metadata is not None:
            return json.loads(zlib.decompress(record.metadata))  # type: ignore[no-any-return]
        if record.metadata_key is None:
            raise NotFoundError(f"instance {record.sk} has no stored metadata")
        stored = zlib.decompress(self._store.get(record.metadata_key))
        return json.loads(stored)


def _instance_prefix(series: str | None) -> str:
    """Return the sort key prefix of the instance records of a series, or of a whole study."""
    return f"{INSTANCE}#{series}#" if series else f"{INSTANCE}#"


def _to_ref(record: IndexRecord) -> InstanceRef:
    _, series, sop = record.sk.split("#", 2)
    study = record.pk.split("#", 1)[1]
    return InstanceRef(
        site=record.site,
        study=study,
        series=series,
        sop=sop,
        sop_class_uid=str(record.attrs.get("00080016", {}).get("Value", [""])[0]),
        object_key=record.object_key or "",
        transfer_syntax=record.transfer_syntax or "",
        size=int(record.size or 0),
        pixel_offset=None if record.pixel_offset is None else int(record.pixel_offset),
        pixel_length=None if record.pixel_length is None else int(record.pixel_length),
    )
