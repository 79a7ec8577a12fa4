"""Export to a File-set and forwarding with C-STORE, checked with dcmtk, pynetdicom and Orthanc."""

from __future__ import annotations

import io
import re
import subprocess
import zipfile
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE

from cirrus.deid import DateHandling, Deidentifier, ProfileOptions
from cirrus.local.datadir import FolderObjectStore
from cirrus.operations.export import (
    EXPORTED,
    FAILED,
    ExportError,
    InstanceResult,
    export_file_set,
    study_keys,
)
from cirrus.operations.forward import (
    STORED,
    ForwardError,
    ForwardSettings,
    Peer,
    forward_study,
    return_responses_to_sender,
)
from tests.gateway.retrieves import running_pynetdicom_scp, running_storescp
from tests.gateway.scu import wait_until
from tests.peers.orthanc import free_port, require_orthanc, running_orthanc
from tests.pydicom_files import bundled

SITE = "north"
KEY = b"export-test-key-0123456789abcdef"
FAST = ForwardSettings(calling_ae_title="CIRRUSTEST", retries=2, retry_delay=0.01, timeout=10)


def _archive(store: FolderObjectStore, names: list[str], burned_in: int | None = None) -> str:
    """Archive the bundled files ``names`` as one study of one patient; return its UID."""
    study = generate_uid()
    for number, name in enumerate(names):
        ds = pydicom.dcmread(bundled(name))
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName = "EXPORT^PATIENT"
        ds.PatientID = "EXP-4711"
        if number == burned_in:
            ds.BurnedInAnnotation = "YES"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        key = f"sites/{SITE}/studies/{study}/series/{ds.SeriesInstanceUID}/instances/"
        store.put(f"{key}{ds.SOPInstanceUID}.dcm", buffer.getvalue())
    return study


@pytest.fixture
def store(tmp_path: Path) -> FolderObjectStore:
    return FolderObjectStore(tmp_path / "objects", "archive")


def _archived_bytes(store: FolderObjectStore, study: str) -> dict[str, bytes]:
    """Return the archived instances of ``study`` by SOP Instance UID."""
    found = {}
    for stored in store.list_keys(f"sites/{SITE}/studies/{study}/"):
        found[stored.key.rsplit("/", 1)[1].removesuffix(".dcm")] = store.get(stored.key)
    return found


