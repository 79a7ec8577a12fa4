"""``transfer-syntax=*`` on instances stored in Explicit VR Big Endian, over HTTP on moto.

PS3.18 8.7.3 states that big endian is not used in web services, so such an instance is sent in
Explicit VR Little Endian and labelled so, while other instances are still sent as stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO

import numpy as np
import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from cirrus.config import Settings
from cirrus.dicomweb.multipart import Part, parse_multipart_related
from tests.integration.dicomweb_stack import Stack, encode, post_instances, running_stack
from tests.pydicom_files import bundled

BIG_ENDIAN = "1.2.840.10008.1.2.2"
EXPLICIT = "1.2.840.10008.1.2.1"
ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
BIG_ENDIAN_FILES = ["MR_small_bigendian.dcm", "rtdose_expb.dcm"]


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


def get_parts(url: str, accept: str) -> list[Part]:
    response = requests.get(url, headers={"Accept": accept}, timeout=60)
    assert response.status_code == 200, response.text
    return parse_multipart_related(response.headers["Content-Type"], response.content).parts


def instance_url(stack: Stack, ds: pydicom.Dataset) -> str:
    return (
        f"{stack.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


@pytest.mark.parametrize("name", BIG_ENDIAN_FILES)
def test_wildcard_sends_little_endian(stack: Stack, name: str) -> None:
    path = bundled(name)
    original = pydicom.dcmread(path)
    assert original.file_meta.TransferSyntaxUID == BIG_ENDIAN
    assert post_instances(f"{stack.url}/studies", [path.read_bytes()]).status_code == 200
    stack.index()

    (part,) = get_parts(instance_url(stack, original), ANY_SYNTAX)

    assert part.content_type == f"application/dicom; transfer-syntax={EXPLICIT}"
    ds = pydicom.dcmread(BytesIO(part.body))
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert ds.PatientName == original.PatientName
    assert np.array_equal(ds.pixel_array, original.pixel_array)


def test_study_mixes_stored_and_little_endian(stack: Stack) -> None:
    big = pydicom.dcmread(bundled("MR_small_bigendian.dcm"))
    jpeg_path = bundled("MR_small_jp2klossless.dcm")
    jpeg = pydicom.dcmread(jpeg_path)
    big.StudyInstanceUID = jpeg.StudyInstanceUID = generate_uid()
    big.SOPInstanceUID = generate_uid()
    big_body = encode(big)
    assert pydicom.dcmread(BytesIO(big_body)).file_meta.TransferSyntaxUID == BIG_ENDIAN
    response = post_instances(f"{stack.url}/studies", [big_body, encode(jpeg)])
    assert response.status_code == 200, response.text
    stack.index()

    parts = get_parts(f"{stack.url}/studies/{big.StudyInstanceUID}", ANY_SYNTAX)

    labels = {pydicom.dcmread(BytesIO(p.body)).SOPInstanceUID: p.content_type for p in parts}
    stored = jpeg.file_meta.TransferSyntaxUID
    assert labels == {
        big.SOPInstanceUID: f"application/dicom; transfer-syntax={EXPLICIT}",
        jpeg.SOPInstanceUID: f"application/dicom; transfer-syntax={stored}",
    }


def test_named_big_endian_as_stored(stack: Stack) -> None:
    path = bundled("MR_small_bigendian.dcm")
    original = pydicom.dcmread(path)
    assert post_instances(f"{stack.url}/studies", [path.read_bytes()]).status_code == 200
    stack.index()
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={BIG_ENDIAN}'

    (part,) = get_parts(instance_url(stack, original), accept)

    assert part.content_type == f"application/dicom; transfer-syntax={BIG_ENDIAN}"
    assert part.body == path.read_bytes()


def test_big_endian_never_produced(stack: Stack) -> None:
    path = bundled("MR_small.dcm")
    original = pydicom.dcmread(path)
    assert post_instances(f"{stack.url}/studies", [path.read_bytes()]).status_code == 200
    stack.index()
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={BIG_ENDIAN}'

    response = requests.get(instance_url(stack, original), headers={"Accept": accept}, timeout=60)

    assert response.status_code == 406
