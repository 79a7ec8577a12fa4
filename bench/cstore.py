"""C-STORE ingest into the local stack, against dcmtk's storescp, measured in one run.

Generates synthetic CT instances (512x512, 16 bit, explicit VR little endian), sends them with
storescu to ``cirrus dev``'s gateway and to storescp (raw receive to disk), and prints the
median instances per second of each over the repetitions and their ratio. For Cirrus it also
measures the time from the C-STORE acknowledgement of the last instance until QIDO lists all.

    .venv/bin/python bench/cstore.py --instances 200 --repeat 3

Everything listens on 127.0.0.1; storescp runs under this process and is stopped by its PID.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.conftest import start_stack

ENV = {**os.environ, "TCP_NODELAY": "1"}


def synthetic_series(folder: Path, count: int, patient_id: str) -> tuple[str, list[Path]]:
    """Write ``count`` CT instances of one series; return the study UID and the paths."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(1)
    pixels = rng.integers(-1000, 2000, size=(512, 512), dtype=np.int16)
    paths = []
    for number in range(1, count + 1):
        ds = synthetic_ct(study, series, frame, number, patient_id, pixels)
        path = folder / f"{number:05d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return study, paths


def synthetic_ct(
    study: str, series: str, frame: str, number: int, patient_id: str, pixels: np.ndarray
) -> Dataset:
    """Return CT instance ``number`` of a series, with the 16-bit signed image ``pixels``."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.PatientName, ds.PatientID = "BENCH^CSTORE", patient_id
    ds.StudyDate, ds.Modality, ds.InstanceNumber = "20260101", "CT", number
    ds.ImagePositionPatient = [0, 0, -number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def send(
    port: int, ae_title: str, paths: list[Path], associations: int, env: dict[str, str] = ENV
) -> float:
    """Send ``paths`` over ``associations`` parallel storescu processes; return seconds."""
    chunks = [paths[index::associations] for index in range(associations)]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            ["storescu", "-aec", ae_title, "127.0.0.1", str(port), *map(str, chunk)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for chunk in chunks
    ]
    codes = [process.wait() for process in processes]
    elapsed = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"storescu failed with exit codes {codes}")
    return elapsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=200, help="instances per repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per workload")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cirrus-bench-"))
    storescp_port = free_port()
    storescp = subprocess.Popen(
        ["storescp", "--fork", "-B", "-aet", "STORESCP", "-od", str(work / "storescp"),
         str(storescp_port)],
        env=ENV,
        start_new_session=True,  # its own process group, so its forked children stop with it
    )  # fmt: skip
    (work / "storescp").mkdir()
    stack = start_stack(work / "cirrus")
    results: dict[str, list[float]] = {}
    try:
        for run in range(args.repeat):
            for associations in (1, 4):
                # A new series each time, so the archive never receives an instance twice.
                study, paths = synthetic_series(work, args.instances, f"BENCH{run}{associations}")
                seconds = send(storescp_port, "STORESCP", paths, associations)
                results.setdefault(f"storescp, {associations} assoc", []).append(
                    len(paths) / seconds
                )
                seconds = send(stack.dicom_port, "CIRRUS", paths, associations)
                acknowledged = time.perf_counter()
                results.setdefault(f"cirrus, {associations} assoc", []).append(len(paths) / seconds)
                client = DICOMwebClient(url=stack.dicomweb_url)
                while len(client.search_for_instances(study_instance_uid=study)) < len(paths):
                    time.sleep(0.25)
                key = f"cirrus, last ack to QIDO ({associations} assoc), s"
                results.setdefault(key, []).append(time.perf_counter() - acknowledged)
                for path in paths:
                    path.unlink()
    finally:
        stack.stop()
        os.killpg(storescp.pid, signal.SIGKILL)
        storescp.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    print(f"{args.instances} CT instances of 512 KiB, {args.repeat} repetitions, medians:")
    for name, values in results.items():
        print(f"  {name:40s} {statistics.median(values):8.1f}")
    for associations in (1, 4):
        cirrus = statistics.median(results[f"cirrus, {associations} assoc"])
        peer = statistics.median(results[f"storescp, {associations} assoc"])
        print(f"  ratio cirrus/storescp, {associations} assoc   {cirrus / peer:8.2f}")


if __name__ == "__main__":
    main()
