"""Orthanc 1.10.1 as a modality that sends a study to the gateway over C-STORE.

Orthanc runs as a separate process on loopback (``tests.peers.orthanc``) with the gateway in
its modalities. The study goes from Orthanc's REST API (``POST /modalities/{name}/store``)
to the gateway, and the test indexes what the gateway archived, as the ingest queue would,
then reads the study back from Cirrus's index.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from cirrus.config import DEFAULT_AE_TITLE, Settings
from cirrus.gateway.server import Gateway
from cirrus.index.models import bind_index_model
from cirrus.index.reader import IndexReader
from cirrus.index.writer import IndexWriter
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.storage.keys import InstanceKey
from cirrus.storage.objects import ObjectStore
from tests.gateway.scu import SITE
from tests.peers.orthanc import Modality, Orthanc, require_orthanc, running_orthanc
from tests.pydicom_files import bundled

# Two series of one study, from pydicom's bundled files (CT and MR, explicit VR little endian).
STUDY_FILES = ("CT_small.dcm", "MR_small.dcm")


@pytest.fixture(scope="module")
def orthanc(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    require_orthanc()
    modalities = {"cirrus": Modality(DEFAULT_AE_TITLE, gateway.port)}
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), modalities) as running:
        yield running


def write_study(folder: Path, patient_id: str) -> tuple[str, list[pydicom.Dataset]]:
    """Write the study files with new UIDs under one study; return its UID and data sets."""
    study = generate_uid()
    datasets = []
    for name in STUDY_FILES:
        ds = pydicom.dcmread(bundled(name))
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID = patient_id
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        datasets.append(ds)
    return study, datasets


def listening_addresses(port: int) -> set[str]:
    """Return the local addresses, in /proc/net/tcp's hex form, of sockets listening on ``port``."""
    addresses = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A is TCP_LISTEN
                addresses.add(address)
    return addresses


def test_orthanc_listens_on_loopback_only(orthanc: Orthanc) -> None:
    loopback = "0100007F"  # 127.0.0.1 in /proc/net/tcp's byte order
    assert listening_addresses(orthanc.dicom_port) == {loopback}
    assert listening_addresses(orthanc.http_port) == {loopback}


def test_orthanc_echoes_gateway(orthanc: Orthanc) -> None:
    assert orthanc.rest("POST", "/modalities/cirrus/echo", json={}) == {}


def test_orthanc_sends_study_to_gateway(
    orthanc: Orthanc,
    gateway_settings: Settings,
    archive: ObjectStore,
    tmp_path: Path,
) -> None:
    patient_id = f"ORTHANC-{generate_uid()[-8:]}"
    study, datasets = write_study(tmp_path, patient_id)
    orthanc_ids = [orthanc.upload(tmp_path / f"{ds.SOPInstanceUID}.dcm") for ds in datasets]
    orthanc_study = orthanc.rest("GET", f"/instances/{orthanc_ids[0]}/study")["ID"]

    job = orthanc.rest(
        "POST", "/modalities/cirrus/store", json={"Resources": [orthanc_study], "Synchronous": True}
    )

    assert job["InstancesCount"] == len(datasets)
    assert job["FailedInstancesCount"] == 0
    model = bind_index_model(gateway_settings)
    writer = IndexWriter(model, archive)
    for ds in datasets:
        key = InstanceKey(SITE, study, ds.SeriesInstanceUID, ds.SOPInstanceUID).object_key
        stored = [obj for obj in archive.list_keys(key) if obj.key == key]
        assert stored, f"the gateway archived no object at {key}"
        ingest_object(archive, writer, ObjectEvent(key, etag=stored[0].etag))
    indexed = IndexReader(model, archive).instances(SITE, study)
    assert {ref.sop for ref in indexed} == {ds.SOPInstanceUID for ds in datasets}
    assert {ref.series for ref in indexed} == {ds.SeriesInstanceUID for ds in datasets}
    assert {ref.sop_class_uid for ref in indexed} == {ds.SOPClassUID for ds in datasets}
    metadata = IndexReader(model, archive).metadata(SITE, study)
    assert {item["00100020"]["Value"][0] for item in metadata} == {patient_id}
