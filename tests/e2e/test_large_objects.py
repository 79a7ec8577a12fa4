"""Large objects through ``cirrus dev``: a 50 MB multiframe instance and a 200-instance series.

Both are stored through the upload path and retrieved with dicomweb-client and requests. The
raw requests check the path each response takes: a body above Lambda's buffered limit comes
as 303 to a signed URL of a file under /transfers/ of the local HTTP server, a small one
directly. Each test runs its own
stack, and prints the peak RSS of the stack's process and of its moto child.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cirrus.dicomweb.delivery import LAMBDA_PAYLOAD_LIMIT
from cirrus.dicomweb.multipart import Part, build_multipart_related, parse_multipart_related
from tests.e2e.conftest import RunningStack, start_stack

# Multi-frame Grayscale Word Secondary Capture Image Storage.
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7.3"
FRAMES, ROWS, COLUMNS = 100, 512, 512
FRAME_BYTES = ROWS * COLUMNS * 2
SERIES_SIZE = 200
PIXEL_DATA_TAG = "7FE00010"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    running = start_stack(tmp_path / "data")
    yield running
    report_peak_rss(running)
    assert running.stop() == 0


def report_peak_rss(running: RunningStack) -> None:
    """Print the peak RSS (VmHWM) of the stack and of its moto child, in MiB."""
    pid = running.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for name, process_id in [("cirrus dev", str(pid))] + [("moto", child) for child in children]:
        for line in Path(f"/proc/{process_id}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                kib = int(line.split()[1])
                print(f"\npeak RSS of {name} (pid {process_id}): {kib / 1024:.0f} MiB")


def make_instance(
    study: str, series: str, frames: int, rows: int, columns: int, seed: int
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS
    ds.SOPClassUID = SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.InstanceNumber = seed
    ds.Modality = "OT"
    ds.PatientID = "LARGE-OBJECTS"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    pixels = np.random.default_rng(seed).integers(0, 65536, frames * rows * columns)
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def encode(ds: Dataset) -> bytes:
    with BytesIO() as buffer:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()


def upload_and_store(url: str, instances: list[bytes]) -> dict[str, Any]:
    """Store ``instances`` through POST /uploads, PUT and POST .../studies; return the response."""
    body, content_type = build_multipart_related(
        [Part(part10, content_type="application/dicom") for part10 in instances],
        "application/dicom",
    )
    created = requests.post(f"{url}/uploads", timeout=30)
    assert created.status_code == 201
    ticket = created.json()
    assert ticket["uploadUrl"].startswith(f"{url.removesuffix('/dicomweb')}/transfers/")
    assert created.headers["Location"] == ticket["storeUrl"].removesuffix("/studies")

    put = requests.put(ticket["uploadUrl"], data=body, timeout=120)
    assert put.status_code == 200
    del body

    stored = requests.post(ticket["storeUrl"], headers={"Content-Type": content_type}, timeout=300)
    assert stored.status_code == 200, stored.text[:500]
    response: dict[str, Any] = stored.json()
    return response


def wait_for_instances(url: str, study: str, series: str, count: int) -> None:
    deadline = time.monotonic() + 120
    found = 0
    while time.monotonic() < deadline:
        response = requests.get(
            f"{url}/studies/{study}/series/{series}/instances", params={"limit": 1000}, timeout=30
        )
        found = len(response.json()) if response.status_code == 200 else 0
        if found == count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{found} of {count} instances indexed after 120 s")


def get_without_redirect(url: str, **kwargs: Any) -> requests.Response:
    return requests.get(url, allow_redirects=False, timeout=120, **kwargs)


def assert_redirected_to_transfer(response: requests.Response) -> requests.Response:
    """Check a 303 to a signed URL on the stack's HTTP port; follow it, return its response."""
    assert response.status_code == 303
    assert response.headers["Cache-Control"] == "no-store"
    location = response.headers["Location"]
    origin = response.url.split("/dicomweb/", 1)[0]
    assert location.startswith(f"{origin}/transfers/sites/default/responses/")
    assert "signature=" in location
    staged = requests.get(location, timeout=120)
    assert staged.status_code == 200
    assert staged.headers["Content-Type"].startswith("multipart/related")
    assert staged.headers["Cache-Control"] == "no-store"
    assert int(staged.headers["Content-Length"]) == len(staged.content)
    assert len(staged.content) > LAMBDA_PAYLOAD_LIMIT * 3 // 4
    # The URL allows a GET of this object only.
    assert requests.put(location, data=b"x", timeout=30).status_code == 403
    return staged


