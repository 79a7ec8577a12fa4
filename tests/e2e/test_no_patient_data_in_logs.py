"""No process of ``cirrus dev`` logs patient data, neither for valid requests nor for failed ones.

``cirrus dev`` runs as a child of the test. It runs the ingest poller and the DICOMweb adapter
itself and starts moto and two gateway worker processes, which all write to its captured
standard output and error. The test stores a study whose demographics appear nowhere else, with
storescu and STOW-RS, queries it with findscu and QIDO-RS, requests the viewer's files with the
demographics in their paths and queries, retrieves it with getscu, movescu and WADO-RS, and
provokes errors whose messages could echo a value. Once the stack has stopped,
no captured line, no audit record and no other file of the data folder may contain the
demographics, the query values, or their hex or base64 forms.

NOTE: the stack logs at INFO level, so DEBUG records are neither produced nor checked.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from cirrus.local.audit_journal import JOURNAL_FILE
from cirrus.local.moto_process import LOCAL_CREDENTIALS, LOOPBACK
from cirrus.local.stack import OBJECTS_FOLDER
from tests.e2e.conftest import STOPPED_LINE, RunningStack, start_stack, wait_for_instances
from tests.gateway.retrieves import StoreSCP, running_storescp
from tests.pydicom_files import bundled

PATIENT_NAME = "Zyxwar^Quilmette"
PATIENT_ID = "PID-83920174"
BIRTH_DATE = "19310217"
# The birth date in ISO 8601 form, which is no valid DA value.
ISO_BIRTH_DATE = "1931-02-17"
ISSUER = "ISS-Vornakel"
OTHER_PATIENT_ID = "OPID-55170342"
ACCESSION = "ACC-61730925"
DEMOGRAPHICS = (PATIENT_NAME, PATIENT_ID, BIRTH_DATE, ISSUER, OTHER_PATIENT_ID, ACCESSION)

# Query values that match the study only in part or not at all. A log must not contain them
# either, because a query value is patient data whether it matches or not.
NAME_PREFIX = "Zyxw*"
ID_PREFIX = "PID-8392*"
MISSPELLED_NAME = "Quilmete"
UNKNOWN_NAME = "Vexlin^Ormsby"
UNKNOWN_ID = "PID-40404040"
REVERSED_RANGE = f"{BIRTH_DATE}-19300101"
IMPOSSIBLE_DATE = "19310231"
QUERY_VALUES = (
    NAME_PREFIX,
    ID_PREFIX,
    MISSPELLED_NAME,
    UNKNOWN_NAME,
    UNKNOWN_ID,
    REVERSED_RANGE,
    IMPOSSIBLE_DATE,
)

# The parts of those values that a log line could show: each name component, the digits of
# each ID, and each date, with the birth date also in ISO 8601 form.
FRAGMENTS = (
    "Zyxw",
    "Quilme",
    "Vexlin",
    "Ormsby",
    "Vornakel",
    "PID-8392",
    "83920174",
    "55170342",
    "61730925",
    "40404040",
    "19310217",
    ISO_BIRTH_DATE,
    "19300101",
    "19310231",
)

CALLING_AE = "LOGTEST"
DESTINATION_AE = "LOGSCP"
GATEWAY_AE = "CIRRUS"
SITE = "default"
TOOL_TIMEOUT_SECONDS = 60


def encoded_forms(value: str) -> list[str]:
    """Return ``value`` in hex and in base64 at each of the three byte alignments.

    Base64 turns each 3 bytes into 4 characters. Text that contains ``value`` at any offset
    therefore encodes to a string that contains one of the three forms. A form of fewer than 8
    characters is left out, because it could match unrelated text.
    """
    data = value.encode()
    forms = [data.hex()]
    for start in range(3):
        chunk = data[start:]
        form = base64.b64encode(chunk[: len(chunk) - len(chunk) % 3]).decode()
        if len(form) >= 8:
            forms.append(form)
    return forms


FORBIDDEN = tuple(
    dict.fromkeys(
        text.lower()
        for text in (
            *FRAGMENTS,
            *(form for value in DEMOGRAPHICS + QUERY_VALUES for form in encoded_forms(value)),
        )
    )
)

# The start of a line of the console format of ``cirrus.logs``: time, level and logger.
RECORD_START = re.compile(r"^\d{2}:\d{2}:\d{2} [A-Z]+ +(?P<logger>\S+): ")


def forbidden_in(text: str) -> list[str]:
    lowered = text.lower()
    return [needle for needle in FORBIDDEN if needle in lowered]


def writer_of(lines: Sequence[str], index: int) -> str:
    """Return the logger of a log record's line, or of the last record before any other line."""
    match = RECORD_START.match(lines[index])
    if match is not None:
        return f"logger {match['logger']}"
    for previous in reversed(lines[:index]):
        match = RECORD_START.match(previous)
        if match is not None:
            # A traceback follows its record, but processes share the output, so the line
            # may also come from another process, such as moto.
            return f"not a log record; the record before it is from logger {match['logger']}"
    return "not a log record, before the first one"


