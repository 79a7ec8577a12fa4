"""Large instances: spooled to disk, uploaded in parts, indexed from a ranged header read."""

from __future__ import annotations

import hashlib
import os
import subprocess
from io import BytesIO
from pathlib import Path
from typing import Any

import boto3
import pydicom
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)

from cirrus.config import DEFAULT_AE_TITLE, Settings
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import OUT_OF_RESOURCES, STORE_UNAVAILABLE_COMMENT, SUCCESS
from cirrus.index.models import bind_index_model
from cirrus.index.reader import IndexReader
from cirrus.index.writer import IndexWriter
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.moto_process import LOOPBACK
from cirrus.storage.keys import InstanceKey
from cirrus.storage.objects import SINGLE_PUT_MAX_BYTES, ObjectStore
from cirrus.storage.transfers import PART_SIZE
from tests.gateway.gateways import start_gateway
from tests.gateway.scu import (
    SITE,
    associate,
    send_file_as_is,
    stored_objects,
    storescu,
    wait_until,
)

FRAME_SIDE = 512
FRAME_BYTES = FRAME_SIDE * FRAME_SIDE * 2
LARGE_BYTES = 300 * 1024**2
_WRITE_CHUNK = 8 * 1024**2


def write_large_instance(path: Path, pixel_bytes: int, site: str = SITE) -> str:
    """Write a multi-frame 16-bit instance of at least ``pixel_bytes`` of Pixel Data.

    The pixels are a repeating byte pattern, written in chunks so the test never keeps the
    instance in memory. Returns the object key under ``site``.
    """
    frames = -(-pixel_bytes // FRAME_BYTES)
    ds = Dataset()
    ds.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "LARGE-1", "LARGE^INSTANCE", "OT"
    ds.Rows = ds.Columns = FRAME_SIDE
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    length = frames * FRAME_BYTES
    pattern = bytes(range(256)) * (_WRITE_CHUNK // 256)
    with path.open("ab") as file:
        # (7FE0,0010) OW, explicit VR little endian: tag, VR, 2 reserved bytes, 4-byte length.
        file.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        remaining = length
        while remaining:
            chunk = pattern[: min(remaining, len(pattern))]
            file.write(chunk)
            remaining -= len(chunk)
    key = InstanceKey(site, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    return key.object_key


def data_set_offset(prefix: bytes) -> int:
    """Return where the data set starts in a Part 10 object that begins with ``prefix``."""
    fp = BytesIO(prefix)
    read_preamble(fp, False)
    read_dataset(fp, False, True, stop_when=lambda tag, vr, length: tag.group != 0x0002)
    return fp.tell()


def data_set_digest(path: Path) -> tuple[str, int]:
    """Return the SHA-256 and the size of the data set of the file ``path``, after its meta."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        offset = data_set_offset(file.read(64 * 1024))
        file.seek(offset)
        while chunk := file.read(_WRITE_CHUNK):
            digest.update(chunk)
    return digest.hexdigest(), path.stat().st_size - offset


def object_digest(archive: ObjectStore, key: str) -> tuple[str, int]:
    """Return the SHA-256 and the size of the data set of a stored object, read in chunks."""
    prefix, size = archive.get_range(key, 0, 64 * 1024)
    offset = data_set_offset(prefix)
    s3: Any = archive._client
    body = s3.get_object(Bucket=archive.bucket, Key=key, Range=f"bytes={offset}-")["Body"]
    digest = hashlib.sha256()
    for chunk in body.iter_chunks(_WRITE_CHUNK):
        digest.update(chunk)
    return digest.hexdigest(), size - offset


def spool_files(gateway: Gateway) -> list[str]:
    return sorted(os.listdir(gateway.ae.spool.directory))


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("large") / "large.dcm"
    return path, write_large_instance(path, LARGE_BYTES)


def test_300_mb_instance_stored_and_indexed(
    gateway: Gateway,
    archive: ObjectStore,
    gateway_settings: Settings,
    large_file: tuple[Path, str],
) -> None:
    path, key = large_file

    output = storescu(gateway.port, path, options=("-xe", "-v"))

    assert "Received Store Response (Success)" in output
    (stored,) = [obj for obj in archive.list_keys(key) if obj.key == key]
    # A multipart upload's ETag is the digest of the part digests, followed by "-" and the
    # number of parts.
    assert stored.etag.endswith(f"-{-(-stored.size // PART_SIZE)}")
    assert object_digest(archive, key) == data_set_digest(path)
    assert spool_files(gateway) == []
    assert gateway.ae.spool.used_bytes == 0

    model = bind_index_model(gateway_settings)
    ingest_object(archive, IndexWriter(model, archive), ObjectEvent(key, etag=stored.etag))
    header = pydicom.dcmread(path, stop_before_pixels=True)
    (indexed,) = IndexReader(model, archive).instances(SITE, header.StudyInstanceUID)
    assert indexed.sop == header.SOPInstanceUID
    (metadata,) = IndexReader(model, archive).metadata(SITE, header.StudyInstanceUID)
    assert metadata["00280008"]["Value"] == [int(header.NumberOfFrames)]


def test_instance_just_over_one_put_uses_parts(
    gateway: Gateway, archive: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "medium.dcm"
    key = write_large_instance(path, SINGLE_PUT_MAX_BYTES)
    assert path.stat().st_size > SINGLE_PUT_MAX_BYTES
    ds = pydicom.dcmread(path, stop_before_pixels=True)

    with associate(gateway.port, [(ds.SOPClassUID, ExplicitVRLittleEndian)]) as assoc:
        status = send_file_as_is(monkeypatch, assoc, path)

    assert status.Status == SUCCESS
    (stored,) = [obj for obj in archive.list_keys(key) if obj.key == key]
    assert stored.etag.endswith("-2")
    assert object_digest(archive, key) == data_set_digest(path)


def test_failed_part_upload_aborted(
    gateway_settings: Settings,
    archive: ObjectStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = boto3.client(
        "s3", endpoint_url=gateway_settings.endpoint_url, config=Config(retries={"max_attempts": 1})
    )
    parts_sent = []

    def fail_second_part(params: dict[str, Any], **kwargs: Any) -> None:
        parts_sent.append(params["PartNumber"])
        if params["PartNumber"] == 2:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    client.meta.events.register("provide-client-params.s3.UploadPart", fail_second_part)
    failing = ObjectStore(client, archive.bucket, gateway_settings.kms_key_id)
    path = tmp_path / "medium.dcm"
    write_large_instance(path, 3 * SINGLE_PUT_MAX_BYTES)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    before = stored_objects(archive)

    with start_gateway(gateway_settings, failing) as gateway:
        with associate(gateway.port, [(ds.SOPClassUID, ExplicitVRLittleEndian)]) as assoc:
            status = send_file_as_is(monkeypatch, assoc, path)
        leftover = spool_files(gateway)

    assert status.Status == OUT_OF_RESOURCES
    assert status.ErrorComment == STORE_UNAVAILABLE_COMMENT
    assert parts_sent == [1, 2]
    assert stored_objects(archive) == before
    uploads = client.list_multipart_uploads(Bucket=archive.bucket).get("Uploads", [])
    assert [upload["Key"] for upload in uploads] == []
    assert leftover == []


def test_abort_mid_data_set_frees_spool(gateway: Gateway, tmp_path: Path) -> None:
    path = tmp_path / "aborted.dcm"
    key = write_large_instance(path, 200 * 1024**2)
    sender = subprocess.Popen(
        ["storescu", "-aec", DEFAULT_AE_TITLE, LOOPBACK, str(gateway.port), str(path)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        spooling = wait_until(lambda: gateway.ae.spool.used_bytes > 0, timeout=20)
        sender.kill()
    finally:
        sender.wait(timeout=10)
    freed = wait_until(lambda: gateway.ae.spool.used_bytes == 0 and not spool_files(gateway))

    assert spooling, "the gateway never spooled the data set"
    assert freed, f"spool still holds {spool_files(gateway)}"
    assert not any(obj.key == key for obj in gateway.ae.context.services.store.list_keys(key))