def test_multiframe_instance_of_50_mb(stack: RunningStack) -> None:
    url = stack.dicomweb_url
    study, series = generate_uid(), generate_uid()
    ds = make_instance(study, series, FRAMES, ROWS, COLUMNS, seed=1)
    part10 = encode(ds)
    assert len(part10) > 50 * 1024 * 1024
    client = DICOMwebClient(url=url)

    # A direct STOW-RS of 50 MB is rejected as API Gateway would reject it.
    with pytest.raises(requests.HTTPError) as rejected:
        client.store_instances([ds])
    assert rejected.value.response.status_code == 413
    assert "POST /dicomweb/uploads" in rejected.value.response.json()["error"]

    stored = upload_and_store(url, [part10])
    references = stored["00081199"]["Value"]
    assert [item["00081155"]["Value"][0] for item in references] == [ds.SOPInstanceUID]
    wait_for_instances(url, study, series, 1)
    instance_url = f"{url}/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}"

    # Whole instance: dicomweb-client follows the redirect.
    retrieved = client.retrieve_instance(study, series, ds.SOPInstanceUID)
    assert retrieved.SOPInstanceUID == ds.SOPInstanceUID
    assert retrieved.NumberOfFrames == FRAMES
    assert retrieved.PixelData == ds.PixelData
    staged = assert_redirected_to_transfer(get_without_redirect(instance_url))
    parts = parse_multipart_related(staged.headers["Content-Type"], staged.content).parts
    assert len(parts) == 1
    assert parts[0].body == part10

    # All frames at once are redirected; each frame is its slice of Pixel Data.
    frames = client.retrieve_instance_frames(
        study, series, ds.SOPInstanceUID, frame_numbers=list(range(1, FRAMES + 1))
    )
    assert len(frames) == FRAMES
    for number, frame in enumerate(frames):
        assert frame == ds.PixelData[number * FRAME_BYTES : (number + 1) * FRAME_BYTES], number
    all_frames = ",".join(str(number) for number in range(1, FRAMES + 1))
    assert_redirected_to_transfer(get_without_redirect(f"{instance_url}/frames/{all_frames}"))

    # A few frames fit a buffered response and come directly.
    direct = get_without_redirect(f"{instance_url}/frames/2,100")
    assert direct.status_code == 200
    frame_parts = parse_multipart_related(direct.headers["Content-Type"], direct.content).parts
    assert [part.body for part in frame_parts] == [
        ds.PixelData[FRAME_BYTES : 2 * FRAME_BYTES],
        ds.PixelData[99 * FRAME_BYTES :],
    ]

    # Bulk data: the BulkDataURI of Pixel Data, whole, then as a small and a large range.
    metadata = client.retrieve_instance_metadata(study, series, ds.SOPInstanceUID)
    bulkdata_uri = metadata[PIXEL_DATA_TAG]["BulkDataURI"]
    assert client.retrieve_bulkdata(bulkdata_uri) == [ds.PixelData]
    assert_redirected_to_transfer(get_without_redirect(bulkdata_uri))
    ranged = get_without_redirect(bulkdata_uri, headers={"Range": "bytes=1000-1999"})
    assert ranged.status_code == 206
    ranged_parts = parse_multipart_related(ranged.headers["Content-Type"], ranged.content).parts
    assert ranged_parts[0].body == ds.PixelData[1000:2000]
    too_large = get_without_redirect(bulkdata_uri, headers={"Range": "bytes=0-"})
    assert too_large.status_code == 416
    assert "omit Range" in too_large.json()["error"]


def test_series_of_200_instances(stack: RunningStack) -> None:
    url = stack.dicomweb_url
    study, series = generate_uid(), generate_uid()
    datasets = [
        make_instance(study, series, 1, 256, 256, seed=number)
        for number in range(1, SERIES_SIZE + 1)
    ]
    encoded = {ds.SOPInstanceUID: encode(ds) for ds in datasets}

    stored = upload_and_store(url, list(encoded.values()))
    assert len(stored["00081199"]["Value"]) == SERIES_SIZE
    assert "00081198" not in stored
    wait_for_instances(url, study, series, SERIES_SIZE)

    # dicomweb-client follows the redirect and decodes all 200 parts.
    retrieved = DICOMwebClient(url=url).retrieve_series(study, series)
    assert len(retrieved) == SERIES_SIZE
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    assert {ds.SOPInstanceUID for ds in retrieved} == set(by_uid)
    for ds in retrieved:
        assert ds.PixelData == by_uid[ds.SOPInstanceUID].PixelData, ds.SOPInstanceUID

    # Each part of the staged body is the stored Part 10 object, byte for byte.
    staged = assert_redirected_to_transfer(
        get_without_redirect(f"{url}/studies/{study}/series/{series}")
    )
    parts = parse_multipart_related(staged.headers["Content-Type"], staged.content).parts
    assert len(parts) == SERIES_SIZE
    seen = set()
    for part in parts:
        assert part.content_type is not None
        assert part.content_type.startswith("application/dicom")
        uid = pydicom.dcmread(BytesIO(part.body), stop_before_pixels=True).SOPInstanceUID
        assert part.body == encoded[uid], uid
        seen.add(uid)
    assert seen == set(encoded)
