"""A DELETE on ``cirrus dev`` lasts across a restart, with its audit record in the data folder."""

from __future__ import annotations

import time
from copy import deepcopy
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from cirrus.dicomweb.multipart import Part, build_multipart_related
from cirrus.local.audit_journal import JOURNAL_FILE, read_journal
from cirrus.local.stack import OBJECTS_FOLDER
from tests.e2e.conftest import RunningStack, start_stack
from tests.pydicom_files import bundled


def _wait_for_instances(url: str, study: str, count: int) -> list[dict]:
    client = DICOMwebClient(url=url)
    deadline = time.monotonic() + 30
    found: list[dict] = []
    while time.monotonic() < deadline:
        found = client.search_for_instances(study_instance_uid=study)
        if len(found) == count:
            break
        time.sleep(0.1)
    return found


def _store(stack: RunningStack, datasets: list[pydicom.Dataset]) -> None:
    parts = []
    for ds in datasets:
        path = stack.data_dir.parent / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        parts.append(Part(path.read_bytes(), content_type="application/dicom"))
    body, content_type = build_multipart_related(parts, "application/dicom")
    response = requests.post(
        f"{stack.dicomweb_url}/studies",
        data=body,
        headers={"Content-Type": content_type},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def test_delete_survives_restart(tmp_path: Path) -> None:
    first = pydicom.dcmread(bundled("CT_small.dcm"))
    first.StudyInstanceUID = generate_uid()
    first.SOPInstanceUID = generate_uid()
    first.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    second = deepcopy(first)
    second.SOPInstanceUID = generate_uid()
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    study = first.StudyInstanceUID
    data_dir = tmp_path / "data"

    stack = start_stack(data_dir)
    try:
        _store(stack, [first, second])
        assert len(_wait_for_instances(stack.dicomweb_url, study, 2)) == 2
        deleted = requests.delete(
            f"{stack.dicomweb_url}/studies/{study}/series/{first.SeriesInstanceUID}"
            f"/instances/{first.SOPInstanceUID}",
            timeout=30,
        )
        assert deleted.status_code == 204
    finally:
        assert stack.stop() == 0

    objects = data_dir / OBJECTS_FOLDER
    saved = [path.name for path in objects.rglob("*.dcm")]
    assert saved == [f"{second.SOPInstanceUID}.dcm"]
    (deletion,) = [
        entry
        for entry in read_journal(data_dir / JOURNAL_FILE)
        if entry.action == "delete" and entry.outcome == 0
    ]
    (study_object,) = deletion.message["ParticipantObjectIdentification"]
    deleted = [
        instance["UID"]
        for element in study_object["ParticipantObjectDescription"]["SOPClass"]
        for instance in element.get("Instance", ())
    ]
    assert deleted == [first.SOPInstanceUID]

    restarted = start_stack(data_dir)
    try:
        remaining = _wait_for_instances(restarted.dicomweb_url, study, 1)
        assert [item["00080018"]["Value"][0] for item in remaining] == [second.SOPInstanceUID]
        (match,) = DICOMwebClient(url=restarted.dicomweb_url).search_for_studies(
            search_filters={"StudyInstanceUID": study}
        )
        assert match["00201208"]["Value"] == [1]
        gone = requests.delete(f"{restarted.dicomweb_url}/studies/{study}", timeout=30)
        assert gone.status_code == 204
        again = requests.delete(f"{restarted.dicomweb_url}/studies/{study}", timeout=30)
        assert again.status_code == 404
    finally:
        assert restarted.stop() == 0
    assert list(objects.rglob("*.dcm")) == []
