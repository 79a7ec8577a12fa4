"""Events and the change feed of ``cirrus dev`` in a child process, with dcmtk and HTTP clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from cirrus.dicomweb.multipart import Part, build_multipart_related
from tests.e2e.conftest import RunningStack, start_stack
from tests.e2e.test_delete_restart import _store
from tests.e2e.test_operations_cli import _datasets
from tests.gateway.scu import run_dcmtk, storescu
from tests.pydicom_files import bundled

pytestmark = pytest.mark.timeout(300)

QUIET_SECONDS = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(
        tmp_path_factory.mktemp("cirrus-events"), "--stable-after", str(QUIET_SECONDS)
    )
    yield running
    running.stop()


def _cli(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cirrus.cli", *args, "--data-dir", str(stack.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _events(stack: RunningStack, *options: str) -> list[dict[str, Any]]:
    result = _cli(stack, "events", "--json", *options)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _wait_for_event(
    stack: RunningStack, detail_type: str, uid: str, timeout: float = 60
) -> list[dict[str, Any]]:
    """Return the whole journal once it has an event of ``detail_type`` naming ``uid``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = _events(stack)
        if any(e["detail-type"] == detail_type and uid in json.dumps(e) for e in events):
            return events
        time.sleep(0.5)
    raise AssertionError(f"no {detail_type} event for {uid} within {timeout} s")


def _changes(stack: RunningStack, since: int = 0) -> list[dict[str, Any]]:
    result = _cli(stack, "changes", "--json", "--since", str(since))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _study_files(folder: Path, count: int) -> tuple[str, list[Path]]:
    datasets = _datasets(count)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return datasets[0].StudyInstanceUID, paths


