"""Responses and STOW-RS bodies above the Lambda payload limit, through the adapter on moto.

Retrieves whose result would not fit a buffered Lambda response get 303 to a staged copy in
S3; STOW-RS bodies that API Gateway would reject go through POST /uploads. The end-to-end
tests in ``tests/e2e/test_large_objects.py`` run the same paths at 50 MB and 200 instances.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from botocore.exceptions import ClientError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cirrus.config import Settings
from cirrus.dicomweb import uploads
from cirrus.dicomweb.app import DicomwebServices
from cirrus.dicomweb.delivery import (
    LAMBDA_PAYLOAD_LIMIT,
    PayloadLimitError,
    check_payload,
    payload_size,
)
from cirrus.dicomweb.multipart import Part, build_multipart_related, parse_multipart_related
from cirrus.local.http import serve_http
from cirrus.storage.objects import ObjectStore
from cirrus.storage.transfers import PART_SIZE, TRANSFER_PREFIX, TransferStore
from functions.dicomweb.handler import dicomweb_services, handle
from tests.integration.dicomweb_stack import Stack, encode, post_instances, running_stack

SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7.3"
# Two instances of this many frames of 512 x 512 x 16 bits exceed the buffered limit together.
FRAMES = 6


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


def make_instance(study: str, series: str, frames: int = FRAMES) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 512, 512, frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    rng = np.random.default_rng(frames)
    ds.PixelData = rng.integers(0, 65536, frames * 512 * 512).astype("<u2").tobytes()
    return ds


def multipart(instances: list[bytes]) -> tuple[bytes, str]:
    return build_multipart_related(
        [Part(part10, content_type="application/dicom") for part10 in instances],
        "application/dicom",
    )


def new_upload(stack: Stack) -> dict[str, Any]:
    response = requests.post(f"{stack.url}/uploads", timeout=30)
    assert response.status_code == 201
    ticket: dict[str, Any] = response.json()
    return ticket


def upload_instance(stack: Stack, ds: Dataset) -> tuple[dict[str, Any], str]:
    """PUT ``ds`` as a one-part body to a new upload; return the ticket and the body's type."""
    body, content_type = multipart([encode(ds)])
    ticket = new_upload(stack)
    assert requests.put(ticket["uploadUrl"], data=body, timeout=30).status_code == 200
    return ticket, content_type


def transfer_keys(stack: Stack, kind: str) -> list[str]:
    prefix = f"{TRANSFER_PREFIX}sites/{stack.site}/{kind}/"
    return [obj.key for obj in stack.store.list_keys(prefix)]


# Payload sizes


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": 200, "body": base64.b64encode(b"\xff").decode(), "isBase64Encoded": True},
        {"statusCode": 200, "headers": {"A": "b"}, "body": '{"n": "Müller\\n\\"q\\""}'},
        {"statusCode": 204, "body": None, "isBase64Encoded": False},
    ],
)  # fmt: skip
def test_payload_size_is_json_length(result: dict[str, Any]) -> None:
    assert payload_size(result) == len(json.dumps(result).encode())


def test_check_payload_over_limit() -> None:
    body = "x" * LAMBDA_PAYLOAD_LIMIT

    with pytest.raises(PayloadLimitError, match="exceeds the 6000000-byte payload limit"):
        check_payload({"statusCode": 200, "body": body, "isBase64Encoded": False})


# Responses above the limit


def test_series_over_limit_redirects(stack: Stack) -> None:
    study, series = generate_uid(), generate_uid()
    instances = [encode(make_instance(study, series)) for _ in range(2)]
    for part10 in instances:
        assert post_instances(f"{stack.url}/studies", [part10]).status_code == 200
    stack.index()
    series_url = f"{stack.url}/studies/{study}/series/{series}"

    response = requests.get(series_url, allow_redirects=False, timeout=30)

    assert response.status_code == 303
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    location = response.headers["Location"]
    assert location.startswith("http://127.0.0.1:")
    assert response.json()["url"] == location
    keys = transfer_keys(stack, "responses")
    assert len(keys) == 1
    assert keys[0] in location
    staged = requests.get(location, timeout=30)
    assert staged.status_code == 200
    parts = parse_multipart_related(staged.headers["Content-Type"], staged.content).parts
    assert sorted(part.body for part in parts) == sorted(instances)


