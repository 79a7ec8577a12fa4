"""``cirrus export`` and ``cirrus deidentify`` against ``cirrus dev`` in a child process.

The stack runs with an access document: a clinic stores and reads the site ``default``, a
researcher may only query and retrieve the site ``research``.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from cirrus.deid import DateHandling, Deidentifier, ProfileOptions
from cirrus.deid.profile import PROFILE_ACTIONS, Action
from cirrus.dicomweb.multipart import parse_multipart_related
from cirrus.local.stack import OBJECTS_FOLDER
from tests.e2e.conftest import RunningStack, start_stack
from tests.e2e.test_operations_cli import _cli, _json_lines
from tests.gateway.retrieves import running_storescp
from tests.integration.test_access_support import SignedClient, role
from tests.pydicom_files import bundled

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CLINIC = role("clinic")
RESEARCHER = role("researcher")
KEYS = {CLINIC: "AKIAEXPORTCLINIC0001", RESEARCHER: "AKIAEXPORTRESEARCH01"}
SECRETS = {CLINIC: "clinic-secret-0123456789", RESEARCHER: "research-secret-0123456789"}
ACCESS = {
    "principals": {
        CLINIC: {"default": ["store", "query", "retrieve"]},
        RESEARCHER: {"research": ["query", "retrieve"]},
    }
}
PATIENT_NAME = "SECRET^PATIENT"
PATIENT_ID = "MRN-SECRET-88"
KEY = "e2e-deidentification-key-0123456789"


def _client(stack: RunningStack, principal: str) -> SignedClient:
    return SignedClient(stack.dicomweb_url, KEYS[principal], SECRETS[principal])


def _study(count: int) -> list[pydicom.Dataset]:
    study, series = generate_uid(), generate_uid()
    datasets = []
    for number in range(count):
        ds = pydicom.dcmread(bundled("CT_small.dcm"))
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.InstitutionName = "Secret General Hospital"
        ds.StudyDate = "20240315"
        ds.InstanceNumber = number + 1
        datasets.append(ds)
    return datasets


def _search(client: SignedClient, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get(path, params=params, headers={"Accept": "application/dicom+json"})
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else []


def _wait_for_study(client: SignedClient, path: str, study: str, count: int) -> list[Any]:
    deadline = time.monotonic() + 30
    found: list[Any] = []
    while time.monotonic() < deadline:
        found = _search(client, path, {"StudyInstanceUID": study})
        if found and int(found[0]["00201208"]["Value"][0]) >= count:
            break
        time.sleep(0.2)
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("export-stack")
    access = folder / "access.json"
    access.write_text(json.dumps(ACCESS))
    credentials = folder / "credentials.json"
    entries = {KEYS[p]: {"secret": SECRETS[p], "principal": p} for p in KEYS}
    credentials.write_text(json.dumps({"credentials": entries}))
    running = start_stack(
        folder / "data", "--access", str(access), "--credentials", str(credentials)
    )
    yield running
    if running.process.poll() is None:
        running.stop()


@pytest.fixture(scope="module")
def study(stack: RunningStack) -> list[pydicom.Dataset]:
    datasets = _study(3)
    clinic = _client(stack, CLINIC)
    response = clinic.store("/studies", datasets)
    assert response.status_code == 200, response.text
    uid = datasets[0].StudyInstanceUID
    assert _wait_for_study(clinic, "/studies", uid, 3)
    return datasets


def test_export_zip_is_archived_bytes(
    stack: RunningStack, study: list[pydicom.Dataset], tmp_path: Path
) -> None:
    uid = study[0].StudyInstanceUID
    destination = tmp_path / "study.zip"
    result = _cli(stack.data_dir, "export", uid, "--to", str(destination), "--json")
    assert result.returncode == 0, result.stderr
    lines = _json_lines(result)
    assert [line["result"] for line in lines[:-1]] == ["exported"] * 3
    assert lines[-1]["summary"] == {"exported": 3, "failed": 0}
    archived = {
        path.read_bytes()
        for path in (stack.data_dir / OBJECTS_FOLDER).rglob("*.dcm")
        if uid in str(path)
    }
    with zipfile.ZipFile(destination) as archive:
        names = [name for name in archive.namelist() if name != "DICOMDIR"]
        exported = {archive.read(name) for name in names}
        assert "DICOMDIR" in archive.namelist()
    assert exported == archived


def test_export_to_storescp_deidentified(
    stack: RunningStack, study: list[pydicom.Dataset], tmp_path: Path
) -> None:
    uid = study[0].StudyInstanceUID
    with running_storescp(tmp_path / "scp", "READER") as scp:
        peer = f"READER@127.0.0.1:{scp.port}"
        result = _cli(stack.data_dir, "export", uid, "--to-dimse", peer, "--deidentify", "--json")
        received = scp.received()
    assert result.returncode == 0, result.stderr
    assert _json_lines(result)[-1]["summary"]["stored"] == 3
    assert len(received) == 3
    for ds in received.values():
        assert ds.PatientIdentityRemoved == "YES"
        assert str(ds.PatientName) != PATIENT_NAME
        assert ds.StudyInstanceUID != uid
        assert "InstitutionName" not in ds or not ds.InstitutionName


def test_export_unknown_study_exits_2(stack: RunningStack, tmp_path: Path) -> None:
    result = _cli(stack.data_dir, "export", "1.2.3.4.5", "--to", str(tmp_path / "x.zip"))
    assert result.returncode == 2
    assert "study 1.2.3.4.5 not found in site 'default'" in result.stderr


def test_export_unreachable_peer_exits_2(stack: RunningStack, study: list[pydicom.Dataset]) -> None:
    uid = study[0].StudyInstanceUID
    from tests.peers.orthanc import free_port

    peer = f"NOBODY@127.0.0.1:{free_port()}"
    result = _cli(stack.data_dir, "export", uid, "--to-dimse", peer, "--retries", "0")
    assert result.returncode == 2
    assert "no association with NOBODY" in result.stderr


def test_deidentified_view_for_research_site(
    stack: RunningStack, study: list[pydicom.Dataset], tmp_path: Path
) -> None:
    uid = study[0].StudyInstanceUID
    key_file = tmp_path / "deid.key"
    key_file.write_text(KEY + "\n")
    result = _cli(
        stack.data_dir, "deidentify", uid, "--to-site", "research",
        "--deid-key-file", str(key_file), "--shift-dates", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _json_lines(result)[-1]["summary"] == {"stored": 3, "failed": 0}

    deidentifier = Deidentifier(ProfileOptions(dates=DateHandling.SHIFT), KEY.encode())
    new_uid = deidentifier.replace_uid(uid)
    researcher = _client(stack, RESEARCHER)
    found = _wait_for_study(researcher, "/sites/research/studies", new_uid, 3)
    assert found, "the research site does not find the de-identified study"
    assert found[0]["00100020"]["Value"][0] == deidentifier.patient_pseudonym(PATIENT_ID)
    assert not _search(researcher, "/studies", {"StudyInstanceUID": uid})
    assert not _search(researcher, "/studies", {"PatientID": PATIENT_ID})
    assert not _search(researcher, "/studies", {"PatientName": "SECRET*"})
    assert not _search(researcher, "/sites/default/studies", {})

    response = researcher.get(
        f"/sites/research/studies/{new_uid}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
    )
    assert response.status_code == 200, response.text
    parts = parse_multipart_related(response.headers["Content-Type"], response.content).parts
    assert len(parts) == 3
    removed = {tag for tag, action in PROFILE_ACTIONS.items() if action is Action.REMOVE}
    for part in parts:
        assert PATIENT_NAME.encode() not in part.body
        assert PATIENT_ID.encode() not in part.body
        assert b"Secret General Hospital" not in part.body
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(part.body))
        assert not removed & {int(elem.tag) for elem in ds.iterall()}
        assert not any(elem.tag.is_private for elem in ds.iterall())
        assert ds.StudyInstanceUID == new_uid
        assert ds.StudyDate != "20240315"

    again = _cli(
        stack.data_dir, "deidentify", uid, "--to-site", "research",
        "--deid-key-file", str(key_file), "--shift-dates", "--json",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert _json_lines(again)[-1]["summary"] == {"stored": 3, "failed": 0}
    repeated = _search(researcher, "/sites/research/studies", {})
    assert [study["0020000D"]["Value"][0] for study in repeated] == [new_uid]
    assert int(repeated[0]["00201208"]["Value"][0]) == 3

    for run in (result, again):
        assert PATIENT_NAME not in run.stdout + run.stderr
        assert PATIENT_ID not in run.stdout + run.stderr
    assert not [line for line in stack.lines if PATIENT_NAME in line or PATIENT_ID in line]

    clinic = _client(stack, CLINIC)
    source = _search(clinic, "/studies", {"StudyInstanceUID": uid})
    assert source[0]["00100010"]["Value"][0]["Alphabetic"] == PATIENT_NAME
    assert int(source[0]["00201208"]["Value"][0]) == 3
    assert not _search(clinic, "/studies", {"StudyInstanceUID": new_uid})


def test_deidentify_same_site_exits_2(stack: RunningStack, study: list[pydicom.Dataset]) -> None:
    uid = study[0].StudyInstanceUID
    result = _cli(stack.data_dir, "deidentify", uid, "--to-site", "default")
    assert result.returncode == 2
    assert "both 'default'" in result.stderr


def test_short_key_file_exits_2(
    stack: RunningStack, study: list[pydicom.Dataset], tmp_path: Path
) -> None:
    key_file = tmp_path / "short.key"
    key_file.write_text("short")
    uid = study[0].StudyInstanceUID
    args = ("deidentify", uid, "--to-site", "research", "--deid-key-file", str(key_file))
    result = _cli(stack.data_dir, *args)
    assert result.returncode == 2
    assert "use at least 16" in result.stderr


def test_deid_option_without_deidentify_exits_2(
    stack: RunningStack, study: list[pydicom.Dataset], tmp_path: Path
) -> None:
    uid = study[0].StudyInstanceUID
    result = _cli(stack.data_dir, "export", uid, "--to", str(tmp_path / "x"), "--shift-dates")
    assert result.returncode == 2
    assert "need --deidentify" in result.stderr
    assert not (tmp_path / "x").exists()
