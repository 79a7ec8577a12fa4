"""Series metadata retrieval (WADO-RS, PS3.18 10.4) of Cirrus against Orthanc, in one run.

Generates one CT series (512x512, 16 bit, InstanceNumber 1..N, a full CT header). It is sent
with storescu to the local stack's gateway and to Orthanc with its DICOMweb plugin. Then
``GET /studies/{study}/series/{series}/metadata`` is timed on each: the median of ``--runs``
requests with ``Accept-Encoding: gzip`` and the median without it, each after one warm-up
request, and the same with gzip for the study's metadata. Times are wall-clock from sending
the request to holding the decoded body.

The first Cirrus request after ingest builds the stored bundle, and its time is printed
separately. So is the first request after one more instance is sent to Cirrus, which finds
the bundle that ingest rebuilt.

    .venv/bin/python bench/metadata.py --instances 1000 --runs 15

Orthanc 1.10 listens on every address and has no option to bind one, so the script runs
itself in a new network namespace (``unshare --net``, which needs root) whose only interface
is loopback. Orthanc, the local stack and the client all run in it, so nothing here is
reachable from outside the machine. Orthanc is started by this script and stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INSIDE_FLAG = "CIRRUS_BENCH_IN_NAMESPACE"
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
ASSOCIATIONS = 4


@dataclass(frozen=True)
class SeriesUids:
    study: str
    series: str
    frame_of_reference: str


def ct_series(folder: Path, uids: SeriesUids, numbers: range) -> list[Path]:
    """Write one CT instance of the series ``uids`` per instance number; return the paths."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(-1024, 3071, size=(512, 512), dtype=np.int16).tobytes()
    paths = []
    for number in numbers:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20260114"
        ds.StudyTime = ds.SeriesTime = "101500"
        ds.AcquisitionTime = ds.ContentTime = f"1016{number % 60:02d}.{number:06d}"
        ds.AccessionNumber = "A20260114001"
        ds.Modality = "CT"
        ds.Manufacturer = "Bench Medical"
        ds.InstitutionName = "Bench Hospital"
        ds.ReferringPhysicianName = "REFERRER^ANNA"
        ds.StationName = "CT01"
        ds.StudyDescription = "CT CHEST ABDOMEN PELVIS WITH CONTRAST"
        ds.SeriesDescription = "AXIAL 0.625 MM SOFT TISSUE"
        ds.ManufacturerModelName = "Bench CT 128"
        ds.PatientName = "BENCH^METADATA"
        ds.PatientID = "BENCH-META-1"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "F"
        ds.PatientAge = "066Y"
        ds.BodyPartExamined = "CHEST"
        ds.ScanOptions = "HELICAL MODE"
        ds.SliceThickness = "0.625"
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500.0"
        ds.SoftwareVersions = "1.0"
        ds.ReconstructionDiameter = "360.0"
        ds.GantryDetectorTilt = "0.0"
        ds.TableHeight = "160.0"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "500"
        ds.XRayTubeCurrent = "250"
        ds.Exposure = "125"
        ds.ConvolutionKernel = "STANDARD"
        ds.PatientPosition = "FFS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = uids.study, uids.series
        ds.StudyID = "1"
        ds.SeriesNumber = 3
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [-180.0, -180.0, -0.625 * number]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = uids.frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = -0.625 * number
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.PixelSpacing = [0.703125, 0.703125]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.PixelData = pixels
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"ct{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def send(port: int, ae_title: str, paths: list[Path]) -> None:
    """Send ``paths`` with ``ASSOCIATIONS`` parallel storescu processes."""
    chunks = [paths[index::ASSOCIATIONS] for index in range(ASSOCIATIONS)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    processes = [
        subprocess.Popen(
            ["storescu", "-aec", ae_title, "127.0.0.1", str(port), *map(str, chunk)], env=env
        )
        for chunk in chunks
        if chunk
    ]
    codes = [process.wait() for process in processes]
    if any(codes):
        raise RuntimeError(f"storescu failed with exit codes {codes}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_orthanc(folder: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start Orthanc with the DICOMweb plugin; return the process and its HTTP and DICOM ports."""
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpCompressionEnabled": True,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(config_path)], stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{http_port}/system", timeout=2).ok:
                return process, http_port, dicom_port
        except requests.ConnectionError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"Orthanc did not respond within 60 s; see {folder / 'orthanc.log'}")


def wait_for_orthanc(http_port: int, count: int) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        stats = requests.get(f"http://127.0.0.1:{http_port}/statistics", timeout=10).json()
        if int(stats["CountInstances"]) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"Orthanc did not index {count} instances within 600 s")