def _check_dicomdir(root: Path) -> list[Path]:
    """Check the DICOMDIR with dcmtk and return the files that its records reference."""
    dump = subprocess.run(
        ["dcmdump", "-q", str(root / "DICOMDIR")], capture_output=True, text=True, check=False
    )
    assert dump.returncode == 0, dump.stderr
    assert "MediaStorageDirectoryStorage" in dump.stdout
    referenced = re.findall(r"\(0004,1500\) CS \[([^\]]+)\]", dump.stdout)
    assert referenced
    paths = [root.joinpath(*name.split("\\")) for name in referenced]

    for path in paths:
        test = subprocess.run(["dcmftest", str(path)], capture_output=True, text=True, check=False)
        assert test.stdout.startswith("yes:"), test.stdout

    # dcmmkdir builds its own DICOMDIR of the same files; it rejects file IDs or files that a
    # General Purpose File-set may not contain. -Nxc admits compressed transfer syntaxes.
    dcmtk_dicomdir = root.parent / f"{root.name}-dcmmkdir"
    mkdir_result = subprocess.run(
        [
            "dcmmkdir",
            "-Nxc",
            "+I",
            "+D",
            str(dcmtk_dicomdir),
            *[n.replace("\\", "/") for n in referenced],
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert mkdir_result.returncode == 0, mkdir_result.stderr
    dcmtk_dump = subprocess.run(
        ["dcmdump", "-q", str(dcmtk_dicomdir)], capture_output=True, text=True, check=False
    )
    dcmtk_referenced = re.findall(r"\(0004,1500\) CS \[([^\]]+)\]", dcmtk_dump.stdout)
    assert sorted(dcmtk_referenced) == sorted(referenced)
    return paths


def test_file_set_is_archived_bytes(store: FolderObjectStore, tmp_path: Path) -> None:
    study = _archive(store, ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"])
    results: list[InstanceResult] = []
    counts = export_file_set(store, SITE, study, tmp_path / "out", None, results.append)
    assert counts == {EXPORTED: 3, FAILED: 0}
    files = _check_dicomdir(tmp_path / "out")
    assert len(files) == 3
    archived = set(_archived_bytes(store, study).values())
    assert {path.read_bytes() for path in files} == archived


def test_zip_file_set(store: FolderObjectStore, tmp_path: Path) -> None:
    study = _archive(store, ["CT_small.dcm", "MR_small.dcm"])
    destination = tmp_path / "study.zip"
    counts = export_file_set(store, SITE, study, destination, None, lambda r: None)
    assert counts[EXPORTED] == 2
    assert not destination.with_name("study.zip.partial").exists()
    with zipfile.ZipFile(destination) as archive:
        assert "DICOMDIR" in archive.namelist()
        archive.extractall(tmp_path / "unzipped")
    files = _check_dicomdir(tmp_path / "unzipped")
    assert {path.read_bytes() for path in files} == set(_archived_bytes(store, study).values())


def test_deidentified_file_set(store: FolderObjectStore, tmp_path: Path) -> None:
    study = _archive(store, ["CT_small.dcm", "MR_small.dcm"])
    deidentifier = Deidentifier(ProfileOptions(dates=DateHandling.SHIFT), KEY)
    counts = export_file_set(store, SITE, study, tmp_path / "out", deidentifier, lambda r: None)
    assert counts[EXPORTED] == 2
    files = _check_dicomdir(tmp_path / "out")
    for path in [*files, tmp_path / "out" / "DICOMDIR"]:
        content = path.read_bytes()
        assert b"EXPORT^PATIENT" not in content
        assert b"EXP-4711" not in content
        assert study.encode() not in content
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.StudyInstanceUID == deidentifier.replace_uid(study)
        assert ds.PatientID == deidentifier.patient_pseudonym("EXP-4711")


def test_rejected_instance_reported(store: FolderObjectStore, tmp_path: Path) -> None:
    study = _archive(store, ["CT_small.dcm", "MR_small.dcm"], burned_in=0)
    results: list[InstanceResult] = []
    deidentifier = Deidentifier(key=KEY)
    counts = export_file_set(store, SITE, study, tmp_path / "out", deidentifier, results.append)
    assert counts == {EXPORTED: 1, FAILED: 1}
    failed = [r for r in results if r.result == FAILED]
    assert "Burned In Annotation" in failed[0].detail
    assert len(_check_dicomdir(tmp_path / "out")) == 1


def test_instance_deleted_during_export(store: FolderObjectStore, tmp_path: Path) -> None:
    study = _archive(store, ["CT_small.dcm", "MR_small.dcm"])
    first_key = next(iter(store.list_keys(f"sites/{SITE}/studies/{study}/"))).key
    original_get = store.get

    def get_and_delete(key: str) -> bytes:
        if key == first_key:
            store.delete([key])
        return original_get(key)

    store.get = get_and_delete  # type: ignore[method-assign]
    results: list[InstanceResult] = []
    counts = export_file_set(store, SITE, study, tmp_path / "out", None, results.append)
    assert counts == {EXPORTED: 1, FAILED: 1}
    assert results[0].detail == "deleted while the export ran"
    assert len(_check_dicomdir(tmp_path / "out")) == 1


def test_unknown_study_rejected(store: FolderObjectStore, tmp_path: Path) -> None:
    _archive(store, ["CT_small.dcm"])
    with pytest.raises(ExportError, match="not found in site 'north'"):
        export_file_set(store, SITE, "1.2.3.999", tmp_path / "out", None, lambda r: None)


def test_other_site_not_read(store: FolderObjectStore, tmp_path: Path) -> None:
    study = _archive(store, ["CT_small.dcm"])
    with pytest.raises(ExportError, match="not found in site 'south'"):
        export_file_set(store, "south", study, tmp_path / "out", None, lambda r: None)


def test_non_empty_folder_rejected(store: FolderObjectStore, tmp_path: Path) -> None:
    study = _archive(store, ["CT_small.dcm"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_file_set(store, SITE, study, tmp_path / "out", None, lambda r: None)
    assert (tmp_path / "out" / "notes.txt").read_text() == "keep me"


def test_peer_parse() -> None:
    assert Peer.parse("PACS@127.0.0.1:104") == Peer("PACS", "127.0.0.1", 104)
    for text in ("PACS@127.0.0.1", "127.0.0.1:104", "PACS@127.0.0.1:70000", "@h:1"):
        with pytest.raises(ValueError, match="invalid"):
            Peer.parse(text)


def test_peer_parse_ipv6() -> None:
    peer = Peer.parse("READER@[::1]:11860")
    assert peer == Peer("READER", "::1", 11860)
    assert str(peer) == "READER@[::1]:11860"
    assert Peer.parse("READER@[fd00:0::5]:104").host == "fd00::5"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("READER@::1:11860", r"write an IPv6 address in brackets, such as PACS@\[::1\]:104"),
        ("READER@[::g]:104", "host \\[::g\\] of peer .* is not a valid IPv6 address"),
        ("A_TITLE_OF_17_CHR@127.0.0.1:104", "AE title 'A_TITLE_OF_17_CHR' is invalid; use 1 to 16"),
        ("PACS@127.0.0.1:http", "port 'http' of peer .* is invalid; use 1 to 65535"),
        ("PACS@127.0.0.1:0", "port '0' of peer"),
        ("PACS-127.0.0.1:104", "give AE@HOST:PORT"),
    ],
)
def test_peer_parse_names_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Peer.parse(text)


def test_forward_to_storescp(store: FolderObjectStore, tmp_path: Path) -> None:
    study = _archive(store, ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"])
    archived = _archived_bytes(store, study)
    with running_storescp(tmp_path / "scp", "STORESCP") as scp:
        peer = Peer("STORESCP", "127.0.0.1", scp.port)
        counts = forward_study(store, SITE, study, peer, None, FAST, lambda r: None)
        received = sorted(
            p for p in scp.folder.iterdir() if p.is_file() and not p.name.startswith(".")
        )
    assert counts[STORED] == 3
    assert counts[FAILED] == 0
    by_uid = {pydicom.dcmread(path).SOPInstanceUID: path for path in received}
    assert set(by_uid) == set(archived)
    for uid, path in by_uid.items():
        sent = pydicom.dcmread(io.BytesIO(archived[uid]))
        got = pydicom.dcmread(path)
        assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert got.PixelData == sent.PixelData
        assert got.PatientName == "EXPORT^PATIENT"


def test_forward_deidentified_to_storescp(store: FolderObjectStore, tmp_path: Path) -> None:
    study = _archive(store, ["CT_small.dcm", "MR_small.dcm"])
    deidentifier = Deidentifier(key=KEY)
    with running_storescp(tmp_path / "scp", "STORESCP") as scp:
        peer = Peer("STORESCP", "127.0.0.1", scp.port)
        counts = forward_study(store, SITE, study, peer, deidentifier, FAST, lambda r: None)
        received = sorted(
            p for p in scp.folder.iterdir() if p.is_file() and not p.name.startswith(".")
        )
    assert counts[STORED] == 2
    for path in received:
        content = path.read_bytes()
        assert b"EXPORT^PATIENT" not in content
        assert b"EXP-4711" not in content
        assert pydicom.dcmread(path).StudyInstanceUID == deidentifier.replace_uid(study)


def test_forward_retries_out_of_resources(store: FolderObjectStore) -> None:
    study = _archive(store, ["CT_small.dcm", "MR_small.dcm"])
    answers: dict[str, int] = {}

    def answer(ds: pydicom.Dataset) -> int:
        answers[ds.SOPInstanceUID] = answers.get(ds.SOPInstanceUID, 0) + 1
        return 0xA700 if answers[ds.SOPInstanceUID] == 1 else 0x0000

    with running_pynetdicom_scp("FLAKY", ["1.2.840.10008.1.2.1"], answer) as scp:
        peer = Peer("FLAKY", "127.0.0.1", scp.port)
        results: list[InstanceResult] = []
        counts = forward_study(store, SITE, study, peer, None, FAST, results.append)
    assert counts[STORED] == 2
    assert counts[FAILED] == 0
    assert sorted(answers.values()) == [2, 2]


def test_forward_gives_up_after_retries(store: FolderObjectStore) -> None:
    study = _archive(store, ["CT_small.dcm"])
    with running_pynetdicom_scp("FULL", ["1.2.840.10008.1.2.1"], lambda ds: 0xA700) as scp:
        peer = Peer("FULL", "127.0.0.1", scp.port)
        results: list[InstanceResult] = []
        counts = forward_study(store, SITE, study, peer, None, FAST, results.append)
    assert counts[FAILED] == 1
    assert results[0].detail == "status 0xA700 after 3 tries"
    assert len(scp.received) == 3


def test_forward_permanent_failure_not_retried(store: FolderObjectStore) -> None:
    study = _archive(store, ["CT_small.dcm", "MR_small.dcm"])
    with running_pynetdicom_scp("STRICT", ["1.2.840.10008.1.2.1"], lambda ds: 0xC000) as scp:
        peer = Peer("STRICT", "127.0.0.1", scp.port)
        results: list[InstanceResult] = []
        counts = forward_study(store, SITE, study, peer, None, FAST, results.append)
    assert counts[FAILED] == 2
    assert all(r.detail.startswith("status 0xC000") for r in results)
    assert len(scp.received) == 2


def test_forward_rejected_context_fails_instance(store: FolderObjectStore) -> None:
    study = _archive(store, ["CT_small.dcm", "JPEG2000.dcm"])
    # The SCP accepts only Explicit VR Little Endian, so the JPEG 2000 instance has no context.
    with running_pynetdicom_scp("PLAIN", ["1.2.840.10008.1.2.1"]) as scp:
        peer = Peer("PLAIN", "127.0.0.1", scp.port)
        results: list[InstanceResult] = []
        counts = forward_study(store, SITE, study, peer, None, FAST, results.append)
    assert counts[STORED] == 1
    assert counts[FAILED] == 1


def test_forward_rejected_association(store: FolderObjectStore) -> None:
    study = _archive(store, ["CT_small.dcm"])
    ae = AE("EXPECTED")
    ae.require_called_aet = True
    ae.add_supported_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        peer = Peer("SOMEONE", "127.0.0.1", int(server.server_address[1]))
        rejected = r"SOMEONE@127\.0\.0\.1:[0-9]+ rejected the association"
        with pytest.raises(ForwardError, match=rejected):
            forward_study(store, SITE, study, peer, None, FAST, lambda r: None)
    finally:
        server.shutdown()


def test_reactor_returns_store_response() -> None:
    # The race that this hook handles cannot be forced, so the hook is called as the reactor
    # thread would call it after taking a C-STORE response off the DIMSE queue.
    with running_pynetdicom_scp("HOOK", ["1.2.840.10008.1.2.1"]) as scp:
        ae = AE("CIRRUSTEST")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="HOOK")
        assert assoc.is_established
        try:
            assoc._reactor_checkpoint.clear()
            assert wait_until(lambda: assoc._is_paused)
            return_responses_to_sender(assoc)
            response = C_STORE()
            response.MessageIDBeingRespondedTo = 7
            response.Status = 0x0000
            response.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            response.AffectedSOPInstanceUID = generate_uid()
            assoc._serve_request(response, 1)
            assert assoc.dimse.msg_queue.get_nowait() == (1, response)
        finally:
            assoc._reactor_checkpoint.set()
            assoc.release()


def test_forward_unreachable_peer(store: FolderObjectStore) -> None:
    study = _archive(store, ["CT_small.dcm"])
    peer = Peer("NOBODY", "127.0.0.1", free_port())
    with pytest.raises(ForwardError, match="no association"):
        forward_study(store, SITE, study, peer, None, FAST, lambda r: None)


def test_forward_to_orthanc(store: FolderObjectStore, tmp_path: Path) -> None:
    require_orthanc()
    study = _archive(store, ["CT_small.dcm", "MR_small.dcm"])
    deidentifier = Deidentifier(ProfileOptions(retain_uids=False), KEY)
    with running_orthanc(tmp_path / "orthanc", ae_title="ORTHANC") as orthanc:
        peer = Peer("ORTHANC", "127.0.0.1", orthanc.dicom_port)
        plain = forward_study(store, SITE, study, peer, None, FAST, lambda r: None)
        deidentified = forward_study(store, SITE, study, peer, deidentifier, FAST, lambda r: None)
        uids = orthanc.instance_uids()
        patients = orthanc.rest("GET", "/patients?expand")
    archived = set(_archived_bytes(store, study))
    assert plain[STORED] == 2
    assert deidentified[STORED] == 2
    assert archived <= uids
    assert len(uids - archived) == 2
    names = {p["MainDicomTags"].get("PatientName") for p in patients}
    assert names == {"EXPORT^PATIENT", deidentifier.patient_pseudonym("EXP-4711")}


@pytest.mark.parametrize("study", ["not a uid", "1" * 65, "1.2/3"])
def test_invalid_study_uid_message(store: FolderObjectStore, study: str) -> None:
    with pytest.raises(ExportError, match=r"give at most 64 digits and '\.'") as info:
        study_keys(store, SITE, study)
    assert "letters" not in str(info.value)


@pytest.mark.parametrize("destination", ["/proc/cirrus-export.zip", "/proc/cirrus-export/study"])
def test_unwritable_destination_rejected(store: FolderObjectStore, destination: str) -> None:
    study = _archive(store, ["CT_small.dcm"])
    results: list[InstanceResult] = []
    with pytest.raises(ExportError, match="cannot write in folder /proc"):
        export_file_set(store, SITE, study, Path(destination), None, results.append)
    assert results == []


def test_records_invent_content_date(store: FolderObjectStore, tmp_path: Path) -> None:
    study = generate_uid()
    raw = pydicom.dcmread(bundled("CT_small.dcm"))
    del raw.PixelData
    raw.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66"  # Raw Data Storage
    report = pydicom.dcmread(bundled("test-SR.dcm"))
    for ds in (raw, report):
        ds.StudyInstanceUID = study
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        for keyword in ("ContentDate", "ContentTime"):
            if keyword in ds:
                delattr(ds, keyword)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        key = f"sites/{SITE}/studies/{study}/series/{ds.SeriesInstanceUID}/instances/"
        store.put(f"{key}{ds.SOPInstanceUID}.dcm", buffer.getvalue())
    results: list[InstanceResult] = []
    counts = export_file_set(store, SITE, study, tmp_path / "out", None, results.append)
    assert counts == {EXPORTED: 2, FAILED: 0}, [r.detail for r in results]
    dicomdir = pydicom.dcmread(tmp_path / "out" / "DICOMDIR")
    records = {
        str(record.DirectoryRecordType): record
        for record in dicomdir.DirectoryRecordSequence
        if record.DirectoryRecordType in ("RAW DATA", "SR DOCUMENT")
    }
    assert sorted(records) == ["RAW DATA", "SR DOCUMENT"]
    for record in records.values():
        assert record.ContentDate == "19000101"
        assert record.ContentTime == "000000"
    files = [path for path in (tmp_path / "out").rglob("*") if path.name != "DICOMDIR"]
    instances = [path for path in files if path.is_file()]
    assert len(instances) == 2
    for path in instances:
        assert "ContentDate" not in pydicom.dcmread(path)