def test_head_over_limit_not_staged(stack: Stack) -> None:
    study, series = generate_uid(), generate_uid()
    for _ in range(2):
        post_instances(f"{stack.url}/studies", [encode(make_instance(study, series))])
    stack.index()

    response = requests.head(f"{stack.url}/studies/{study}", timeout=30)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("multipart/related")
    assert transfer_keys(stack, "responses") == []


def test_redirect_keeps_cors_headers(stack: Stack, settings: Settings) -> None:
    study, series = generate_uid(), generate_uid()
    for _ in range(2):
        post_instances(f"{stack.url}/studies", [encode(make_instance(study, series))])
    stack.index()
    origin = "https://viewer.example"
    view = dataclasses.replace(_view(stack), cors_origins=(origin,))
    server = serve_http(functools.partial(handle, services=view), "127.0.0.1", 0)
    try:
        response = requests.get(
            f"http://127.0.0.1:{server.port}/dicomweb/studies/{study}",
            headers={"Origin": origin},
            allow_redirects=False,
            timeout=30,
        )
    finally:
        server.shutdown()

    assert response.status_code == 303
    assert response.headers["Access-Control-Allow-Origin"] == origin


def test_large_range_rejected(stack: Stack) -> None:
    ds = make_instance(generate_uid(), generate_uid(), frames=12)
    ticket, content_type = upload_instance(stack, ds)
    headers = {"Content-Type": content_type}
    assert requests.post(ticket["storeUrl"], headers=headers, timeout=60).status_code == 200
    stack.index()
    bulkdata = (
        f"{stack.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/bulkdata/7FE00010"
    )

    response = requests.get(bulkdata, headers={"Range": "bytes=0-5999999"}, timeout=30)

    assert response.status_code == 416
    assert "request ranges of at most 4 MB" in response.json()["error"]
    assert transfer_keys(stack, "responses") == []


def test_small_response_not_staged(stack: Stack) -> None:
    study, series = generate_uid(), generate_uid()
    post_instances(f"{stack.url}/studies", [encode(make_instance(study, series, frames=1))])
    stack.index()

    response = requests.get(f"{stack.url}/studies/{study}", allow_redirects=False, timeout=30)

    assert response.status_code == 200
    assert transfer_keys(stack, "responses") == []


# Uploads


def test_upload_stores_instances(stack: Stack) -> None:
    study = generate_uid()
    datasets = [make_instance(study, generate_uid()) for _ in range(2)]
    body, content_type = multipart([encode(ds) for ds in datasets])
    ticket = new_upload(stack)
    assert ticket["method"] == "PUT"
    assert ticket["expiresIn"] == uploads.PRESIGNED_PUT_SECONDS
    assert "X-Amz-Signature=" in ticket["uploadUrl"]
    # The Content-Type sent with the PUT is used when the store request has none.
    put = requests.put(
        ticket["uploadUrl"], data=body, headers={"Content-Type": content_type}, timeout=30
    )
    assert put.status_code == 200

    response = requests.post(f"{ticket['storeUrl']}/{study}", timeout=60)

    assert response.status_code == 200
    stored = [item["00081155"]["Value"][0] for item in response.json()["00081199"]["Value"]]
    assert stored == [ds.SOPInstanceUID for ds in datasets]
    assert len(stack.instance_keys()) == 2
    assert transfer_keys(stack, "uploads") == []


def test_upload_of_other_study_fails(stack: Stack) -> None:
    ticket, content_type = upload_instance(stack, make_instance(generate_uid(), generate_uid(), 1))

    response = requests.post(
        f"{ticket['storeUrl']}/{generate_uid()}", headers={"Content-Type": content_type}, timeout=30
    )

    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    assert stack.instance_keys() == []
    assert transfer_keys(stack, "uploads") == []


def test_upload_without_body(stack: Stack) -> None:
    ticket = new_upload(stack)

    response = requests.post(ticket["storeUrl"], timeout=30)

    assert response.status_code == 404
    assert "PUT the body to the uploadUrl" in response.json()["error"]


def test_upload_id_invalid(stack: Stack) -> None:
    response = requests.post(f"{stack.url}/uploads/..%2F..%2Fsites/studies", timeout=30)

    assert response.status_code == 400
    assert "transfer id" in response.json()["error"]


