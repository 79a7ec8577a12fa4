"""``cirrus import --from-dimse`` and ``--from-dicomweb`` from Orthanc and from another Cirrus."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.e2e.conftest import RunningStack, free_port, start_stack, wait_for_instances
from tests.e2e.import_helpers import (
    cli_command,
    retrieve_when_indexed,
    run_import,
    summary_of,
    write_ct_series,
)
from tests.peers.orthanc import (
    DICOMWEB_PLUGIN,
    DICOMWEB_ROOT,
    Modality,
    Orthanc,
    missing_requirement,
    require_dicomweb_plugin,
    require_orthanc,
    running_orthanc,
)
from tests.pydicom_files import bundled

pytestmark = pytest.mark.timeout(600)

IMPORT_AE = "CIRRUS-IMPORT"


@dataclass
class Studies:
    """Three studies of three CT instances each, with the study dates 2004, 2015 and 2020."""

    folder: Path
    uids: list[str]
    files: dict[str, list[Path]]


def _studies(folder: Path) -> Studies:
    uids, files = [], {}
    for number, study_date in enumerate(("20040119", "20150601", "20200302")):
        paths = write_ct_series(folder / f"study{number}", 3)
        for path in paths:
            ds = pydicom.dcmread(path)
            ds.StudyDate = study_date
            ds.save_as(path, enforce_file_format=True)
        uid = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
        uids.append(uid)
        files[uid] = paths
    return Studies(folder, uids, files)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Studies:
    return _studies(tmp_path_factory.mktemp("studies"))


@pytest.fixture(scope="module")
def import_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def orthanc(
    tmp_path_factory: pytest.TempPathFactory, studies: Studies, import_port: int
) -> Iterator[Orthanc]:
    if missing_requirement() is not None:
        pytest.skip(str(missing_requirement()))
    folder = tmp_path_factory.mktemp("orthanc")
    modalities = {"cirrus-import": Modality(IMPORT_AE, import_port)}
    with running_orthanc(folder, modalities, dicomweb=DICOMWEB_PLUGIN.is_file()) as peer:
        for paths in studies.files.values():
            for path in paths:
                peer.upload(path)
        yield peer


def _fresh_stack(tmp_path: Path) -> RunningStack:
    return start_stack(tmp_path / "data")


@pytest.fixture
def target(tmp_path: Path) -> Iterator[RunningStack]:
    stack = _fresh_stack(tmp_path)
    yield stack
    stack.stop()


def _assert_study_imported(stack: RunningStack, studies: Studies, study: str) -> None:
    """Check that QIDO finds each instance of ``study`` and WADO-RS returns its data set."""
    client = DICOMwebClient(url=stack.dicomweb_url)
    found = wait_for_instances(client, study, 3)
    assert len(found) == 3
    for path in studies.files[study]:
        original = pydicom.dcmread(path)
        key = (
            f"sites/default/studies/{study}/series/{original.SeriesInstanceUID}"
            f"/instances/{original.SOPInstanceUID}.dcm"
        )
        part10 = retrieve_when_indexed(stack.dicomweb_url, key)
        retrieved = pydicom.dcmread(pydicom.filebase.DicomBytesIO(part10))
        # A DICOM peer sends the data set; the File Meta Information is the receiver's own.
        # Group lengths (gggg,0000), which a sender may recompute, and Data Set Trailing
        # Padding (FFFC,FFFC), which Orthanc 1.10.1 left out in C-MOVE, are not compared.
        expected = _compared_elements(original)
        received = _compared_elements(retrieved)
        assert sorted(received) == sorted(expected)
        different = [str(tag) for tag, elem in expected.items() if received[tag] != elem]
        assert not different, f"elements differ: {different}"


def _compared_elements(ds: pydicom.Dataset) -> dict[int, pydicom.DataElement]:
    return {elem.tag: elem for elem in ds if elem.tag.element != 0 and elem.tag != 0xFFFCFFFC}


def _dimse_args(orthanc: Orthanc, stack: RunningStack, import_port: int) -> list[str]:
    return [
        "--from-dimse", f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}",
        "--calling-ae", IMPORT_AE, "--port", str(import_port),
        "--data-dir", str(stack.data_dir), "--json",
    ]  # fmt: skip


def test_import_dimse_move(
    orthanc: Orthanc, studies: Studies, target: RunningStack, import_port: int, tmp_path: Path
) -> None:
    require_orthanc()
    report = tmp_path / "report.json"
    study = studies.uids[0]

    result = run_import(*_dimse_args(orthanc, target, import_port), "--study", study,
                        "--report", str(report))  # fmt: skip

    assert result.returncode == 0, result.stderr + result.stdout
    summary = summary_of(result)
    assert summary["totals"]["stored"] == 3
    assert summary["source"] == f"DICOM peer ORTHANC@127.0.0.1:{orthanc.dicom_port} (C-MOVE)"
    entries = json.loads(report.read_text())["entries"]
    sops = {str(pydicom.dcmread(path).SOPInstanceUID) for path in studies.files[study]}
    assert {entry["name"] for entry in entries} == sops
    _assert_study_imported(target, studies, study)

    again = run_import(*_dimse_args(orthanc, target, import_port), "--study", study)
    assert again.returncode == 0, again.stderr
    assert summary_of(again)["totals"]["duplicate"] == 3


def test_import_dimse_get_date_range(
    orthanc: Orthanc, studies: Studies, target: RunningStack, import_port: int
) -> None:
    result = run_import(*_dimse_args(orthanc, target, import_port), "--get",
                        "--since", "2010-01-01", "--until", "2019-12-31")  # fmt: skip

    assert result.returncode == 0, result.stderr + result.stdout
    totals = summary_of(result)["totals"]
    assert totals["stored"] == 3
    _assert_study_imported(target, studies, studies.uids[1])
    client = DICOMwebClient(url=target.dicomweb_url)
    assert client.search_for_instances(study_instance_uid=studies.uids[0]) == []


def test_import_dimse_unknown_calling_ae(
    orthanc: Orthanc, studies: Studies, target: RunningStack
) -> None:
    args = _dimse_args(orthanc, target, free_port())
    args[args.index(IMPORT_AE)] = "NOT-A-MODALITY"

    result = run_import(*args, "--study", studies.uids[2])

    assert result.returncode == 2, result.stdout
    assert "accepts NOT-A-MODALITY as calling AE title" in result.stderr


def test_import_dimse_move_fails(
    orthanc: Orthanc, studies: Studies, target: RunningStack, tmp_path: Path
) -> None:
    # Orthanc's modality STRANGER is at a port where nothing listens, so every sub-operation
    # fails.
    orthanc.add_modality("stranger", Modality("STRANGER", free_port()))
    args = _dimse_args(orthanc, target, free_port())
    args[args.index(IMPORT_AE)] = "STRANGER"
    report = tmp_path / "report.json"

    result = run_import(*args, "--study", studies.uids[2], "--report", str(report))

    assert result.returncode == 1, result.stderr
    [entry] = json.loads(report.read_text())["entries"]
    assert entry["name"] == studies.uids[2]
    assert entry["result"] == "failed"
    assert entry["reason"].startswith("C-MOVE of the study ended with status 0x")
    assert summary_of(result)["totals"]["failed"] == 1


def test_import_dimse_unreachable(target: RunningStack) -> None:
    result = run_import("--from-dimse", f"NOBODY@127.0.0.1:{free_port()}", "--data-dir",
                        str(target.data_dir))  # fmt: skip

    assert result.returncode == 2
    assert "failed" in result.stderr


def test_import_dicomweb_orthanc(orthanc: Orthanc, studies: Studies, target: RunningStack) -> None:
    require_dicomweb_plugin()
    url = orthanc.url + DICOMWEB_ROOT.rstrip("/")

    result = run_import("--from-dicomweb", url, "--data-dir", str(target.data_dir), "--json",
                        "--workers", "2")  # fmt: skip

    assert result.returncode == 0, result.stderr + result.stdout
    assert summary_of(result)["totals"]["stored"] == 9
    for study in studies.uids:
        _assert_study_imported(target, studies, study)


def test_import_dicomweb_cirrus(studies: Studies, target: RunningStack, tmp_path: Path) -> None:
    source = start_stack(tmp_path / "source-data")
    try:
        loaded = run_import(str(studies.folder), "--data-dir", str(source.data_dir))
        assert loaded.returncode == 0, loaded.stderr
        study = studies.uids[2]
        wait_for_instances(DICOMwebClient(url=source.dicomweb_url), study, 3)

        result = run_import("--from-dicomweb", source.dicomweb_url, "--study", study,
                            "--data-dir", str(target.data_dir), "--json")  # fmt: skip

        assert result.returncode == 0, result.stderr + result.stdout
        assert summary_of(result)["totals"]["stored"] == 3
        for path in studies.files[study]:
            ds = pydicom.dcmread(path)
            key = (
                f"sites/default/studies/{study}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}.dcm"
            )
            assert retrieve_when_indexed(target.dicomweb_url, key) == path.read_bytes()
    finally:
        source.stop()


def test_import_dicomweb_unreachable(target: RunningStack) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicomweb"

    result = run_import("--from-dicomweb", url, "--data-dir", str(target.data_dir))

    assert result.returncode == 2
    assert "QIDO-RS search" in result.stderr


def test_import_dicomweb_resumes_inside_study(target: RunningStack, tmp_path: Path) -> None:
    count = 120
    paths = write_ct_series(tmp_path / "study", count)
    study = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    source = start_stack(tmp_path / "source-data")
    try:
        loaded = run_import(str(tmp_path / "study"), "--data-dir", str(source.data_dir))
        assert loaded.returncode == 0, loaded.stderr
        wait_for_instances(DICOMwebClient(url=source.dicomweb_url), study, count)
        checkpoint = tmp_path / "import.ckpt"
        report = tmp_path / "reports" / "first.json"
        args = ["--from-dicomweb", source.dicomweb_url, "--data-dir", str(target.data_dir),
                "--checkpoint", str(checkpoint), "--json"]  # fmt: skip
        process = subprocess.Popen(
            cli_command(*args, "--report", str(report)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The report's entries are spooled beside it as instances are imported.
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            spooled = list(report.parent.glob(".first.json-entries-*"))
            if spooled and spooled[0].stat().st_size > 0:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the import ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)

        assert process.returncode == 130, stderr
        first = json.loads(stdout.splitlines()[-1])["summary"]
        stored_first = first["totals"]["stored"]
        assert 0 < stored_first < count
        saved = json.loads(checkpoint.read_text())
        assert len(saved["partial"][study]) == stored_first

        second = run_import(*args)

        assert second.returncode == 0, second.stderr
        summary = summary_of(second)
        assert summary["totals"]["stored"] == count
        assert summary["totals"]["duplicate"] == 0
        assert summary["this_run"]["stored"] == count - stored_first
        client = DICOMwebClient(url=target.dicomweb_url)
        assert len(wait_for_instances(client, study, count)) == count
    finally:
        source.stop()


def test_import_dimse_get_cirrus_keeps_syntaxes(target: RunningStack, tmp_path: Path) -> None:
    # Explicit VR Little Endian, JPEG 2000 and JPEG Baseline, in one study.
    study = pydicom.uid.generate_uid()
    folder = tmp_path / "syntaxes"
    folder.mkdir()
    originals = []
    for name in ("CT_small.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        ds = pydicom.dcmread(bundled(name))
        ds.StudyInstanceUID = study
        ds.save_as(folder / name, enforce_file_format=True)
        originals.append(ds)
    source = start_stack(tmp_path / "source-data")
    try:
        loaded = run_import(str(folder), "--data-dir", str(source.data_dir))
        assert loaded.returncode == 0, loaded.stderr + loaded.stdout
        wait_for_instances(DICOMwebClient(url=source.dicomweb_url), study, 3)

        peer = f"CIRRUS@127.0.0.1:{source.dicom_port}"
        result = run_import("--from-dimse", peer, "--get", "--study", study,
                            "--data-dir", str(target.data_dir), "--json")  # fmt: skip

        assert result.returncode == 0, result.stderr + result.stdout
        assert summary_of(result)["totals"]["stored"] == 3
        for original in originals:
            key = (
                f"sites/default/studies/{study}/series/{original.SeriesInstanceUID}"
                f"/instances/{original.SOPInstanceUID}.dcm"
            )
            part10 = retrieve_when_indexed(target.dicomweb_url, key)
            retrieved = pydicom.dcmread(pydicom.filebase.DicomBytesIO(part10))
            assert retrieved.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
            assert retrieved.PixelData == original.PixelData
    finally:
        source.stop()
