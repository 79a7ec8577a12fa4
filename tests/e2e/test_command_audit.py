"""Audit records of ``cirrus export``, ``deidentify`` and ``import`` on ``cirrus dev``.

Each command runs against a stack in a child process, and ``cirrus audit`` reads the records
back from the data folder, as an operator would.
"""

from __future__ import annotations

import base64
import getpass
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from cirrus.audit import DESTINATION_MEDIA_ROLE, SOURCE_MEDIA_ROLE, URI_MEDIA
from tests.e2e.conftest import RunningStack, start_stack
from tests.e2e.import_helpers import run_import, write_ct_series
from tests.e2e.test_delete_restart import _store, _wait_for_instances
from tests.e2e.test_operations_cli import _cli, _json_lines
from tests.gateway.retrieves import running_storescp
from tests.pydicom_files import bundled

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PATIENT_NAME = "AUDIT^SECRET"
PATIENT_ID = "MRN-AUDIT-4711"
OPERATOR = f"local user {getpass.getuser()}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("audit-stack") / "data")
    yield running
    if running.process.poll() is None:
        running.stop()


@pytest.fixture(scope="module")
def study(stack: RunningStack) -> list[pydicom.Dataset]:
    study_uid, series_uid = generate_uid(), generate_uid()
    datasets = []
    for number in range(3):
        ds = pydicom.dcmread(bundled("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
        ds.InstanceNumber = number + 1
        datasets.append(ds)
    _store(stack, datasets)
    assert len(_wait_for_instances(stack.dicomweb_url, study_uid, 3)) == 3
    return datasets


def _records(stack: RunningStack, *options: str) -> list[dict[str, Any]]:
    result = _cli(stack.data_dir, "audit", "--json", *options)
    assert result.returncode == 0, result.stderr
    assert PATIENT_NAME not in result.stdout
    assert PATIENT_ID not in result.stdout
    return _json_lines(result)


def _of_action(records: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [record for record in records if record["action"] == action]


def _requestor(record: dict[str, Any]) -> dict[str, Any]:
    participants = record["message"]["ActiveParticipant"]
    return next(p for p in participants if p["UserIsRequestor"])


def _party(record: dict[str, Any], role_code: str) -> dict[str, Any]:
    participants = record["message"]["ActiveParticipant"]
    return next(
        p for p in participants if role_code in {r["csd-code"] for r in p.get("RoleIDCode", ())}
    )


def _study_object(record: dict[str, Any]) -> dict[str, Any]:
    objects = record["message"]["ParticipantObjectIdentification"]
    assert len(objects) == 1
    study_object: dict[str, Any] = objects[0]
    return study_object


def _instances(record: dict[str, Any]) -> set[str]:
    elements = _study_object(record)["ParticipantObjectDescription"]["SOPClass"]
    return {item["UID"] for element in elements for item in element.get("Instance", ())}


def _count(record: dict[str, Any]) -> int:
    elements = _study_object(record)["ParticipantObjectDescription"]["SOPClass"]
    return sum(int(element["NumberOfInstances"]) for element in elements)


def _event(record: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = record["message"]["EventIdentification"]
    return event


def test_export_to_zip_audited(
    stack: RunningStack, study: list[pydicom.Dataset], tmp_path: Path
) -> None:
    uid = study[0].StudyInstanceUID
    destination = tmp_path / "study.zip"
    result = _cli(stack.data_dir, "export", uid, "--to", str(destination), "--json")
    assert result.returncode == 0, result.stderr

    [record] = _of_action(_records(stack, "--study", uid), "export")
    assert record["outcome"] == 0
    assert record["transport"] == "command line"
    assert record["site"] == "default"
    assert record["studies"] == [uid]
    event = _event(record)
    assert event["EventID"]["csd-code"] == "110106"
    assert event["EventActionCode"] == "R"
    assert _requestor(record)["UserID"] == OPERATOR
    media = _party(record, DESTINATION_MEDIA_ROLE[0])
    assert media["MediaType"]["csd-code"] == URI_MEDIA[0]
    assert media["MediaIdentifier"] == destination.resolve().as_uri()
    assert _count(record) == 3
    assert _instances(record) == {ds.SOPInstanceUID for ds in study}
    assert "Anonymized" not in _study_object(record)["ParticipantObjectDescription"]


def test_export_to_dimse_audited(
    stack: RunningStack, study: list[pydicom.Dataset], tmp_path: Path
) -> None:
    uid = study[0].StudyInstanceUID
    with running_storescp(tmp_path / "scp", "READER") as scp:
        peer = f"READER@127.0.0.1:{scp.port}"
        result = _cli(stack.data_dir, "export", uid, "--to-dimse", peer, "--deidentify")
    assert result.returncode == 0, result.stderr

    records = _of_action(_records(stack, "--study", uid), "export")
    [record] = [r for r in records if _event(r)["EventID"]["csd-code"] == "110104"]
    assert record["outcome"] == 0
    assert _event(record)["EventActionCode"] == "R"
    destination = _party(record, "110152")
    assert destination["UserID"] == "READER"
    assert destination["UserIDTypeCode"]["csd-code"] == "110119"
    assert destination["NetworkAccessPointID"] == "127.0.0.1"
    assert _party(record, "110153")["UserIsRequestor"] is False
    assert _count(record) == 3
    assert _study_object(record)["ParticipantObjectDescription"]["Anonymized"] is True


def test_failed_export_audited_as_failure(
    stack: RunningStack, study: list[pydicom.Dataset]
) -> None:
    from tests.peers.orthanc import free_port

    uid = study[0].StudyInstanceUID
    started = datetime.now(UTC).isoformat()
    peer = f"NOBODY@127.0.0.1:{free_port()}"
    result = _cli(stack.data_dir, "export", uid, "--to-dimse", peer, "--retries", "0")
    assert result.returncode == 2

    records = _of_action(_records(stack, "--since", started), "export")
    [record] = [r for r in records if _party(r, "110152")["UserID"] == "NOBODY"]
    assert record["outcome"] == 4
    assert record["studies"] == [uid]
    assert "no association with NOBODY" in _event(record)["EventOutcomeDescription"]
    assert _count(record) == 0


def test_export_of_unknown_study_audited(stack: RunningStack, tmp_path: Path) -> None:
    missing = generate_uid()
    result = _cli(stack.data_dir, "export", missing, "--to", str(tmp_path / "none.zip"))
    assert result.returncode == 2

    [record] = _records(stack, "--study", missing)
    assert record["action"] == "export"
    assert record["outcome"] == 4
    assert "not found" in _event(record)["EventOutcomeDescription"]


def test_deidentify_audited_on_both_sites(
    stack: RunningStack, study: list[pydicom.Dataset]
) -> None:
    uid = study[0].StudyInstanceUID
    started = datetime.now(UTC).isoformat()
    result = _cli(stack.data_dir, "deidentify", uid, "--to-site", "research", "--json")
    assert result.returncode == 0, result.stderr
    copies = [line["detail"] for line in _json_lines(result)[:-1]]
    new_study = copies[0].split("/studies/")[1].split("/")[0]

    records = _records(stack, "--since", started)
    [export] = [r for r in _of_action(records, "export") if r["site"] == "default"]
    [imported] = [r for r in _of_action(records, "import") if r["site"] == "research"]
    assert export["studies"] == [uid]
    assert _event(export)["EventID"]["csd-code"] == "110106"
    assert _party(export, "110152")["UserID"] == "site research"
    assert _instances(export) == {ds.SOPInstanceUID for ds in study}
    assert imported["studies"] == [new_study]
    assert new_study != uid
    assert _event(imported)["EventID"]["csd-code"] == "110107"
    assert _event(imported)["EventActionCode"] == "C"
    assert _party(imported, "110153")["UserID"] == "site default"
    assert _count(imported) == 3
    assert _study_object(imported)["ParticipantObjectDescription"]["Anonymized"] is True
    assert imported["request_id"] == export["request_id"]
    for record in (export, imported):
        assert record["outcome"] == 0
        assert _requestor(record)["UserID"] == OPERATOR


def test_import_audited_per_study(stack: RunningStack, tmp_path: Path) -> None:
    source = tmp_path / "source"
    first, second = generate_uid(), generate_uid()
    write_ct_series(source / "first", 2, study=first)
    write_ct_series(source / "second", 3, study=second)
    unknown = pydicom.dcmread(bundled("CT_small.dcm"))
    unknown.SOPInstanceUID = generate_uid()
    unknown.file_meta.MediaStorageSOPInstanceUID = unknown.SOPInstanceUID
    del unknown.StudyInstanceUID
    unknown.save_as(source / "no-study.dcm", enforce_file_format=True)
    started = datetime.now(UTC).isoformat()

    result = run_import(str(source), "--data-dir", str(stack.data_dir), "--json")
    assert result.returncode == 1, result.stderr

    records = _of_action(_records(stack, "--since", started), "import")
    by_study = {tuple(record["studies"]): record for record in records}
    assert set(by_study) == {(first,), (second,), ()}
    assert _count(by_study[(first,)]) == 2
    assert _count(by_study[(second,)]) == 3
    for uid in (first, second):
        record = by_study[(uid,)]
        assert record["outcome"] == 0
        assert _event(record)["EventID"]["csd-code"] == "110107"
        assert _requestor(record)["UserID"] == OPERATOR
        media = _party(record, SOURCE_MEDIA_ROLE[0])
        assert media["MediaIdentifier"] == source.resolve().as_uri()
    unattributed = by_study[()]
    assert unattributed["outcome"] == 8
    assert "1 rejected" in _event(unattributed)["EventOutcomeDescription"]

    again = run_import(str(source), "--data-dir", str(stack.data_dir), "--json")
    assert again.returncode == 1, again.stderr
    repeated = _of_action(_records(stack, "--study", first), "import")
    assert len(repeated) == 2
    assert _count(repeated[-1]) == 0
    assert repeated[-1]["outcome"] == 0


def test_records_name_no_patient(stack: RunningStack, study: list[pydicom.Dataset]) -> None:
    since = datetime.now(UTC).date().isoformat()
    result = _cli(stack.data_dir, "audit", "--json", "--since", since)
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        assert PATIENT_NAME not in line
        assert PATIENT_ID not in line
        assert base64.b64encode(PATIENT_ID.encode()).decode() not in line
