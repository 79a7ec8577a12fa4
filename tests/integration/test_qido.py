"""QIDO-RS searches on the DynamoDB index in moto, with instances ingested as in production."""

from __future__ import annotations

import copy
from io import BytesIO
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from cirrus.archive import archive_instance
from cirrus.config import ResourceNames, Settings
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.moto_process import MotoProcess
from cirrus.local.resources import create_resources
from cirrus.query import qido
from cirrus.query.qido import QidoResult
from cirrus.services import Services
from tests.pydicom_files import bundled

BASE = "http://127.0.0.1/dicomweb"
Archive = tuple[Services, dict[str, str]]

# (patient id, patient name, study date, modality per series, instances per series)
STUDIES = [
    ("P1", "Doe^Jane", "20240105", ["CT", "SR"], 2),
    ("P1", "Doe^Jane", "20240320", ["MR"], 3),
    ("P2", "Roe^Richard", "20231231", ["CT"], 1),
    ("P3", "doe^john", "20240601", ["CT", "CT"], 1),
]


@pytest.fixture(scope="module")
def archive(moto_server: MotoProcess) -> Archive:
    settings = create_resources(
        Settings.for_names(
            ResourceNames(deployment="qido-test"), endpoint_url=moto_server.endpoint_url
        )
    )
    services = Services(settings)
    template = pydicom.dcmread(bundled("CT_small.dcm"))
    studies: dict[str, str] = {}
    for patient_id, name, date, modalities, count in STUDIES:
        study = generate_uid()
        studies[f"{patient_id}-{date}"] = study
        for modality in modalities:
            series = generate_uid()
            for number in range(count):
                ds = copy.deepcopy(template)
                ds.PatientID, ds.PatientName, ds.StudyDate = patient_id, name, date
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
                ds.SOPInstanceUID = generate_uid()
                ds.Modality, ds.InstanceNumber = modality, number + 1
                if patient_id == "P2":
                    request = Dataset()
                    request.ScheduledProcedureStepID, request.RequestedProcedureID = "S7", "R7"
                    ds.RequestAttributesSequence = [request]
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                buffer = BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                stored = archive_instance(services.store, "default", buffer.getvalue())
                event = ObjectEvent(stored.key.object_key, etag=stored.stored.etag)
                ingest_object(services.store, services.index_writer, event)
    return services, studies


def _search(services: Services, level: str, **params: str) -> QidoResult:
    decoded = {name: [value] for name, value in params.items() if name not in ("study",)}
    return services.qido.search(
        site="default", level=level, params=decoded, base_url=BASE, study=params.get("study")
    )


def _values(result: QidoResult, tag: str) -> list[Any]:
    return [match[tag]["Value"][0] for match in result.matches]


def test_study_by_patient_id(archive: Archive) -> None:
    services, _ = archive
    result = _search(services, "STUDY", PatientID="P1")
    assert sorted(_values(result, "00080020")) == ["20240105", "20240320"]


def test_study_name_wildcard_case_insensitive(archive: Archive) -> None:
    services, _ = archive
    result = _search(services, "STUDY", PatientName="DOE*")
    assert sorted(_values(result, "00100020")) == ["P1", "P1", "P3"]


def test_study_date_ranges(archive: Archive) -> None:
    services, _ = archive
    assert len(_search(services, "STUDY", StudyDate="20240101-20240331").matches) == 2
    assert len(_search(services, "STUDY", StudyDate="-20231231").matches) == 1
    assert len(_search(services, "STUDY", StudyDate="20240601-").matches) == 1
    assert len(_search(services, "STUDY", StudyDate="20240105").matches) == 1


def test_study_computed_attributes(archive: Archive) -> None:
    services, studies = archive
    result = _search(services, "STUDY", StudyInstanceUID=studies["P1-20240105"])
    [match] = result.matches
    assert match["00080061"]["Value"] == ["CT", "SR"]
    assert match["00201206"]["Value"] == [2]
    assert match["00201208"]["Value"] == [4]
    assert match["00081190"]["Value"] == [f"{BASE}/studies/{studies['P1-20240105']}"]


