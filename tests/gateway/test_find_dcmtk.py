"""The C-FIND SCP with dcmtk's findscu, on studies sent by storescu and indexed by ingest.

Each level of the Patient Root (-P) and Study Root (-S) models is queried, and findscu's
``--cancel`` sends a C-CANCEL after the first response.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from cirrus.config import Settings
from cirrus.gateway import find as find_module
from cirrus.gateway.aeconfig import AEConfig
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.query.identifier import response_identifier
from cirrus.services import Services
from cirrus.storage.keys import INSTANCE_SUFFIX, site_prefix
from tests.gateway.find_archive import findscu
from tests.gateway.gateways import start_gateway
from tests.gateway.scu import storescu
from tests.pydicom_files import bundled

SITE = "find-dcmtk"
CONFIG = AEConfig(open=True, default_site=SITE)


class Sent:
    """The UIDs of the studies sent: two of patient D1, one of patient D2."""

    def __init__(self) -> None:
        self.studies: dict[str, str] = {}
        self.series: dict[str, list[str]] = {}
        self.instances: dict[str, list[str]] = {}


SentArchive = tuple[int, Sent]


@pytest.fixture(scope="module")
def sent(
    gateway_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SentArchive]:
    services = Services(gateway_settings)
    folder = tmp_path_factory.mktemp("find-dcmtk")
    template = pydicom.dcmread(bundled("CT_small.dcm"))
    record = Sent()
    paths = []
    for name, patient, date, series_count in (
        ("first", "D1", "20220101", 2),
        ("second", "D1", "20220202", 1),
        ("third", "D2", "20220303", 1),
    ):
        study = record.studies[name] = generate_uid()
        record.series[name] = []
        for number in range(series_count):
            series = generate_uid()
            record.series[name].append(series)
            record.instances[series] = []
            for instance in range(2):
                ds = copy.deepcopy(template)
                ds.PatientID, ds.PatientName, ds.StudyDate = patient, f"Dcmtk^{patient}", date
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.SeriesNumber, ds.InstanceNumber = number + 1, instance + 1
                path = folder / f"{ds.SOPInstanceUID}.dcm"
                ds.save_as(path, enforce_file_format=True)
                paths.append(path)
                record.instances[series].append(ds.SOPInstanceUID)
    with start_gateway(gateway_settings, config=CONFIG) as gateway:
        storescu(gateway.port, *paths)
        # No queue poller runs in this suite, so the stored objects are indexed here.
        for stored in services.store.list_keys(site_prefix(SITE)):
            if stored.key.endswith(INSTANCE_SUFFIX):
                event = ObjectEvent(stored.key, etag=stored.etag)
                ingest_object(services.store, services.index_writer, event)
        yield gateway.port, record


def _uids(responses: list[Dataset], keyword: str) -> list[str]:
    return sorted(str(ds.get(keyword)) for ds in responses)


def test_study_root_study_level(sent: SentArchive, tmp_path: Path) -> None:
    port, record = sent
    keys = ["QueryRetrieveLevel=STUDY", "PatientID=D1", "StudyInstanceUID", "StudyDate"]
    _, found = findscu(port, "-S", keys, tmp_path)
    assert _uids(found, "StudyInstanceUID") == sorted(
        [record.studies["first"], record.studies["second"]]
    )
    assert _uids(found, "StudyDate") == ["20220101", "20220202"]


def test_study_root_date_range(sent: SentArchive, tmp_path: Path) -> None:
    port, _ = sent
    keys = ["QueryRetrieveLevel=STUDY", "StudyDate=20220115-20221231", "PatientName"]
    _, found = findscu(port, "-S", keys, tmp_path)
    assert _uids(found, "PatientName") == ["Dcmtk^D1", "Dcmtk^D2"]


def test_study_root_series_level(sent: SentArchive, tmp_path: Path) -> None:
    port, record = sent
    study = record.studies["first"]
    keys = [
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={study}",
        "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances",
    ]
    _, found = findscu(port, "-S", keys, tmp_path)
    assert _uids(found, "SeriesInstanceUID") == sorted(record.series["first"])
    assert [int(ds.NumberOfSeriesRelatedInstances) for ds in found] == [2, 2]


def test_study_root_image_level(sent: SentArchive, tmp_path: Path) -> None:
    port, record = sent
    series = record.series["second"][0]
    keys = [
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={record.studies['second']}",
        f"SeriesInstanceUID={series}",
        "SOPInstanceUID",
        "InstanceNumber",
    ]
    _, found = findscu(port, "-S", keys, tmp_path)
    assert _uids(found, "SOPInstanceUID") == sorted(record.instances[series])
    assert _uids(found, "InstanceNumber") == ["1", "2"]


def test_patient_root_patient_level(sent: SentArchive, tmp_path: Path) -> None:
    port, _ = sent
    keys = [
        "QueryRetrieveLevel=PATIENT",
        "PatientID=D*",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedInstances",
    ]
    _, found = findscu(port, "-P", keys, tmp_path)
    counts = {
        str(ds.PatientID): (
            int(ds.NumberOfPatientRelatedStudies),
            int(ds.NumberOfPatientRelatedInstances),
        )
        for ds in found
    }
    assert counts == {"D1": (2, 6), "D2": (1, 2)}


def test_patient_root_study_level(sent: SentArchive, tmp_path: Path) -> None:
    port, record = sent
    keys = ["QueryRetrieveLevel=STUDY", "PatientID=D2", "StudyInstanceUID"]
    _, found = findscu(port, "-P", keys, tmp_path)
    assert _uids(found, "StudyInstanceUID") == [record.studies["third"]]


def test_patient_root_series_and_image(sent: SentArchive, tmp_path: Path) -> None:
    port, record = sent
    study = record.studies["first"]
    series = record.series["first"][1]
    keys = [
        "QueryRetrieveLevel=SERIES",
        "PatientID=D1",
        f"StudyInstanceUID={study}",
        "SeriesNumber",
    ]
    _, found = findscu(port, "-P", keys, tmp_path / "series")
    assert _uids(found, "SeriesNumber") == ["1", "2"]
    keys = [
        "QueryRetrieveLevel=IMAGE",
        "PatientID=D1",
        f"StudyInstanceUID={study}",
        f"SeriesInstanceUID={series}",
        "SOPInstanceUID",
    ]
    _, found = findscu(port, "-P", keys, tmp_path / "image")
    assert _uids(found, "SOPInstanceUID") == sorted(record.instances[series])


def test_series_without_study_rejected(sent: SentArchive, tmp_path: Path) -> None:
    port, _ = sent
    keys = ["QueryRetrieveLevel=SERIES", "Modality=CT"]
    output, found = findscu(port, "-S", keys, tmp_path, "-v")
    assert found == []
    assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in output


def test_findscu_cancel(sent: SentArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port, _ = sent

    def slow_build(*args: Any) -> Dataset:
        # Leaves findscu's C-CANCEL time to arrive before the next match is sent.
        time.sleep(0.3)
        built: Dataset = response_identifier(*args)
        return built

    monkeypatch.setattr(find_module, "response_identifier", slow_build)
    keys = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"]
    output, found = findscu(port, "-S", keys, tmp_path, "--cancel", "1", "-v")
    assert len(found) < 3
    assert "Received Final Find Response (Cancel: MatchingTerminatedDueToCancelRequest)" in output