def _page(stack: RunningStack, since: int, limit: int) -> dict[str, Any]:
    response = requests.get(
        f"{stack.dicomweb_url}/changes", params={"since": since, "limit": limit}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def _read_all(stack: RunningStack, since: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Page through the feed from ``since`` as a consumer does; return the changes and cursor."""
    changes: list[dict[str, Any]] = []
    cursor = since
    for _ in range(1000):
        page = _page(stack, cursor, limit)
        changes += page["changes"]
        assert page["cursor"] >= cursor
        cursor = page["cursor"]
        if not page["more"]:
            break
    return changes, cursor


def test_storescu_then_study_stable(stack: RunningStack, tmp_path: Path) -> None:
    study, paths = _study_files(tmp_path, 2)
    storescu(stack.dicom_port, *paths)
    events = _wait_for_event(stack, "StudyStable", study)
    of_study = [e for e in events if e["detail"].get("StudyInstanceUID") == study]
    types = [e["detail-type"] for e in of_study]
    assert types == ["InstanceStored", "InstanceStored", "StudyStable"]
    stable = of_study[-1]["detail"]
    assert stable["instances"] == 2
    assert stable["series"] == 1
    assert stable["ModalitiesInStudy"] == ["CT"]
    assert stable["quietSeconds"] == QUIET_SECONDS
    assert stable["site"] == "default"
    filtered = _events(stack, "--type", "StudyStable", "--site", "default")
    assert {e["detail-type"] for e in filtered} == {"StudyStable"}
    assert _events(stack, "--site", "elsewhere") == []


def test_delete_shows_event_and_change(stack: RunningStack) -> None:
    datasets = _datasets(2)
    _store(stack, datasets)
    study, series = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
    sop = datasets[0].SOPInstanceUID
    _wait_for_event(stack, "InstanceStored", sop)
    response = requests.delete(
        f"{stack.dicomweb_url}/studies/{study}/series/{series}/instances/{sop}", timeout=30
    )
    assert response.status_code == 204
    events = _wait_for_event(stack, "InstanceDeleted", sop)
    deleted = [e for e in events if e["detail-type"] == "InstanceDeleted"]
    assert [e["detail"]["SOPInstanceUID"] for e in deleted if sop in json.dumps(e)] == [sop]
    actions = [c["action"] for c in _changes(stack) if c["SOPInstanceUID"] == sop]
    assert actions == ["stored", "deleted"]


def test_rejected_cstore_event(stack: RunningStack, tmp_path: Path) -> None:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    del ds.PixelData
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "no-pixels.dcm"
    ds.save_as(path, enforce_file_format=True)
    run_dcmtk("storescu", "-aec", "CIRRUS", "127.0.0.1", str(stack.dicom_port), str(path))
    events = _wait_for_event(stack, "InstanceRejected", ds.SOPInstanceUID)
    rejected = [e["detail"] for e in events if ds.SOPInstanceUID in json.dumps(e)]
    assert len(rejected) == 1
    assert rejected[0]["transport"] == "DIMSE"
    assert rejected[0]["status"] == "0xA900"
    assert "Pixel Data" in rejected[0]["reason"]
    assert all(
        e["detail-type"] != "InstanceStored" for e in events if ds.SOPInstanceUID in json.dumps(e)
    )


def test_changes_page_over_http(stack: RunningStack) -> None:
    _store(stack, _datasets(3))
    time.sleep(1)
    changes, cursor = _read_all(stack, 0, limit=1)
    sequences = [c["sequence"] for c in changes]
    assert sequences == sorted(set(sequences))
    assert cursor == sequences[-1]
    from_cli = [c["sequence"] for c in _changes(stack)]
    assert from_cli[: len(sequences)] == sequences
    for query in ("since=-1", "since=x", "limit=0", "limit=5000"):
        response = requests.get(f"{stack.dicomweb_url}/changes?{query}", timeout=30)
        assert response.status_code == 400, query


def test_consumer_catches_up(stack: RunningStack) -> None:
    _, cursor = _read_all(stack, 0, limit=100)
    datasets = _datasets(4)
    _store(stack, datasets)  # the consumer is down meanwhile
    for ds in datasets:
        _wait_for_event(stack, "InstanceStored", ds.SOPInstanceUID)
    missed, _ = _read_all(stack, cursor, limit=3)
    stored = [c["SOPInstanceUID"] for c in missed if c["action"] == "stored"]
    assert sorted(stored) == sorted(ds.SOPInstanceUID for ds in datasets)
    sequences = [c["sequence"] for c in missed]
    assert sequences == sorted(set(sequences))
    assert all(sequence > cursor for sequence in sequences)
    result = _cli(stack, "changes", "--json", "--since", str(cursor))
    assert [json.loads(line)["sequence"] for line in result.stdout.splitlines()] == sequences
    assert f"--since {sequences[-1]}" in result.stderr


def test_events_follow_prints_new_events(stack: RunningStack) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "cirrus.cli", "events", "--follow", "--json",
         "--type", "InstanceStored", "--data-dir", str(stack.data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        datasets = _datasets(1)
        _store(stack, datasets)
        assert process.stdout is not None
        sop = datasets[0].SOPInstanceUID
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if sop in line:
                break
        else:
            raise AssertionError("cirrus events --follow did not print the new event")
        assert json.loads(line)["detail-type"] == "InstanceStored"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def test_rejected_stow_part_event(stack: RunningStack) -> None:
    [ds] = _datasets(1)
    del ds.PixelData
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    body, content_type = build_multipart_related(
        [Part(buffer.getvalue(), content_type="application/dicom")], "application/dicom"
    )
    response = requests.post(
        f"{stack.dicomweb_url}/studies",
        data=body,
        headers={"Content-Type": content_type},
        timeout=30,
    )
    assert response.status_code == 409
    events = _wait_for_event(stack, "InstanceRejected", ds.SOPInstanceUID)
    [rejected] = [e["detail"] for e in events if ds.SOPInstanceUID in json.dumps(e)]
    assert rejected["transport"] == "STOW-RS"
    assert rejected["status"] == "0xA900"
    assert rejected["site"] == "default"


def test_changes_cursor_ahead_rejected(stack: RunningStack) -> None:
    _, cursor = _read_all(stack, 0, limit=1000)
    ahead = cursor + 5000
    response = requests.get(f"{stack.dicomweb_url}/changes?since={ahead}", timeout=30)
    assert response.status_code == 400
    assert f"cursor {ahead} is above the last number" in response.text
    result = _cli(stack, "changes", "--since", str(ahead))
    assert result.returncode == 2
    assert f"cursor {ahead} is above the last number" in result.stderr
    assert "Traceback" not in result.stderr


def _without_study(ds: pydicom.Dataset) -> bytes:
    del ds.StudyInstanceUID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_rejection_names_series_without_study(stack: RunningStack, tmp_path: Path) -> None:
    [stow_ds, cstore_ds] = _datasets(2)
    body, content_type = build_multipart_related(
        [Part(_without_study(stow_ds), content_type="application/dicom")], "application/dicom"
    )
    response = requests.post(
        f"{stack.dicomweb_url}/studies",
        data=body,
        headers={"Content-Type": content_type},
        timeout=30,
    )
    assert response.status_code == 409
    path = tmp_path / "no-study.dcm"
    path.write_bytes(_without_study(cstore_ds))
    run_dcmtk("storescu", "-aec", "CIRRUS", "127.0.0.1", str(stack.dicom_port), str(path))
    for ds, transport in ((stow_ds, "STOW-RS"), (cstore_ds, "DIMSE")):
        events = _wait_for_event(stack, "InstanceRejected", ds.SOPInstanceUID)
        [rejected] = [e["detail"] for e in events if ds.SOPInstanceUID in json.dumps(e)]
        assert rejected["transport"] == transport
        assert rejected["SeriesInstanceUID"] == ds.SeriesInstanceUID
        assert rejected["StudyInstanceUID"] is None


def test_raw_utf8_query_decoded(stack: RunningStack) -> None:
    url = urlsplit(stack.dicomweb_url)
    request = (
        f"GET {url.path}/changes?since=".encode()
        + "١٢".encode()
        + f" HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n\r\n".encode()
    )
    with socket.create_connection((url.hostname, url.port), timeout=30) as connection:
        connection.sendall(request)
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert "since='١٢'" in json.dumps(json.loads(body), ensure_ascii=False)
