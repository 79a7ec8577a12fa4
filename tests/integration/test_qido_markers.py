"""The ``by-modality`` markers stay copies of their study record through stores,
replacements and deletes, so a ModalitiesInStudy search returns exact values without reading
the study record. Instances are ingested into moto as in production.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import BasicTextSRStorage, MRImageStorage, generate_uid

from cirrus.archive import archive_instance
from cirrus.config import ResourceNames, Settings
from cirrus.errors import StoreUnavailableError
from cirrus.index.deletion import IndexDeleter
from cirrus.index.models import IndexRecord, study_pk
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.moto_process import MotoProcess
from cirrus.local.resources import create_resources
from cirrus.services import Services
from tests.pydicom_files import bundled

BASE = "http://127.0.0.1/dicomweb"
SITE = "default"


@pytest.fixture(scope="module")
def services(moto_server: MotoProcess) -> Services:
    settings = create_resources(
        Settings.for_names(
            ResourceNames(deployment="qido-markers"), endpoint_url=moto_server.endpoint_url
        )
    )
    return Services(settings)


def _store(services: Services, ds: Dataset) -> None:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    stored = archive_instance(services.store, SITE, buffer.getvalue())
    event = ObjectEvent(stored.key.object_key, etag=stored.stored.etag)
    ingest_object(services.store, services.index_writer, event)


def _instance(study: str, series: str, modality: str, patient_id: str) -> Dataset:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = patient_id, study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = modality
    return ds


def _records(services: Services, study: str) -> tuple[IndexRecord, dict[str, IndexRecord]]:
    model = services.index_model
    records = list(model.query(study_pk(SITE, study), consistent_read=True))
    [study_record] = [record for record in records if record.sk == "STUDY"]
    markers = {r.sk.split("#", 1)[1]: r for r in records if r.sk.startswith("MODALITY#")}
    return study_record, markers


def _copied(record: IndexRecord) -> dict[str, Any]:
    return {
        "attrs": record.attrs,
        "series_count": record.series_count,
        "instance_count": record.instance_count,
        "modalities": set(record.modalities or ()),
        "sop_classes": set(record.sop_classes or ()),
    }


def _assert_markers_in_step(services: Services, study: str, modalities: set[str]) -> None:
    study_record, markers = _records(services, study)
    assert set(markers) == modalities
    assert set(study_record.modalities or ()) == modalities
    for modality, marker in markers.items():
        assert _copied(marker) == _copied(study_record), modality


def _by_modality(services: Services, modality: str, patient_id: str) -> list[dict[str, Any]]:
    params = {"ModalitiesInStudy": [modality], "includefield": ["SOPClassesInStudy"]}
    result = services.qido.search(site=SITE, level="STUDY", params=params, base_url=BASE)
    return [m for m in result.matches if m["00100020"]["Value"] == [patient_id]]


def test_markers_follow_stores(services: Services) -> None:
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    for series, modality in ((ct, "CT"), (ct, "CT"), (mr, "MR"), (ct, "CT"), (mr, "MR")):
        _store(services, _instance(study, series, modality, "MARKERS-1"))

    _assert_markers_in_step(services, study, {"CT", "MR"})
    for modality in ("CT", "MR"):
        [match] = _by_modality(services, modality, "MARKERS-1")
        assert match["00201206"]["Value"] == [2]
        assert match["00201208"]["Value"] == [5]
        assert match["00080061"]["Value"] == ["CT", "MR"]
        assert match["00100020"]["Value"] == ["MARKERS-1"]


def test_markers_follow_concurrent_stores(services: Services) -> None:
    study = generate_uid()
    series = {modality: generate_uid() for modality in ("CT", "MR", "SR")}
    instances = [
        _instance(study, series[modality], modality, "MARKERS-5")
        for modality in ("CT", "MR", "SR", "CT", "MR", "SR", "CT", "MR", "SR", "CT", "CT", "CT")
    ]

    def store_until_indexed(ds: Dataset) -> int:
        # Redelivers after a conflict, as the ingest queue does.
        for attempt in range(10):
            try:
                _store(services, ds)
                return attempt
            except StoreUnavailableError:
                continue
        raise AssertionError(f"{ds.SOPInstanceUID} was not indexed after 10 deliveries")

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(store_until_indexed, instances))

    _assert_markers_in_step(services, study, {"CT", "MR", "SR"})
    for modality in ("CT", "MR", "SR"):
        [match] = _by_modality(services, modality, "MARKERS-5")
        assert match["00201206"]["Value"] == [3]
        assert match["00201208"]["Value"] == [12]


def test_replacement_recomputes_sets(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    first = _instance(study, series, "CT", "MARKERS-2")
    _store(services, first)
    report = _instance(study, generate_uid(), "SR", "MARKERS-2")
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    _store(services, report)
    replaced = copy.deepcopy(first)
    replaced.Modality = "MR"
    replaced.SOPClassUID = replaced.file_meta.MediaStorageSOPClassUID = MRImageStorage

    _store(services, replaced)

    _assert_markers_in_step(services, study, {"MR", "SR"})
    assert _by_modality(services, "CT", "MARKERS-2") == []
    [match] = _by_modality(services, "MR", "MARKERS-2")
    assert match["00080061"]["Value"] == ["MR", "SR"]
    assert match["00080062"]["Value"] == sorted([BasicTextSRStorage, MRImageStorage])
    assert match["00201206"]["Value"] == [2]
    assert match["00201208"]["Value"] == [2]
    model = services.index_model
    series_record = model.get(study_pk(SITE, study), f"SERIES#{series}", consistent_read=True)
    assert series_record.modalities == {"MR"}
    assert series_record.sop_classes == {MRImageStorage}


def test_replacement_with_same_sets_keeps_markers(services: Services) -> None:
    study = generate_uid()
    first = _instance(study, generate_uid(), "CT", "MARKERS-3")
    _store(services, first)
    replaced = copy.deepcopy(first)
    replaced.SeriesDescription = "second version"

    _store(services, replaced)

    _assert_markers_in_step(services, study, {"CT"})
    [match] = _by_modality(services, "CT", "MARKERS-3")
    assert match["00201208"]["Value"] == [1]


def test_delete_settles_markers(services: Services) -> None:
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    for series, modality in ((ct, "CT"), (ct, "CT"), (mr, "MR")):
        _store(services, _instance(study, series, modality, "MARKERS-4"))
    deleter = IndexDeleter(services.index_model, None)
    [first_ct, _] = deleter.find(SITE, study, ct)

    assert deleter.remove(first_ct)
    deleter.settle(SITE, study, [ct])

    _assert_markers_in_step(services, study, {"CT", "MR"})
    [match] = _by_modality(services, "MR", "MARKERS-4")
    assert match["00201208"]["Value"] == [2]

    for instance in deleter.find(SITE, study, mr):
        assert deleter.remove(instance)
    deleter.settle(SITE, study, [mr])

    _assert_markers_in_step(services, study, {"CT"})
    assert _by_modality(services, "MR", "MARKERS-4") == []
    [match] = _by_modality(services, "CT", "MARKERS-4")
    assert match["00201206"]["Value"] == [1]
    assert match["00201208"]["Value"] == [1]


def test_delete_after_mixed_replacement(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    first = _instance(study, series, "CT", "MARKERS-6")
    _store(services, first)
    _store(services, _instance(study, series, "CT", "MARKERS-6"))
    replaced = copy.deepcopy(first)
    replaced.Modality = "MR"
    _store(services, replaced)
    _assert_markers_in_step(services, study, {"CT", "MR"})
    deleter = IndexDeleter(services.index_model, None)
    [mr] = [i for i in deleter.find(SITE, study, series) if i.key.sop == first.SOPInstanceUID]

    assert deleter.remove(mr)
    deleter.settle(SITE, study, [series])

    _assert_markers_in_step(services, study, {"CT"})
    assert _by_modality(services, "MR", "MARKERS-6") == []
    model = services.index_model
    series_record = model.get(study_pk(SITE, study), f"SERIES#{series}", consistent_read=True)
    assert series_record.modalities == {"CT"}
