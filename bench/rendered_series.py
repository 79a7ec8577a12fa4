"""Time of the rendered series resource (PS3.18 10.4) over HTTP, on moto, in one process.

Generates one CT series of ``--instances`` instances of 512x512, 16 bits, in Explicit VR Little
Endian, stores it with STOW-RS and indexes it in place of the ingest queue. Then
``GET /studies/{study}/series/{series}/rendered`` is timed, as multipart/related of PNG and
of JPEG: the median of ``--runs`` requests after one warm-up request, wall-clock from sending
the request to holding the whole body, with a 303 redirect to the staged copy followed. The
DICOMweb handler, the HTTP adapter and the client share this process, and moto runs in a
child process, all on 127.0.0.1.

    .venv/bin/python bench/rendered_series.py --instances 100 --runs 5
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
import uuid
from io import BytesIO

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)

import numpy as np
import pydicom
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from cirrus.config import ResourceNames, Settings
from cirrus.dicomweb.multipart import Part, build_multipart_related
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.http import serve_http
from cirrus.local.moto_process import start_moto
from cirrus.local.resources import create_resources
from cirrus.services import Services
from cirrus.storage.keys import INSTANCE_SUFFIX, site_prefix
from functions.dicomweb.handler import dicomweb_services, handle

SIDE = 512
# Instances in one STOW-RS body: about 3 MB, so that the body still fits Lambda's 6 MB payload
# once base64-encoded.
STOW_BATCH = 6


def ct_instance(study: str, series: str, number: int) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.Modality, ds.InstanceNumber = "BENCH", "CT", number
    ds.Rows = ds.Columns = SIDE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    rng = np.random.default_rng(number)
    ramp = np.add.outer(np.arange(SIDE), np.arange(SIDE)).astype(np.uint16) * 4
    ds.PixelData = ((ramp + rng.integers(0, 64, ramp.shape)) % 4096).astype("<u2").tobytes()
    with BytesIO() as buffer:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()


def store_series(url: str, services: Services, count: int) -> tuple[str, str]:
    study, series = generate_uid(), generate_uid()
    for start in range(0, count, STOW_BATCH):
        stop = min(start + STOW_BATCH, count)
        parts = [
            Part(ct_instance(study, series, n + 1), content_type="application/dicom")
            for n in range(start, stop)
        ]
        body, content_type = build_multipart_related(parts, "application/dicom")
        response = requests.post(
            f"{url}/studies", data=body, headers={"Content-Type": content_type}, timeout=120
        )
        response.raise_for_status()
    site = services.settings.default_site
    for obj in services.store.list_keys(site_prefix(site)):
        if obj.key.endswith(INSTANCE_SUFFIX):
            ingest_object(
                services.store, services.index_writer, ObjectEvent(obj.key, etag=obj.etag)
            )
    return study, series


def time_rendered(url: str, accept: str, runs: int) -> tuple[float, int, int]:
    """Return the median seconds, the body size and the status of the first response."""
    first = requests.get(url, headers={"Accept": accept}, allow_redirects=False, timeout=600)
    times = []
    size = 0
    for _ in range(runs):
        started = time.perf_counter()
        response = requests.get(url, headers={"Accept": accept}, timeout=600)
        response.raise_for_status()
        times.append(time.perf_counter() - started)
        size = len(response.content)
    return statistics.median(times), size, first.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100, help="instances in the series")
    parser.add_argument("--runs", type=int, default=5, help="timed requests for each case")
    args = parser.parse_args()
    moto = start_moto()
    try:
        names = ResourceNames(deployment=f"b{uuid.uuid4().hex[:12]}")
        settings = create_resources(Settings.for_names(names, endpoint_url=moto.endpoint_url))
        services = Services(settings)
        server = serve_http(
            functools.partial(handle, services=dicomweb_services(services)), "127.0.0.1", 0
        )
        try:
            base = f"http://127.0.0.1:{server.port}/dicomweb"
            study, series = store_series(base, services, args.instances)
            url = f"{base}/studies/{study}/series/{series}/rendered"
            for media_type in ("image/png", "image/jpeg"):
                accept = f'multipart/related; type="{media_type}"'
                median, size, status = time_rendered(url, accept, args.runs)
                print(
                    f"{args.instances} instances, {media_type}: median {median:.2f} s, "
                    f"{size / 1e6:.1f} MB, status {status}, "
                    f"{median / args.instances * 1000:.1f} ms per instance"
                )
        finally:
            server.shutdown()
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