def timed_get(session: requests.Session, url: str, encoding: str, count: int) -> float:
    """Return the seconds of one metadata request; check that it lists ``count`` instances."""
    headers = {"Accept": "application/dicom+json", "Accept-Encoding": encoding}
    started = time.perf_counter()
    response = session.get(url, headers=headers, timeout=600)
    body = response.content
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    served_encoding = response.headers.get("Content-Encoding", "identity")
    expected_encoding = "gzip" if encoding == "gzip" else "identity"
    if served_encoding != expected_encoding:
        raise RuntimeError(f"{url} was served as {served_encoding}, not {expected_encoding}")
    items = json.loads(body)
    if len(items) != count:
        raise RuntimeError(f"{url} listed {len(items)} instances, not {count}")
    return elapsed


def median_time(url: str, encoding: str, runs: int, count: int) -> float:
    with requests.Session() as session:
        timed_get(session, url, encoding, count)
        return statistics.median(timed_get(session, url, encoding, count) for _ in range(runs))


def run(instances: int, runs: int) -> None:
    from cirrus.dicomweb.bundle_refresh import REFRESH_DELAY_SECONDS
    from cirrus.local.stack import LocalStack, LocalStackConfig

    work = Path(tempfile.mkdtemp(prefix="cirrus-bench-metadata-"))
    orthanc = None
    stack = LocalStack(LocalStackConfig(dicom_port=0, http_port=0, data_dir=work / "cirrus"))
    try:
        uids = SeriesUids(generate_uid(), generate_uid(), generate_uid())
        paths = ct_series(work, uids, range(1, instances + 1))
        study, series = uids.study, uids.series
        (work / "orthanc").mkdir()
        orthanc, orthanc_http, orthanc_dicom = start_orthanc(work / "orthanc")
        stack.start()
        send(stack.dicom_port, "CIRRUS", paths)
        send(orthanc_dicom, "ORTHANC", paths)
        if not stack.wait_until_indexed(1800):
            raise RuntimeError("Cirrus did not index the series within 1800 s")
        wait_for_orthanc(orthanc_http, instances)

        series_path = f"studies/{study}/series/{series}/metadata"
        study_path = f"studies/{study}/metadata"
        cirrus = f"{stack.dicomweb_url}/"
        orthanc_root = f"http://127.0.0.1:{orthanc_http}/dicom-web/"
        with requests.Session() as session:
            first_build = timed_get(session, cirrus + series_path, "gzip", instances)
        cells = [
            ("series", "gzip", series_path),
            ("series", "identity", series_path),
            ("study", "gzip", study_path),
        ]
        results = {
            (level, encoding): (
                median_time(cirrus + path, encoding, runs, instances),
                median_time(orthanc_root + path, encoding, runs, instances),
            )
            for level, encoding, path in cells
        }
        gzip_size = len(requests.get(cirrus + series_path, timeout=60, stream=True).raw.read())
        identity = requests.get(
            cirrus + series_path, headers={"Accept-Encoding": "identity"}, timeout=60
        )
        redirected = " (through a 303 to S3)" if identity.history else ""

        # One more instance, sent to Cirrus only: the refresh that ingest schedules rebuilds
        # the bundle before the next read, because the base URL has been read before.
        extra = ct_series(work, uids, range(instances + 1, instances + 2))
        send(stack.dicom_port, "CIRRUS", extra)
        stack.wait_until_indexed(60)
        time.sleep(REFRESH_DELAY_SECONDS + 1)
        stack.wait_until_indexed(300)
        with requests.Session() as session:
            after_refresh = timed_get(session, cirrus + series_path, "gzip", instances + 1)

        print(f"instances: {instances}, runs per cell: {runs}")
        print(f"Cirrus first request after ingest (builds the bundle): {first_build * 1000:.0f} ms")
        print(f"Cirrus first request after one more instance: {after_refresh * 1000:.0f} ms")
        print(
            f"Cirrus series metadata: {gzip_size / 1024:.0f} KiB gzip, "
            f"{len(identity.content) / 1024:.0f} KiB identity{redirected}"
        )
        for (level, encoding), (cirrus_time, orthanc_time) in results.items():
            print(
                f"{level:>6} {encoding:>8}: Cirrus {cirrus_time * 1000:8.1f} ms  "
                f"Orthanc {orthanc_time * 1000:8.1f} ms  ratio {cirrus_time / orthanc_time:.3f}"
            )
    finally:
        stack.stop()
        if orthanc is not None:
            orthanc.terminate()
            orthanc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--instances", type=int, default=1000, help="instances in the series")
    parser.add_argument("--runs", type=int, default=15, help="timed requests per cell (>= 10)")
    args = parser.parse_args()
    if args.runs < 10:
        parser.error("--runs must be at least 10")
    if os.environ.get(INSIDE_FLAG) == "1":
        run(args.instances, args.runs)
        return
    # Re-run this script in a private network namespace that has only loopback.
    inner = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    script = 'ip link set lo up && exec "$@"'
    command = ["unshare", "--net", "--", "sh", "-c", script, "sh", *inner]
    result = subprocess.run(command, env={**os.environ, INSIDE_FLAG: "1"}, check=False)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