def test_study_modalities_in_study(archive: Archive) -> None:
    services, _ = archive
    result = _search(services, "STUDY", ModalitiesInStudy="SR")
    assert _values(result, "00080020") == ["20240105"]


@pytest.mark.parametrize("separator", [",", "\\", ", "])
def test_study_uid_lists(archive: Archive, separator: str) -> None:
    services, studies = archive
    wanted = [studies["P1-20240105"], studies["P3-20240601"]]
    result = _search(services, "STUDY", StudyInstanceUID=separator.join(wanted))
    assert sorted(_values(result, "0020000D")) == sorted(wanted)


def test_series_and_instance_uid_lists(archive: Archive) -> None:
    services, studies = archive
    study = studies["P3-20240601"]
    series = _values(_search(services, "SERIES", study=study), "0020000E")
    assert len(series) == 2
    listed = _search(services, "SERIES", SeriesInstanceUID="\\".join(series))
    assert sorted(_values(listed, "0020000E")) == sorted(series)
    instances = _search(services, "INSTANCE", SeriesInstanceUID="\\".join(series))
    assert len(instances.matches) == 2
    sops = _values(instances, "00080018")
    by_sop = _search(services, "INSTANCE", study=study, SOPInstanceUID=f"{sops[0]}\\{sops[1]}")
    assert sorted(_values(by_sop, "00080018")) == sorted(sops)
    modalities = _search(services, "STUDY", ModalitiesInStudy="MR\\SR")
    assert sorted(_values(modalities, "00080020")) == ["20240105", "20240320"]


