"""``cirrus import`` of folders and ZIP files into ``cirrus dev`` in a child process."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from tests.e2e.conftest import RunningStack, wait_for_instances
from tests.e2e.import_helpers import (
    cli_command,
    retrieve_when_indexed,
    run_import,
    summary_of,
    write_ct_series,
)
from tests.pydicom_files import TEST_FILES, bundled

pytestmark = pytest.mark.timeout(600)

STORED_RESULTS = {"stored", "replaced", "duplicate"}


def _generated_folder(folder: Path) -> dict[str, str]:
    """Write valid, invalid and non-DICOM files to ``folder``; return the expected results."""
    expected = {}
    for path in write_ct_series(folder / "ct", 3):
        expected[path.relative_to(folder).as_posix()] = "stored"
    no_study = pydicom.dcmread(bundled("CT_small.dcm"))
    no_study.SOPInstanceUID = generate_uid()
    no_study.file_meta.MediaStorageSOPInstanceUID = no_study.SOPInstanceUID
    del no_study.StudyInstanceUID
    no_study.save_as(folder / "no-study.dcm", enforce_file_format=True)
    expected["no-study.dcm"] = "rejected"
    no_pixels = pydicom.dcmread(bundled("CT_small.dcm"))
    no_pixels.StudyInstanceUID, no_pixels.SOPInstanceUID = generate_uid(), generate_uid()
    no_pixels.file_meta.MediaStorageSOPInstanceUID = no_pixels.SOPInstanceUID
    del no_pixels.PixelData
    no_pixels.save_as(folder / "no-pixels.dcm", enforce_file_format=True)
    expected["no-pixels.dcm"] = "rejected"
    (folder / "notes.txt").write_text("not DICOM\n")
    expected["notes.txt"] = "skipped"
    (folder / "empty.dcm").write_bytes(b"")
    expected["empty.dcm"] = "skipped"
    return expected


def _outcomes(report: Path) -> dict[str, dict[str, str]]:
    return {entry["name"]: entry for entry in json.loads(report.read_text())["entries"]}


def test_import_folder(local_stack: RunningStack, tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(TEST_FILES, source / "pydicom")
    generated = _generated_folder(source / "generated")
    expected = {f"generated/{name}": result for name, result in generated.items()}
    report = tmp_path / "report.json"

    result = run_import(str(source), "--data-dir", str(local_stack.data_dir), "--json",
                        "--report", str(report))  # fmt: skip

    assert result.returncode == 1, result.stderr
    outcomes = _outcomes(report)
    files = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()}
    assert set(outcomes) == files
    for name, result_name in expected.items():
        assert outcomes[name]["result"] == result_name, outcomes[name]
    assert "StudyInstanceUID (0020,000D)" in outcomes["generated/no-study.dcm"]["reason"]
    assert "Pixel Data (7FE0,0010)" in outcomes["generated/no-pixels.dcm"]["reason"]
    assert "no DICM prefix" in outcomes["generated/notes.txt"]["reason"]
    assert outcomes["pydicom/dicomdirtests/DICOMDIR"]["result"] == "skipped"
    assert "DICOMDIR" in outcomes["pydicom/dicomdirtests/DICOMDIR"]["reason"]
    for entry in outcomes.values():
        if entry["result"] in {"rejected", "skipped"}:
            assert entry["reason"], entry

    document = json.loads(report.read_text())
    totals = document["totals"]
    assert sum(totals[name] for name in totals if name != "bytes") == len(files)
    assert document["complete"] is True
    assert document["source"] == f"folder {source}"
    assert document["site"] == "default"
    assert totals["rejected"] == sum(document["reasons"]["rejected"].values())
    assert summary_of(result)["totals"] == totals

    # Every stored instance is found by QIDO and retrieved as the bytes of a file of its key.
    client = DICOMwebClient(url=local_stack.dicomweb_url)
    by_key: dict[str, set[bytes]] = defaultdict(set)
    for name, entry in outcomes.items():
        if entry["result"] in STORED_RESULTS:
            by_key[entry["object_key"]].add((source / name).read_bytes())
    assert len(by_key) >= 40
    ct_study = pydicom.dcmread(source / "generated/ct/ct00000.dcm").StudyInstanceUID
    assert len(wait_for_instances(client, ct_study, 3)) == 3
    for key, contents in by_key.items():
        retrieved = retrieve_when_indexed(local_stack.dicomweb_url, key)
        if _big_endian(contents):
            continue  # WADO-RS sends big endian instances as Explicit VR Little Endian
        assert retrieved in contents, key


def _big_endian(contents: set[bytes]) -> bool:
    return any(b"1.2.840.10008.1.2.2" in content[:1024] for content in contents)


def test_import_again_changes_nothing(local_stack: RunningStack, tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "source", 4)
    data_dir = str(local_stack.data_dir)
    first = run_import(str(tmp_path / "source"), "--data-dir", data_dir, "--json")
    assert first.returncode == 0, first.stderr
    assert summary_of(first)["totals"]["stored"] == 4
    stored = {p: p.stat().st_mtime_ns for p in local_stack.data_dir.rglob("*.dcm")}

    again = run_import(str(tmp_path / "source"), "--data-dir", data_dir, "--json")

    assert again.returncode == 0, again.stderr
    totals = summary_of(again)["totals"]
    assert totals["duplicate"] == 4
    assert totals["stored"] == 0
    assert {p: p.stat().st_mtime_ns for p in local_stack.data_dir.rglob("*.dcm")} == stored
    client = DICOMwebClient(url=local_stack.dicomweb_url)
    study = pydicom.dcmread(paths[0]).StudyInstanceUID
    assert len(wait_for_instances(client, study, 4)) == 4


def test_import_conflicting_uid_rejected(local_stack: RunningStack, tmp_path: Path) -> None:
    [original] = write_ct_series(tmp_path / "first", 1)
    assert run_import(str(original), "--data-dir", str(local_stack.data_dir)).returncode == 0
    ds = pydicom.dcmread(original)
    ds.StudyInstanceUID = generate_uid()
    moved = tmp_path / "moved.dcm"
    ds.save_as(moved, enforce_file_format=True)

    result = run_import(str(moved), "--data-dir", str(local_stack.data_dir), "--json")

    assert result.returncode == 1
    [finding, _summary] = [json.loads(line) for line in result.stdout.splitlines()]
    assert finding["result"] == "rejected"
    assert "is already stored in study" in finding["reason"]


def test_import_zip(local_stack: RunningStack, tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "source", 3)
    archive = tmp_path / "studies.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for path in paths:
            out.write(path, f"patient/{path.name}")
        out.writestr("patient/README.txt", "not DICOM")
        out.writestr("patient/", "")
    report = tmp_path / "report.json"

    result = run_import(str(archive), "--data-dir", str(local_stack.data_dir), "--json",
                        "--report", str(report))  # fmt: skip

    assert result.returncode == 0, result.stderr
    outcomes = _outcomes(report)
    assert {name: entry["result"] for name, entry in outcomes.items()} == {
        "patient/ct00000.dcm": "stored",
        "patient/ct00001.dcm": "stored",
        "patient/ct00002.dcm": "stored",
        "patient/README.txt": "skipped",
    }
    for path in paths:
        key = outcomes[f"patient/{path.name}"]["object_key"]
        assert retrieve_when_indexed(local_stack.dicomweb_url, key) == path.read_bytes()


def test_import_into_site(local_stack: RunningStack, tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "source", 2)
    study = pydicom.dcmread(paths[0]).StudyInstanceUID
    data_dir = str(local_stack.data_dir)

    result = run_import(str(tmp_path / "source"), "--site", "north", "--data-dir", data_dir,
                        "--json")  # fmt: skip

    assert result.returncode == 0, result.stderr
    objects = list((local_stack.data_dir / "objects/sites/north").rglob("*.dcm"))
    assert len(objects) == 2
    # Open DICOMweb serves the site default only, so verify checks that north is indexed.
    deadline = time.monotonic() + 30
    while True:
        verify = subprocess.run(
            [*cli_command()[:-1], "verify", "--site", "north", "--json", "--data-dir", data_dir],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if verify.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert verify.returncode == 0, verify.stdout
    assert json.loads(verify.stdout)["summary"]["index entries"] == 2
    default = DICOMwebClient(url=local_stack.dicomweb_url)
    assert default.search_for_instances(study_instance_uid=study) == []


def test_import_resumes_after_ctrl_c(local_stack: RunningStack, tmp_path: Path) -> None:
    count = 300
    paths = write_ct_series(tmp_path / "source", count)
    checkpoint = tmp_path / "import.ckpt"
    report = tmp_path / "first.json"
    args = [str(tmp_path / "source"), "--data-dir", str(local_stack.data_dir), "--workers", "1",
            "--checkpoint", str(checkpoint), "--checkpoint-every", "5", "--json"]  # fmt: skip
    process = subprocess.Popen(
        cli_command(*args, "--report", str(report)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the import ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr
    assert "interrupted; run again with --checkpoint" in stderr
    first = json.loads(stdout.splitlines()[-1])["summary"]
    assert first["complete"] is False
    assert first["interrupted"] is True
    stored_first = first["totals"]["stored"]
    assert 0 < stored_first < count
    assert json.loads(report.read_text())["complete"] is False

    second = run_import(*args)

    assert second.returncode == 0, second.stderr
    summary = summary_of(second)
    assert summary["resumed"] is True
    assert summary["totals"]["stored"] == count
    assert summary["totals"]["duplicate"] == 0
    assert summary["this_run"]["stored"] == count - stored_first
    assert summary["this_run"]["finished_before"] == stored_first
    assert not checkpoint.exists()
    client = DICOMwebClient(url=local_stack.dicomweb_url)
    study = pydicom.dcmread(paths[0]).StudyInstanceUID
    assert len(wait_for_instances(client, study, count)) == count


def test_import_without_stack(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "source", 1)

    result = run_import(str(tmp_path / "source"), "--data-dir", str(tmp_path / "none"))

    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_import_bad_arguments(tmp_path: Path) -> None:
    both = run_import(str(tmp_path), "--from-dicomweb", "http://127.0.0.1:1/dicomweb")
    assert both.returncode == 2
    assert "exactly one of PATH" in both.stderr
    filtered = run_import(str(tmp_path), "--study", "1.2.3")
    assert filtered.returncode == 2
    assert "remote source" in filtered.stderr


def test_import_logs_no_patient_data(local_stack: RunningStack, tmp_path: Path) -> None:
    name, patient_id, birth_date = "Kowalczyk^Jadwiga", "PID-778-31", "19410315"
    paths = write_ct_series(tmp_path / "source", 2)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, patient_id, birth_date
        ds.save_as(path, enforce_file_format=True)
    ds = pydicom.dcmread(paths[1])
    del ds.StudyInstanceUID  # rejected, so its reason is printed
    ds.save_as(paths[1], enforce_file_format=True)
    start = len(local_stack.lines)

    for options in ([], ["--json"]):
        result = run_import(str(tmp_path / "source"), "--data-dir", str(local_stack.data_dir),
                            *options)  # fmt: skip
        assert result.returncode == 1, result.stderr
        output = result.stdout + result.stderr
        assert "rejected" in output
        for value in ("Kowalczyk", "Jadwiga", patient_id, birth_date):
            assert value not in output
    client = DICOMwebClient(url=local_stack.dicomweb_url)
    study = pydicom.dcmread(paths[0]).StudyInstanceUID
    assert len(wait_for_instances(client, study, 1)) == 1
    stack_output = "\n".join(local_stack.lines[start:])
    for value in ("Kowalczyk", "Jadwiga", patient_id, birth_date):
        assert value not in stack_output