def leaks_in(source: str, lines: Sequence[str]) -> list[str]:
    """Describe each line of ``lines`` that contains a forbidden string, with its writer."""
    leaks = []
    for index, line in enumerate(lines):
        found = forbidden_in(line)
        if found:
            leaks.append(f"{source} line {index + 1} ({writer_of(lines, index)}) {found}: {line}")
    return leaks


def fresh_uid() -> str:
    """Return a new UID that contains none of the searched digit strings."""
    while True:
        uid = generate_uid()
        if not forbidden_in(uid):
            return uid


def make_study() -> list[Dataset]:
    """Return four CT instances of one new study and series, with the distinctive demographics."""
    template = pydicom.dcmread(bundled("CT_small.dcm"))
    template.PatientName = PATIENT_NAME
    template.PatientID = PATIENT_ID
    template.PatientBirthDate = BIRTH_DATE
    template.IssuerOfPatientID = ISSUER
    template.OtherPatientIDs = OTHER_PATIENT_ID
    template.AccessionNumber = ACCESSION
    template.StudyInstanceUID = fresh_uid()
    template.SeriesInstanceUID = fresh_uid()
    instances: list[Dataset] = []
    for number in range(1, 5):
        ds = copy.deepcopy(template)
        ds.SOPInstanceUID = fresh_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = number
        instances.append(ds)
    return instances


def save(ds: Dataset, folder: Path, name: str) -> Path:
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ae_config(folder: Path, destination_port: int) -> Path:
    """Write an AE configuration: one caller with every permission, storescp as destination."""
    path = folder / "ae-config.json"
    site = {
        "callers": {CALLING_AE: ["store", "query", "retrieve"]},
        "destinations": {DESTINATION_AE: {"host": LOOPBACK, "port": destination_port}},
    }
    path.write_text(json.dumps({"sites": {SITE: site}}))
    return path