def test_upload_over_maximum(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 1000)
    ticket = new_upload(stack)
    requests.put(ticket["uploadUrl"], data=b"x" * 1001, timeout=30)

    response = requests.post(ticket["storeUrl"], headers={"Content-Type": "x/y"}, timeout=30)

    assert response.status_code == 413
    assert "exceeds the maximum of 1000 bytes" in response.json()["error"]
    assert transfer_keys(stack, "uploads") == []


def test_upload_kept_after_storage_failure(stack: Stack) -> None:
    ticket, content_type = upload_instance(stack, make_instance(generate_uid(), generate_uid(), 1))
    # A store that cannot write makes every part fail with 0xA700, and the request 503.
    settings = stack.services.settings
    missing_bucket = ObjectStore(stack.services.clients.s3, "no-such-bucket", settings.kms_key_id)
    broken = dataclasses.replace(_view(stack), store=missing_bucket)
    server = serve_http(functools.partial(handle, services=broken), "127.0.0.1", 0)
    try:
        store_url = ticket["storeUrl"].replace(
            stack.url, f"http://127.0.0.1:{server.port}/dicomweb"
        )
        response = requests.post(store_url, headers={"Content-Type": content_type}, timeout=30)
    finally:
        server.shutdown()

    assert response.status_code == 503
    upload_key = f"{TRANSFER_PREFIX}sites/{stack.site}/uploads/{ticket['uploadId']}"
    assert transfer_keys(stack, "uploads") == [upload_key]
    retried = requests.post(ticket["storeUrl"], headers={"Content-Type": content_type}, timeout=30)
    assert retried.status_code == 200


def test_uploads_need_transfer_store(stack: Stack) -> None:
    view = dataclasses.replace(_view(stack), transfers=None)
    server = serve_http(functools.partial(handle, services=view), "127.0.0.1", 0)
    try:
        response = requests.post(f"http://127.0.0.1:{server.port}/dicomweb/uploads", timeout=30)
    finally:
        server.shutdown()

    assert response.status_code == 503
    assert "uploads are not available" in response.json()["error"]


# Transfer objects


def test_transfer_write_in_parts(stack: Stack) -> None:
    transfers = _transfers(stack)
    key = transfers.new_key(stack.site, "responses")
    chunks = [b"a" * 3, b"b" * (PART_SIZE - 1), b"c" * (2 * PART_SIZE + 5), b"", b"d"]

    size = transfers.write(key, chunks, "application/octet-stream")

    assert size == sum(len(chunk) for chunk in chunks)
    assert transfers.read(key) == b"".join(chunks)
    assert transfers.head(key).content_type == "application/octet-stream"


def test_transfer_write_with_files(stack: Stack, tmp_path: Path) -> None:
    transfers = _transfers(stack)
    key = transfers.new_key(stack.site, "responses")
    large, small = tmp_path / "large.dcm", tmp_path / "small.dcm"
    large.write_bytes(bytes(range(256)) * (PART_SIZE // 128 + 3))
    small.write_bytes(b"small")
    chunks: list[bytes | Path] = [b"head", large, b"mid", small, b"tail"]

    size = transfers.write(key, chunks, "application/octet-stream")

    expected = b"head" + large.read_bytes() + b"mid" + small.read_bytes() + b"tail"
    assert size == len(expected)
    assert transfers.read(key) == expected


def test_transfer_write_failure_aborts(stack: Stack) -> None:
    transfers = _transfers(stack)
    key = transfers.new_key(stack.site, "responses")

    def chunks() -> Iterator[bytes]:
        yield b"x" * (PART_SIZE + 1)
        raise OSError("source failed")

    with pytest.raises(OSError, match="source failed"):
        transfers.write(key, chunks(), "application/octet-stream")

    s3 = stack.services.clients.s3
    bucket = stack.services.settings.bucket
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key=key)


def test_transfer_lifecycle_rule(stack: Stack) -> None:
    s3 = stack.services.clients.s3

    rules = s3.get_bucket_lifecycle_configuration(Bucket=stack.services.settings.bucket)["Rules"]

    assert len(rules) == 1
    assert rules[0]["Filter"] == {"Prefix": TRANSFER_PREFIX}
    assert rules[0]["Expiration"] == {"Days": 1}
    assert rules[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def _view(stack: Stack) -> DicomwebServices:
    return dicomweb_services(stack.services)


def _transfers(stack: Stack) -> TransferStore:
    transfers = _view(stack).transfers
    assert transfers is not None
    return transfers
