"""Helpers of the ``cirrus import`` tests: generated instances, the CLI, WADO-RS as bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pydicom
import requests
from pydicom.uid import generate_uid

from cirrus.storage.keys import InstanceKey
from tests.pydicom_files import bundled

# Requests the stored bytes: without transfer-syntax=* the server may decode them.
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cirrus.cli", "import", *args]


def run_import(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """Return the summary line that ``--json`` prints last."""
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines, f"no output; stderr: {result.stderr}"
    summary: dict[str, Any] = lines[-1]["summary"]
    return summary


def write_ct_series(folder: Path, count: int, study: str | None = None) -> list[Path]:
    """Write ``count`` CT instances of one new series (of ``study`` or a new one) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    study = study or generate_uid()
    series = generate_uid()
    paths = []
    for number in range(count):
        ds = pydicom.dcmread(bundled("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = number + 1
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"ct{number:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def retrieve_part10(dicomweb_url: str, key: str) -> bytes | None:
    """Return the instance of object ``key`` as WADO-RS sends it, or None when it is not found."""
    instance = InstanceKey.parse(key)
    response = requests.get(
        f"{dicomweb_url}/studies/{instance.study}/series/{instance.series}"
        f"/instances/{instance.sop}",
        headers={"Accept": AS_STORED},
        timeout=60,
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    [part] = split_multipart(response)
    return part


def retrieve_when_indexed(dicomweb_url: str, key: str, timeout: float = 30) -> bytes:
    """Return the instance of object ``key`` once ingest has indexed it; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        retrieved = retrieve_part10(dicomweb_url, key)
        if retrieved is not None:
            return retrieved
        assert time.monotonic() < deadline, f"{key} not retrievable after {timeout} s"
        time.sleep(0.2)


def split_multipart(response: requests.Response) -> list[bytes]:
    """Return the bodies of the parts of a multipart/related response."""
    content_type = response.headers["Content-Type"]
    boundary = next(
        item.split("=", 1)[1].strip('"')
        for item in content_type.split(";")
        if item.strip().startswith("boundary=")
    )
    delimiter = b"--" + boundary.encode()
    parts = []
    for chunk in response.content.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        _headers, _blank, body = chunk.partition(b"\r\n\r\n")
        parts.append(body.removesuffix(b"\r\n"))
    return parts
