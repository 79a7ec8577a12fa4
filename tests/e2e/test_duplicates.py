"""A SOP Instance UID sent again with other study UIDs is rejected by C-STORE and STOW-RS."""

from __future__ import annotations

from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from tests.e2e.conftest import RunningStack, wait_for_instances
from tests.e2e.corpus import classify, send_with_storescu
from tests.pydicom_files import bundled

FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
DUPLICATE_SOP_INSTANCE = 0x0111


def test_duplicate_sop_instance_rejected(local_stack: RunningStack, tmp_path: Path) -> None:
    client = DICOMwebClient(url=local_stack.dicomweb_url)
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    original = tmp_path / "original.dcm"
    ds.save_as(original, enforce_file_format=True)
    first_study = ds.StudyInstanceUID
    ds.StudyInstanceUID = generate_uid()
    moved = tmp_path / "moved.dcm"
    ds.save_as(moved, enforce_file_format=True)

    for path in (original, moved):
        entry = classify(path)
        assert not isinstance(entry, str), entry
        sent = send_with_storescu(entry, local_stack.dicom_port, tmp_path)
        assert (sent.returncode == 0) is (path == original), sent.stdout + sent.stderr

    assert len(wait_for_instances(client, first_study, 1)) == 1
    assert client.search_for_instances(study_instance_uid=ds.StudyInstanceUID) == []

    response = requests.post(
        f"{local_stack.dicomweb_url}/studies",
        data=b"--b\r\nContent-Type: application/dicom\r\n\r\n" + moved.read_bytes() + b"\r\n--b--",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        timeout=30,
    )
    assert response.status_code == 409
    [failure] = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert failure[FAILURE_REASON]["Value"] == [DUPLICATE_SOP_INSTANCE]