def run_dcmtk(
    tool: str, options: Sequence[str], port: int, operands: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    command = [tool, "-aet", CALLING_AE, "-aec", GATEWAY_AE, *options, LOOPBACK, str(port)]
    return subprocess.run(
        [*command, *operands],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        env={**os.environ, "TCP_NODELAY": "1"},
        check=False,
    )


def keys(*pairs: str) -> list[str]:
    """Return dcmtk's ``-k`` options for ``pairs`` such as "PatientID=X" or "PatientName"."""
    return [option for pair in pairs for option in ("-k", pair)]


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


def find(port: int, folder: Path, model: str, *pairs: str) -> tuple[int, str]:
    """Run findscu; return how many matches it received and its output."""
    responses = Path(tempfile.mkdtemp(dir=folder, prefix="find-"))
    result = run_dcmtk("findscu", [model, "-v", "-X", "-od", str(responses), *keys(*pairs)], port)
    return len(list(responses.glob("rsp*.dcm"))), output_of(result)


def stow(url: str, part10: bytes) -> requests.Response:
    """POST one Part 10 file to STOW-RS as a multipart/related body."""
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + part10 + b"\r\n--b--"
    return requests.post(
        f"{url}/studies",
        data=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        timeout=TOOL_TIMEOUT_SECONDS,
    )


def store(stack: RunningStack, instances: list[Dataset], folder: Path) -> None:
    """Send three instances with storescu and the fourth with STOW-RS; wait until indexed."""
    paths = [save(ds, folder, f"instance-{index}.dcm") for index, ds in enumerate(instances[:3])]
    sent = run_dcmtk("storescu", [], stack.dicom_port, [str(path) for path in paths])
    assert sent.returncode == 0, output_of(sent)

    client = DICOMwebClient(url=stack.dicomweb_url)
    client.store_instances([instances[3]])
    study = instances[0].StudyInstanceUID
    assert len(wait_for_instances(client, study, 4)) == 4


def query_with_findscu(stack: RunningStack, folder: Path) -> None:
    port = stack.dicom_port
    matching = [
        ("-P", "QueryRetrieveLevel=PATIENT", f"PatientName={PATIENT_NAME}",
         f"PatientID={PATIENT_ID}", "PatientBirthDate"),
        ("-P", "QueryRetrieveLevel=PATIENT", f"PatientName={NAME_PREFIX}", "PatientID"),
        ("-S", "QueryRetrieveLevel=STUDY", f"PatientName={PATIENT_NAME}",
         f"PatientID={PATIENT_ID}", "StudyInstanceUID", "AccessionNumber"),
        ("-S", "QueryRetrieveLevel=STUDY", f"PatientID={ID_PREFIX}", "PatientName",
         f"PatientBirthDate={BIRTH_DATE}"),
    ]  # fmt: skip
    for model, *pairs in matching:
        count, output = find(port, folder, model, *pairs)
        assert count == 1, output

    count, output = find(
        port, folder, "-S", "QueryRetrieveLevel=STUDY", f"PatientName={UNKNOWN_NAME}"
    )
    assert count == 0, output
    assert "Final Find Response (Success)" in output, output

    invalid = [
        # A birth date range that ends before it starts.
        ("Failed: UnableToProcess", "-S", "QueryRetrieveLevel=STUDY",
         f"PatientBirthDate={REVERSED_RANGE}", f"PatientName={PATIENT_NAME}"),
        # PATIENT is no level of the Study Root model.
        ("Error: DataSetDoesNotMatchSOPClass", "-S", "QueryRetrieveLevel=PATIENT",
         f"PatientName={PATIENT_NAME}", f"PatientID={PATIENT_ID}"),
    ]  # fmt: skip
    for status, model, *pairs in invalid:
        count, output = find(port, folder, model, *pairs)
        assert count == 0, output
        assert f"Final Find Response ({status})" in output, output


def query_with_qido(stack: RunningStack, study: str) -> None:
    url = stack.dicomweb_url
    matching: list[tuple[str, dict[str, str]]] = [
        ("studies", {"PatientName": PATIENT_NAME}),
        ("studies", {"PatientID": PATIENT_ID, "includefield": "PatientBirthDate"}),
        ("studies", {"PatientBirthDate": BIRTH_DATE}),
        ("studies", {"PatientName": NAME_PREFIX.lower()}),
        ("studies", {"PatientID": ID_PREFIX}),
        ("studies", {"AccessionNumber": ACCESSION, "PatientBirthDate": f"19300101-{BIRTH_DATE}"}),
        ("series", {"PatientID": PATIENT_ID}),
        ("instances", {"PatientName": PATIENT_NAME, "PatientBirthDate": BIRTH_DATE}),
    ]
    for resource, params in matching:
        response = requests.get(f"{url}/{resource}", params=params, timeout=30)
        assert response.status_code == 200, (resource, params, response.text)
        studies = {item["0020000D"]["Value"][0] for item in response.json()}
        assert studies == {study}, (resource, params)

    client = DICOMwebClient(url=url)
    (found,) = client.search_for_studies(
        search_filters={"PatientName": PATIENT_NAME, "PatientBirthDate": BIRTH_DATE}
    )
    assert found["0020000D"]["Value"] == [study]

    unmatched = [
        {"PatientName": UNKNOWN_NAME},
        {"PatientID": UNKNOWN_ID},
        # Fuzzy matching is ignored with a Warning, so the misspelled name matches nothing.
        {"PatientName": MISSPELLED_NAME, "fuzzymatching": "true"},
    ]
    for params in unmatched:
        response = requests.get(f"{url}/studies", params=params, timeout=30)
        assert response.status_code in (200, 204), (params, response.text)
        assert response.status_code == 204 or response.json() == [], params

    invalid: list[list[tuple[str, str]]] = [
        [("PatientBirthDate", REVERSED_RANGE)],
        [("PatientBirthDate", IMPOSSIBLE_DATE)],
        [("PatientName", PATIENT_NAME), ("PatientName", UNKNOWN_NAME)],
    ]
    for pairs in invalid:
        response = requests.get(f"{url}/studies", params=pairs, timeout=30)
        assert response.status_code == 400, (pairs, response.text)

    # A misspelled keyword is ignored with a Warning header that names the parameter.
    response = requests.get(f"{url}/studies", params={"PatientNam": PATIENT_NAME}, timeout=30)
    assert response.status_code == 200, response.text
    assert "Warning" in response.headers


def request_viewer_files(stack: RunningStack) -> None:
    """Request the viewer's files with demographics in the path and in the query string."""
    base = f"http://{LOOPBACK}:{stack.http_port}"
    query = {"PatientName": PATIENT_NAME, "PatientID": PATIENT_ID}
    paths = ["/", "/config.json", f"/{PATIENT_ID}", f"/assets/{PATIENT_ID}.js",
             f"/%2e%2e/{PATIENT_ID}"]  # fmt: skip
    for path in paths:
        response = requests.get(f"{base}{path}", params=query, timeout=30)
        assert response.status_code in (200, 400, 404), (path, response.status_code)


def retrieve_with_dimse(stack: RunningStack, storescp: StoreSCP, study: str, folder: Path) -> None:
    port = stack.dicom_port
    received = folder / "getscu"
    received.mkdir()
    got = run_dcmtk(
        "getscu",
        [
            "-P",
            "-od",
            str(received),
            *keys("QueryRetrieveLevel=PATIENT", f"PatientID={PATIENT_ID}"),
        ],
        port,
    )
    assert got.returncode == 0, output_of(got)
    assert len(list(received.iterdir())) == 4, output_of(got)

    moved = run_dcmtk(
        "movescu",
        [
            "-P",
            "-aem",
            DESTINATION_AE,
            *keys(
                "QueryRetrieveLevel=STUDY", f"PatientID={PATIENT_ID}", f"StudyInstanceUID={study}"
            ),
        ],
        port,
    )
    assert moved.returncode == 0, output_of(moved)
    assert len(storescp.received()) == 4, output_of(moved)

    # A retrieve takes no wildcards, so this one is rejected before any sub-operation.
    rejected_folder = folder / "getscu-wildcard"
    rejected_folder.mkdir()
    rejected = run_dcmtk(
        "getscu",
        [
            "-P",
            "-od",
            str(rejected_folder),
            *keys("QueryRetrieveLevel=PATIENT", f"PatientID={ID_PREFIX}"),
        ],
        port,
    )
    assert list(rejected_folder.iterdir()) == [], output_of(rejected)


def retrieve_with_wado(stack: RunningStack, instances: list[Dataset]) -> None:
    url = stack.dicomweb_url
    client = DICOMwebClient(url=url)
    first = instances[0]
    study, series, sop = first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID

    retrieved = client.retrieve_instance(study, series, sop)
    assert str(retrieved.PatientName) == PATIENT_NAME
    assert len(client.retrieve_study(study)) == 4
    assert len(client.retrieve_study_metadata(study)) == 4
    assert len(client.retrieve_series_metadata(study, series)) == 4
    metadata = client.retrieve_instance_metadata(study, series, sop)
    assert metadata["00100020"]["Value"] == [PATIENT_ID]

    rendered = requests.get(
        f"{url}/studies/{study}/series/{series}/instances/{sop}/rendered",
        headers={"Accept": "image/png"},
        timeout=30,
    )
    assert rendered.status_code == 200, rendered.text[:500]
    assert rendered.content.startswith(b"\x89PNG")

    missing = requests.get(f"{url}/studies/{fresh_uid()}/metadata", timeout=30)
    assert missing.status_code == 404


def store_conflicts(stack: RunningStack, instances: list[Dataset], folder: Path) -> None:
    """Send the first instance again under another study, and a truncated instance."""
    moved = copy.deepcopy(instances[0])
    moved.StudyInstanceUID = fresh_uid()
    moved_path = save(moved, folder, "moved.dcm")

    sent = run_dcmtk("storescu", [], stack.dicom_port, [str(moved_path)])
    assert sent.returncode != 0, output_of(sent)
    response = stow(stack.dicomweb_url, moved_path.read_bytes())
    assert response.status_code == 409, response.text

    # Cut inside the element after PatientID, so that the parser reads the demographics first.
    whole = save(instances[1], folder, "whole.dcm").read_bytes()
    cut = whole.index(PATIENT_ID.encode()) + len(PATIENT_ID) + 6
    response = stow(stack.dicomweb_url, whole[:cut])
    assert 400 <= response.status_code < 500, response.text


def store_nonconformant(stack: RunningStack, template: Dataset, folder: Path) -> None:
    """Store, find, read and delete an instance whose PatientBirthDate is no valid DA value.

    pydicom 3.0 validates values, for example when it converts a data set to DICOM JSON, and
    its warning quotes an invalid value. A component that did so would print the birth date.
    """
    ds = copy.deepcopy(template)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
        fresh_uid(),
        fresh_uid(),
        fresh_uid(),
    )
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own warning, in this process
        ds.PatientBirthDate = ISO_BIRTH_DATE
    path = save(ds, folder, "nonconformant.dcm")
    sent = run_dcmtk("storescu", [], stack.dicom_port, [str(path)])
    assert sent.returncode == 0, output_of(sent)

    client = DICOMwebClient(url=stack.dicomweb_url)
    assert len(wait_for_instances(client, ds.StudyInstanceUID, 1)) == 1
    (found,) = client.search_for_studies(
        search_filters={"StudyInstanceUID": ds.StudyInstanceUID}, fields=["PatientBirthDate"]
    )
    assert found["0020000D"]["Value"] == [ds.StudyInstanceUID]
    metadata = client.retrieve_instance_metadata(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    assert metadata["00100020"]["Value"] == [PATIENT_ID]

    deleted = requests.delete(f"{stack.dicomweb_url}/studies/{ds.StudyInstanceUID}", timeout=30)
    assert deleted.status_code == 204, deleted.text


def stop_stack(stack: RunningStack) -> int:
    """Stop the stack as Ctrl-C does; kill it if it does not stop, and return its exit code."""
    try:
        return stack.stop()
    except subprocess.TimeoutExpired:
        stack.process.kill()
        stack.process.wait()
        raise


def run_audit(data_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cirrus.cli", "audit", "--data-dir", str(data_dir), *options],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        env={**os.environ, **LOCAL_CREDENTIALS},
        check=False,
    )


def other_data_files(data_dir: Path) -> Iterable[Path]:
    """Yield the files of the data folder that are not archive objects."""
    objects = data_dir / OBJECTS_FOLDER
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and objects not in path.parents:
            yield path


def test_no_patient_data_in_logs(tmp_path: Path) -> None:
    since = datetime.now(UTC)
    instances = make_study()
    study = instances[0].StudyInstanceUID
    data_dir = tmp_path / "data"
    work = tmp_path / "work"
    work.mkdir()

    with running_storescp(tmp_path / "storescp", DESTINATION_AE) as storescp:
        ae_config = write_ae_config(tmp_path, storescp.port)
        stack = start_stack(data_dir, "--ae-config", str(ae_config), "--gateway-workers", "2")
        try:
            store(stack, instances, work)
            query_with_findscu(stack, work)
            query_with_qido(stack, study)
            request_viewer_files(stack)
            retrieve_with_dimse(stack, storescp, study, work)
            retrieve_with_wado(stack, instances)
            store_conflicts(stack, instances, work)
            store_nonconformant(stack, instances[0], work)
        finally:
            exit_code = stop_stack(stack)
    stack.wait_for_output_end()
    lines = stack.lines
    assert exit_code == 0, "\n".join(lines[-40:])

    # Every component wrote to the captured output: both gateway workers, the gateway while it
    # served requests, ingest, DICOMweb, and the stack until it stopped.
    output = "\n".join(lines)
    for expected in ("gateway worker 1 starting", "gateway worker 2 starting", STOPPED_LINE):
        assert expected in output, f"{expected!r} not in the stack's output:\n{output}"
    loggers = {match["logger"] for line in lines if (match := RECORD_START.match(line))}
    for logger in ("cirrus.gateway.store", "cirrus.gateway.find", "cirrus.gateway.retrieve"):
        assert logger in loggers, f"no record of logger {logger} in the stack's output"
    for prefix in ("cirrus.archive", "cirrus.ingest", "cirrus.dicomweb"):
        assert any(logger.startswith(prefix) for logger in loggers), (prefix, loggers)

    by_study = run_audit(data_dir, "--study", study, "--json")
    by_time = run_audit(data_dir, "--since", since.isoformat(), "--json")
    for result in (by_study, by_time):
        assert result.returncode == 0, output_of(result)
    study_actions = {json.loads(line)["action"] for line in by_study.stdout.splitlines()}
    assert {"store", "retrieve"} <= study_actions, by_study.stdout
    all_actions = {json.loads(line)["action"] for line in by_time.stdout.splitlines()}
    assert {"store", "query", "retrieve", "delete"} <= all_actions, by_time.stdout

    leaks = leaks_in("cirrus dev", lines)
    for name, result in (("cirrus audit --study", by_study), ("cirrus audit --since", by_time)):
        leaks += leaks_in(name, result.stdout.splitlines() + result.stderr.splitlines())
    other_files = list(other_data_files(data_dir))
    assert data_dir / JOURNAL_FILE in other_files
    for path in other_files:
        text = path.read_text(errors="replace")
        leaks += leaks_in(str(path.relative_to(data_dir)), text.splitlines())
    assert not leaks, "patient data in logs or audit records:\n" + "\n".join(leaks)
