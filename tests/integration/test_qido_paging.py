"""QIDO-RS searches over studies spread across every index partition, ingested as in production.

Hypothesis picks the matching keys, the level and the page size. Each search must return the
studies that a direct reading of the generated data expects, and its ``offset`` pages must
partition that result exactly. No request may be a Scan.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cirrus.archive import archive_instance
from cirrus.config import ResourceNames, Settings
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.moto_process import MotoProcess
from cirrus.local.resources import create_resources
from cirrus.query import qido
from cirrus.services import Services
from tests.pydicom_files import bundled

BASE = "http://127.0.0.1/dicomweb"
DATES = ["20240101", "20240102", "20240103", "20240105", "20240110"]
NAMES = ["SMITH^ANNA", "Smith^Bob", "SMYTHE^CARL", "DOE^JANE", "doe^john", "ROE^RICHARD"]
MODALITIES = ["CT", "MR", "US", "SR"]


@dataclass(frozen=True)
class Study:
    uid: str
    patient_id: str
    name: str
    date: str
    modalities: tuple[str, ...]


@dataclass
class Requests:
    """The DynamoDB operations the searches sent, by name, and the indexes they used."""

    operations: dict[str, int]
    indexes: dict[str, int]

    def __call__(self, **event: Any) -> None:
        name = event["model"].name
        self.operations[name] = self.operations.get(name, 0) + 1
        index = event["params"].get("IndexName")
        if index:
            self.indexes[index] = self.indexes.get(index, 0) + 1


@dataclass
class Archive:
    services: Services
    studies: list[Study]
    requests: Requests


@pytest.fixture(scope="module")
def archive(moto_server: MotoProcess) -> Archive:
    names = ResourceNames(deployment=f"paging{uuid.uuid4().hex[:8]}")
    services = Services(
        create_resources(Settings.for_names(names, endpoint_url=moto_server.endpoint_url))
    )
    template = pydicom.dcmread(bundled("CT_small.dcm"))
    studies = []
    for number in range(40):
        modalities = tuple(
            dict.fromkeys([MODALITIES[number % 4], MODALITIES[(number * 7) % 3]][: 1 + number % 2])
        )
        study = Study(
            uid=pydicom.uid.generate_uid(),
            patient_id=f"P{number % 9}",
            name=NAMES[number % len(NAMES)],
            date=DATES[(number * 3) % len(DATES)],
            modalities=modalities,
        )
        studies.append(study)
        for modality in study.modalities:
            ds = copy.deepcopy(template)
            ds.PatientID, ds.PatientName, ds.StudyDate = study.patient_id, study.name, study.date
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study.uid, pydicom.uid.generate_uid()
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.Modality, ds.AccessionNumber = modality, f"A{number}"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            buffer = BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            stored = archive_instance(services.store, "default", buffer.getvalue())
            event = ObjectEvent(stored.key.object_key, etag=stored.stored.etag)
            ingest_object(services.store, services.index_writer, event)
    requests = Requests({}, {})
    client = services.qido._model._get_connection().connection.client
    client.meta.events.register("before-parameter-build.dynamodb.*", requests)
    return Archive(services, studies, requests)


def _expected(studies: list[Study], keys: dict[str, str]) -> list[str]:
    """Return the UIDs of the studies the keys match, read from the generated data."""
    found = []
    for study in studies:
        if "PatientID" in keys and study.patient_id != keys["PatientID"]:
            continue
        if "StudyDate" in keys:
            low, _, high = keys["StudyDate"].partition("-")
            high = high if "-" in keys["StudyDate"] else low
            if (low and study.date < low) or (high and study.date > high):
                continue
        if "ModalitiesInStudy" in keys:
            wanted = set(keys["ModalitiesInStudy"].split(","))
            if not wanted & set(study.modalities):
                continue
        if "PatientName" in keys:
            prefix = keys["PatientName"].rstrip("*").upper()
            if not study.name.upper().startswith(prefix):
                continue
        found.append(study.uid)
    return sorted(found)


_keys = st.fixed_dictionaries(
    {},
    optional={
        "PatientID": st.sampled_from([f"P{n}" for n in range(10)]),
        "StudyDate": st.sampled_from(
            ["20240102", "20240101-20240103", "20240104-", "-20240102", "20240103-20240110"]
        ),
        "ModalitiesInStudy": st.sampled_from(["CT", "MR", "US,SR", "CT,MR", "XA"]),
        "PatientName": st.sampled_from(["SMITH*", "smi*", "SM*", "DOE*", "doe^j*", "ROE*"]),
    },
)


def _search(archive: Archive, level: str, keys: dict[str, str], **paging: int) -> Any:
    params = {name: [value] for name, value in keys.items()}
    params.update({name: [str(value)] for name, value in paging.items()})
    return archive.services.qido.search(site="default", level=level, params=params, base_url=BASE)


def _study_uids(result: Any) -> list[str]:
    return [match["0020000D"]["Value"][0] for match in result.matches]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=_keys, limit=st.integers(min_value=1, max_value=7))
def test_pages_partition_study_result(archive: Archive, keys: dict[str, str], limit: int) -> None:
    everything = _search(archive, "STUDY", keys)
    uids = _study_uids(everything)
    assert sorted(uids) == _expected(archive.studies, keys)
    assert len(set(uids)) == len(uids)
    pages: list[str] = []
    offset = 0
    while True:
        page = _search(archive, "STUDY", keys, limit=limit, offset=offset)
        pages.extend(_study_uids(page))
        cut = any("is cut to the first" in warning for warning in page.warnings)
        assert cut == (offset + limit < len(uids))
        if not cut:
            break
        offset += limit
    assert pages == uids


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=_keys, limit=st.integers(min_value=1, max_value=5))
def test_pages_partition_series_result(archive: Archive, keys: dict[str, str], limit: int) -> None:
    everything = _search(archive, "SERIES", keys)
    series = [match["0020000E"]["Value"][0] for match in everything.matches]
    assert sorted(set(_study_uids(everything))) == _expected(archive.studies, keys)
    pages: list[str] = []
    for offset in range(0, len(series) + limit, limit):
        page = _search(archive, "SERIES", keys, limit=limit, offset=offset)
        pages.extend(match["0020000E"]["Value"][0] for match in page.matches)
    assert pages == series


def test_searches_never_scan(archive: Archive) -> None:
    for keys in [
        {},
        {"PatientID": "P3"},
        {"StudyDate": "20240101-20240103"},
        {"ModalitiesInStudy": "CT"},
        {"PatientName": "smi*"},
        {"StudyDescription": "none"},
    ]:
        for level in ("STUDY", "SERIES", "INSTANCE"):
            _search(archive, level, keys)
    assert archive.requests.operations.get("Scan", 0) == 0
    assert archive.requests.operations.get("Query", 0) > 0


@pytest.mark.parametrize(
    ("keys", "index"),
    [
        ({"PatientID": "P3"}, "by-patient"),
        ({"StudyDate": "20240102"}, "by-level"),
        ({"ModalitiesInStudy": "MR", "StudyDate": "20240101-"}, "by-modality"),
        ({"PatientName": "SMITH*"}, "by-name"),
    ],
)
def test_search_uses_index(archive: Archive, keys: dict[str, str], index: str) -> None:
    archive.requests.indexes.clear()
    result = _search(archive, "STUDY", keys)
    assert result.matches
    assert set(archive.requests.indexes) == {index}


def test_accession_number_index(archive: Archive) -> None:
    archive.requests.indexes.clear()
    [found] = _search(archive, "STUDY", {"AccessionNumber": "A7"}).matches
    assert found["0020000D"]["Value"] == [archive.studies[7].uid]
    assert set(archive.requests.indexes) == {"by-accession"}


def test_unindexed_search_capped(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qido, "UNINDEXED_READ_LIMIT", 5)
    archive.requests.operations.clear()
    result = _search(archive, "STUDY", {"StudyDescription": "no such description"})
    assert result.matches == []
    [warning] = result.warnings
    assert "read only the first 5 study records" in warning
    assert "add PatientID" in warning
    assert archive.requests.operations.get("Scan", 0) == 0


def test_unindexed_search_complete_without_warning(archive: Archive) -> None:
    result = _search(archive, "STUDY", {"StudyDescription": "no such description"})
    assert result.matches == []
    assert result.warnings == []


def test_unknown_parameter_ignored(archive: Archive) -> None:
    result = _search(archive, "STUDY", {"PatientID": "P3", "_": "1733300000"})
    assert sorted(_study_uids(result)) == _expected(archive.studies, {"PatientID": "P3"})
    assert any("'_' was ignored" in warning for warning in result.warnings)