def test_instances_by_sop_uid_use_claims(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    services, studies = archive
    first = _values(_search(services, "INSTANCE", study=studies["P1-20240105"]), "00080018")[0]
    last = _values(_search(services, "INSTANCE", study=studies["P3-20240601"]), "00080018")[0]
    # A listing of every instance would stop after one record with a Warning.
    monkeypatch.setattr(qido, "UNINDEXED_READ_LIMIT", 1)

    result = _search(services, "INSTANCE", SOPInstanceUID=f"{last}\\{first}\\{generate_uid()}")

    assert _values(result, "00080018") == [last, first]
    assert result.warnings == []
    assert _values(result, "0020000D") == [studies["P3-20240601"], studies["P1-20240105"]]
    assert result.matches[0]["00100020"]["Value"] == ["P3"]


def test_instance_by_sop_uid_stays_in_site(archive: Archive) -> None:
    services, _ = archive
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    stored = archive_instance(services.store, "east", buffer.getvalue())
    ingest_object(services.store, services.index_writer, ObjectEvent(stored.key.object_key))

    east = services.qido.search(
        site="east",
        level="INSTANCE",
        params={"SOPInstanceUID": [ds.SOPInstanceUID]},
        base_url=BASE,
    )
    default = _search(services, "INSTANCE", SOPInstanceUID=ds.SOPInstanceUID)

    assert _values(east, "00080018") == [ds.SOPInstanceUID]
    assert default.matches == []


def test_pages_partition_the_result(archive: Archive) -> None:
    services, _ = archive
    everything = _values(_search(services, "STUDY"), "0020000D")
    assert len(everything) == len(STUDIES)
    pages = []
    for offset in range(0, len(everything), 3):
        page = _search(services, "STUDY", limit="3", offset=str(offset))
        pages.extend(_values(page, "0020000D"))
        if offset + 3 < len(everything):
            assert page.warnings, "a cut page carries a warning"
    assert pages == everything


def test_includefield_returns_attribute(archive: Archive) -> None:
    services, _ = archive
    result = _search(services, "STUDY", PatientID="P2", includefield="StudyDescription")
    [match] = result.matches
    assert "00081030" in match
    assert "00081030" not in _search(services, "STUDY", PatientID="P2").matches[0]


def test_series_of_study_and_across(archive: Archive) -> None:
    services, studies = archive
    in_study = _search(services, "SERIES", study=studies["P3-20240601"])
    assert len(in_study.matches) == 2
    assert "00100020" not in in_study.matches[0]
    across = _search(services, "SERIES", Modality="CT", PatientID="P1")
    assert len(across.matches) == 1
    assert across.matches[0]["00100020"]["Value"] == ["P1"]
    assert across.matches[0]["00201209"]["Value"] == [2]


def test_instances_of_study(archive: Archive) -> None:
    services, studies = archive
    result = _search(services, "INSTANCE", study=studies["P1-20240320"])
    assert len(result.matches) == 3
    numbered = _search(services, "INSTANCE", study=studies["P1-20240320"], InstanceNumber="2")
    assert len(numbered.matches) == 1


def test_unsupported_attribute_warns(archive: Archive) -> None:
    services, _ = archive
    result = _search(services, "STUDY", SliceThickness="5")
    assert len(result.matches) == len(STUDIES)
    assert "SliceThickness is not matched" in result.warnings[0]


def test_series_by_sequence_attribute(archive: Archive) -> None:
    services, _ = archive
    result = _search(
        services, "SERIES", **{"RequestAttributesSequence.ScheduledProcedureStepID": "S7"}
    )
    [match] = result.matches
    assert match["00100020"]["Value"] == ["P2"]
    [item] = match["00400275"]["Value"]
    assert item["00401001"]["Value"] == ["R7"]
    missing = {"RequestAttributesSequence.ScheduledProcedureStepID": "S8"}
    assert _search(services, "SERIES", **missing).matches == []


def test_replaced_instance_counts_once(moto_server: MotoProcess) -> None:
    settings = create_resources(
        Settings.for_names(
            ResourceNames(deployment="qido-replace"), endpoint_url=moto_server.endpoint_url
        )
    )
    services = Services(settings)
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for description in ("first version", "second version"):
        ds.SeriesDescription = description
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        stored = archive_instance(services.store, "default", buffer.getvalue())
        event = ObjectEvent(stored.key.object_key, etag=stored.stored.etag)
        ingest_object(services.store, services.index_writer, event)
    [study] = _search(services, "STUDY", StudyInstanceUID=ds.StudyInstanceUID).matches
    assert study["00201206"]["Value"] == [1]
    assert study["00201208"]["Value"] == [1]
    assert study["00080061"]["Value"] == ["CT"]
    [series] = _search(services, "SERIES", study=ds.StudyInstanceUID).matches
    assert series["00201209"]["Value"] == [1]
    instances = _search(services, "INSTANCE", study=ds.StudyInstanceUID).matches
    assert len(instances) == 1


def test_includefield_lists_tags_and_all(archive: Archive) -> None:
    services, _ = archive
    params = {
        "00100020": ["P2"],
        "includefield": ["00081030,StudyID", "PatientAge"],
    }
    [match] = services.qido.search(
        site="default", level="STUDY", params=params, base_url=BASE
    ).matches
    for tag in ("00081030", "00200010", "00101010", "00100020", "00081190"):
        assert tag in match, tag
    everything = {"PatientID": ["P2"], "includefield": ["all"]}
    [full] = services.qido.search(
        site="default", level="STUDY", params=everything, base_url=BASE
    ).matches
    assert set(match) <= set(full)
    assert "00080090" in full


def test_series_defaults_include_study(archive: Archive) -> None:
    services, studies = archive
    [across] = _search(services, "SERIES", PatientID="P2").matches
    for tag in ("0020000E", "00080060", "00201209", "0020000D", "00100010", "00081190"):
        assert tag in across, tag
    [inside] = _search(services, "SERIES", study=studies["P2-20231231"]).matches
    assert "00100010" not in inside
    assert inside["00081190"]["Value"][0].endswith(f"/series/{inside['0020000E']['Value'][0]}")
