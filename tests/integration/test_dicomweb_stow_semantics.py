"""STOW-RS over HTTP: body framing, partial failures, failure reasons and the XML response."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.web import _load_xml_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from cirrus.config import Settings
from cirrus.dicomweb import stow
from cirrus.dicomweb.native_xml import NATIVE_DICOM_NAMESPACE
from tests.integration.dicomweb_stack import (
    STOW_TYPE,
    Stack,
    encode,
    post_instances,
    read,
    running_stack,
)

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
RETRIEVE_URL = "00081190"
REFERENCED_SOP_INSTANCE_UID = "00081155"
XML_NS = {"d": NATIVE_DICOM_NAMESPACE}


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


def fresh(name: str = "CT_small.dcm", study: str | None = None) -> pydicom.Dataset:
    ds = read(name)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if study is not None:
        ds.StudyInstanceUID = study
    return ds


def framed(part10: bytes, boundary: str, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    delimiter = f"--{boundary}".encode()
    return (
        preamble
        + delimiter
        + b"\r\nContent-Type: application/dicom\r\n\r\n"
        + part10
        + b"\r\n"
        + delimiter
        + b"--"
        + epilogue
    )


def reasons(body: dict[str, Any]) -> list[int]:
    return [item[FAILURE_REASON]["Value"][0] for item in body[FAILED_SOP_SEQUENCE]["Value"]]


def test_boundary_quoted_or_not_with_preamble(stack: Stack) -> None:
    cases = [
        ('multipart/related; type="application/dicom"; boundary="a=b:c"', "a=b:c"),
        ("multipart/related; type=application/dicom; boundary=plain-123", "plain-123"),
        ('multipart/related; boundary="q q"; type="application/dicom"', "q q"),
    ]
    stored = []
    for content_type, boundary in cases:
        ds = fresh()
        body = framed(
            encode(ds),
            boundary,
            preamble=b"This is the preamble; it is ignored.\r\n",
            epilogue=b"\r\nThis epilogue is ignored too.\r\n",
        )
        response = requests.post(
            f"{stack.url}/studies", data=body, headers={"Content-Type": content_type}, timeout=30
        )
        assert response.status_code == 200, (content_type, response.text)
        (item,) = response.json()[REFERENCED_SOP_SEQUENCE]["Value"]
        assert item[REFERENCED_SOP_INSTANCE_UID]["Value"] == [ds.SOPInstanceUID]
        stored.append(ds.SOPInstanceUID)
    keys = " ".join(stack.instance_keys())
    for uid in stored:
        assert uid in keys, uid


def test_chunked_transfer_encoding(stack: Stack) -> None:
    datasets = [fresh(), fresh("MR_small.dcm")]
    body = (
        b"".join(framed(encode(ds), "chunks")[: -len(b"--chunks--")] for ds in datasets)
        + b"--chunks--"
    )

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = requests.post(
        f"{stack.url}/studies",
        data=chunks(),
        headers={"Content-Type": f"{STOW_TYPE}; boundary=chunks"},
        timeout=30,
    )

    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 200, response.text
    assert len(response.json()[REFERENCED_SOP_SEQUENCE]["Value"]) == 2
    assert len(stack.instance_keys()) == 2


def test_client_disconnect_mid_body(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = framed(encode(fresh()), "cut")
    port = int(stack.url.split(":")[2].split("/")[0])
    head = (
        f"POST /dicomweb/studies?PatientName=Quartermaine HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Content-Type: {STOW_TYPE}; boundary=cut\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    half = len(body) // 2

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(head + body[:half])

    message = "request body incomplete: the client disconnected or timed out"
    deadline = time.monotonic() + 10
    while not any(r.getMessage() == message for r in caplog.records):
        assert time.monotonic() < deadline, "no log record of the disconnect"
        time.sleep(0.02)
    (record,) = [r for r in caplog.records if r.getMessage() == message]
    assert record.levelno == logging.WARNING
    assert getattr(record, "bytes_read", None) == half
    assert getattr(record, "content_length", None) == len(body)
    assert getattr(record, "path", None) == "/dicomweb/studies"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert all("Quartermaine" not in str(vars(r)) for r in caplog.records)
    assert stack.index() == 0
    assert stack.instance_keys() == []


def test_dicomweb_client_chunked_store(stack: Stack) -> None:
    datasets = [fresh(), fresh("MR_small.dcm")]
    client = DICOMwebClient(url=stack.url, chunk_size=8192)

    response = client.store_instances(datasets)

    assert [item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence] == [
        ds.SOPInstanceUID for ds in datasets
    ]
    assert len(stack.instance_keys()) == 2


def test_store_study_mixed(stack: Stack) -> None:
    study = generate_uid()
    inside = fresh(study=study)
    outside = fresh("MR_small.dcm")

    response = post_instances(f"{stack.url}/studies/{study}", [encode(inside), encode(outside)])

    assert response.status_code == 202
    body = response.json()
    assert body[RETRIEVE_URL]["Value"] == [f"{stack.url}/studies/{study}"]
    (referenced,) = body[REFERENCED_SOP_SEQUENCE]["Value"]
    assert referenced[REFERENCED_SOP_INSTANCE_UID]["Value"] == [inside.SOPInstanceUID]
    assert referenced[RETRIEVE_URL]["Value"][0].endswith(f"/instances/{inside.SOPInstanceUID}")
    (failed,) = body[FAILED_SOP_SEQUENCE]["Value"]
    assert failed[REFERENCED_SOP_INSTANCE_UID]["Value"] == [outside.SOPInstanceUID]
    assert failed[FAILURE_REASON]["Value"] == [0xA900]
    assert "part 2 not stored (0xA900)" in response.headers["Warning"]
    keys = " ".join(stack.instance_keys())
    assert inside.SOPInstanceUID in keys
    assert outside.SOPInstanceUID not in keys


MALFORMED = [
    (b"--b\r\nContent-Type: application/dicom\r\nno blank line", "no closing delimiter"),
    (b"--b\r\nContent-Type application/dicom\r\n\r\nx\r\n--b--", "malformed header line"),
    (b"no delimiter at all", "no delimiter --b"),
    (b"--b--", "no parts"),
]


def test_malformed_bodies_400(stack: Stack) -> None:
    for body, reason in MALFORMED:
        response = requests.post(
            f"{stack.url}/studies",
            data=body,
            headers={"Content-Type": f"{STOW_TYPE}; boundary=b"},
            timeout=30,
        )
        assert response.status_code == 400, body
        assert reason in response.json()["error"], body
    assert stack.instance_keys() == []


def test_unsupported_types_415(stack: Stack) -> None:
    part10 = encode(fresh())
    for content_type in (
        "application/dicom",
        "application/json",
        "multipart/mixed; boundary=b",
        'multipart/related; type="application/octet-stream"; boundary=b',
    ):
        response = requests.post(
            f"{stack.url}/studies", data=part10, headers={"Content-Type": content_type}, timeout=30
        )
        assert response.status_code == 415, content_type
        assert "STOW-RS accepts" in response.json()["error"], content_type
    assert stack.instance_keys() == []


def test_none_stored_409(stack: Stack) -> None:
    verification = fresh()
    verification.SOPClassUID = "1.2.840.10008.1.1"  # Verification SOP Class
    verification.file_meta.MediaStorageSOPClassUID = verification.SOPClassUID

    response = post_instances(f"{stack.url}/studies", [b"not DICOM" * 30, encode(verification)])

    assert response.status_code == 409
    body = response.json()
    assert REFERENCED_SOP_SEQUENCE not in body
    assert reasons(body) == [0xC000, 0x0122]
    assert "not a storage SOP class" in response.headers["Warning"]
    assert stack.instance_keys() == []


def deflate_bomb() -> pydicom.Dataset:
    """Return an instance whose deflated data set inflates far past the limit."""
    bomb = fresh()
    bomb.Rows, bomb.Columns = 1000, 12_000
    bomb.PixelData = bytes(24 * 1024**2)
    bomb.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return bomb


def test_deflate_bomb_0xA700(stack: Stack) -> None:
    fine = fresh("MR_small.dcm")

    response = post_instances(f"{stack.url}/studies", [encode(deflate_bomb()), encode(fine)])

    assert response.status_code == 202
    assert "Retry-After" not in response.headers
    assert reasons(response.json()) == [0xA700]
    assert "inflates to more than" in response.headers["Warning"]
    assert len(stack.instance_keys()) == 1


def test_deflate_bomb_alone_409(stack: Stack) -> None:
    response = post_instances(f"{stack.url}/studies", [encode(deflate_bomb())])

    # The limit rejects the instance on every attempt, so 503 and Retry-After would mislead.
    assert response.status_code == 409
    assert "Retry-After" not in response.headers
    body = response.json()
    assert reasons(body) == [0xA700]
    assert REFERENCED_SOP_SEQUENCE not in body
    assert "inflates to more than" in response.headers["Warning"]
    assert stack.instance_keys() == []


def test_invalid_uid_0xA900(stack: Stack) -> None:
    bad = fresh()
    bad.SeriesInstanceUID = "1.2..3"

    response = post_instances(f"{stack.url}/studies", [encode(bad)])

    assert response.status_code == 409
    assert reasons(response.json()) == [0xA900]
    assert "'1.2..3' is not a valid UID" in response.headers["Warning"]
    assert stack.instance_keys() == []


def test_unexpected_part_error_0110(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = fresh(), fresh("MR_small.dcm")
    original = stow.archive_instance
    # Raised through a name, so that the logged source line does not contain the text.
    failure = RuntimeError("injected failure")

    def archive(store: Any, site: str, part10: bytes, **kwargs: Any) -> Any:
        if second.SOPInstanceUID.encode() in part10:
            raise failure
        return original(store, site, part10, **kwargs)

    monkeypatch.setattr(stow, "archive_instance", archive)

    response = post_instances(f"{stack.url}/studies", [encode(first), encode(second)])

    assert response.status_code == 202
    assert reasons(response.json()) == [0x0110]
    assert "RuntimeError" in response.headers["Warning"]
    assert "injected failure" not in response.headers["Warning"]
    assert len(stack.instance_keys()) == 1
    (record,) = [r for r in caplog.records if r.getMessage() == "STOW-RS part failed unexpectedly"]
    assert getattr(record, "error", None) == "RuntimeError"
    assert "in archive" in getattr(record, "traceback", "")
    assert record.exc_info is None
    assert all("injected failure" not in str(value) for value in vars(record).values())


def test_xml_response(stack: Stack) -> None:
    good = fresh()

    response = post_instances(
        f"{stack.url}/studies",
        [encode(good), b"\x00" * 300],
        headers={"Accept": "application/dicom+xml"},
    )

    assert response.status_code == 202
    assert response.headers["Content-Type"] == "application/dicom+xml"
    root = ElementTree.fromstring(response.content)
    assert root.tag == f"{{{NATIVE_DICOM_NAMESPACE}}}NativeDicomModel"
    failed = root.find("d:DicomAttribute[@tag='00081198']", XML_NS)
    assert failed is not None
    assert failed.get("keyword") == "FailedSOPSequence"
    reason = failed.find("d:Item/d:DicomAttribute[@tag='00081197']/d:Value", XML_NS)
    assert reason is not None
    assert reason.text == str(0xC000)
    parsed = _load_xml_dataset(root)
    (referenced,) = parsed.ReferencedSOPSequence
    assert referenced.ReferencedSOPInstanceUID == good.SOPInstanceUID
    assert referenced.ReferencedSOPClassUID == good.SOPClassUID
    assert referenced.RetrieveURL.endswith(f"/instances/{good.SOPInstanceUID}")
    assert parsed.RetrieveURL == f"{stack.url}/studies/{good.StudyInstanceUID}"
    assert parsed.FailedSOPSequence[0].FailureReason == 0xC000


def test_accept_negotiation(stack: Stack) -> None:
    cases = [
        (None, "application/dicom+json"),
        ("*/*", "application/dicom+json"),
        ("application/*", "application/dicom+json"),
        ("application/dicom+xml, application/dicom+json; q=0.5", "application/dicom+xml"),
        ("application/dicom+xml; q=0.2, application/dicom+json", "application/dicom+json"),
    ]
    for accept, expected in cases:
        headers = {} if accept is None else {"Accept": accept}
        response = post_instances(f"{stack.url}/studies", [encode(fresh())], headers=headers)
        assert response.status_code == 200, accept
        assert response.headers["Content-Type"] == expected, accept

    response = post_instances(
        f"{stack.url}/studies", [encode(fresh())], headers={"Accept": "text/html"}
    )

    assert response.status_code == 406
    assert "application/dicom+json or application/dicom+xml" in response.json()["error"]
    assert len(stack.instance_keys()) == len(cases)


def test_retrieve_url_type_2(stack: Stack) -> None:
    """The study Retrieve URL is present but empty unless exactly one study was stored."""
    two_studies = post_instances(
        f"{stack.url}/studies", [encode(fresh()), encode(fresh("MR_small.dcm"))]
    )
    none_stored = post_instances(f"{stack.url}/studies", [b"not DICOM" * 30])

    assert two_studies.status_code == 200
    assert two_studies.json()[RETRIEVE_URL] == {"vr": "UR"}
    assert none_stored.status_code == 409
    assert none_stored.json()[RETRIEVE_URL] == {"vr": "UR"}
