"""DELETE of a whole study on ``cirrus dev``: seconds and instances per second.

Stores one series of small synthetic CT instances (64x64, 16 bit) with STOW-RS, waits until
QIDO lists them all, then times ``DELETE /studies/{study}`` and checks that the study is gone.
Each repetition uses a new study on the same stack.

    .venv/bin/python bench/delete.py --instances 100 300 --repeat 3

Everything listens on 127.0.0.1; the stack runs under this process and stops with SIGINT.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cirrus.dicomweb.multipart import Part, build_multipart_related
from tests.e2e.conftest import start_stack

# Instances per STOW-RS request, small enough for the local payload limit.
STOW_BATCH = 100


def synthetic_instances(count: int) -> tuple[str, list[bytes]]:
    """Return a new study UID and ``count`` Part 10 CT instances of one series in it."""
    study, series = generate_uid(), generate_uid()
    pixels = np.random.default_rng(1).integers(0, 4000, size=(64, 64), dtype=np.uint16)
    instances = []
    for number in range(1, count + 1):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID = "BENCH^DELETE", "BENCH-DELETE"
        ds.Modality, ds.InstanceNumber = "CT", number
        ds.Rows = ds.Columns = 64
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        with BytesIO() as buffer:
            dcmwrite(buffer, ds, enforce_file_format=True)
            instances.append(buffer.getvalue())
    return study, instances


def store(url: str, instances: list[bytes]) -> None:
    for start in range(0, len(instances), STOW_BATCH):
        batch = instances[start : start + STOW_BATCH]
        parts = [Part(body, content_type="application/dicom") for body in batch]
        body, content_type = build_multipart_related(parts, "application/dicom")
        response = requests.post(
            f"{url}/studies", data=body, headers={"Content-Type": content_type}, timeout=300
        )
        response.raise_for_status()


def wait_indexed(url: str, study: str, count: int, timeout: float = 300) -> None:
    client = DICOMwebClient(url=url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        matches = client.search_for_studies(search_filters={"StudyInstanceUID": study})
        if matches and matches[0]["00201208"]["Value"][0] == count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"study {study} did not reach {count} indexed instances")


def time_delete(url: str, count: int) -> float:
    study, instances = synthetic_instances(count)
    store(url, instances)
    wait_indexed(url, study, count)
    started = time.perf_counter()
    response = requests.delete(f"{url}/studies/{study}", timeout=600)
    elapsed = time.perf_counter() - started
    if response.status_code != 204:
        raise RuntimeError(f"DELETE returned {response.status_code}: {response.text}")
    if requests.get(f"{url}/studies/{study}/metadata", timeout=60).status_code != 404:
        raise RuntimeError(f"study {study} is still retrievable after DELETE")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        stack = start_stack(Path(folder) / "data")
        try:
            print("| instances | DELETE, s (median) | instances/s |")
            print("| --- | --- | --- |")
            for count in options.instances:
                seconds = statistics.median(
                    time_delete(stack.dicomweb_url, count) for _ in range(options.repeat)
                )
                print(f"| {count} | {seconds:.2f} | {count / seconds:.0f} |")
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
