"""Retrieves of stored instances whose Pixel Data is damaged, over HTTP on moto.

The request is valid and the stored object is at fault, so these get 500 with the reason,
never 406 (which tells the client to change Accept) nor 200 with short or empty frames.
"""

from __future__ import annotations

from collections.abc import Iterator

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from cirrus.config import Settings
from tests.integration.dicomweb_stack import Stack, encode, post_instances, read, running_stack

OCTET_STREAM = {"Accept": "application/octet-stream"}
AS_STORED = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
PNG = {"Accept": "image/png"}


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


def _variant(**changes: object) -> pydicom.Dataset:
    """Return CT_small (128x128, 16 bits, one frame) with a new SOP Instance UID and changes."""
    ds = read("CT_small.dcm")
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def _store(stack: Stack, ds: pydicom.Dataset, data: bytes | None = None) -> str:
    response = post_instances(f"{stack.url}/studies", [data or encode(ds)])
    assert response.status_code == 200, response.text
    stack.index()
    return (
        f"{stack.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def _assert_damaged(response: requests.Response) -> None:
    assert response.status_code == 500, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]


def test_short_pixel_data_frames(stack: Stack) -> None:
    ds = _variant()
    ds.PixelData = ds.PixelData[:1000]
    url = _store(stack, ds)
    _assert_damaged(requests.get(f"{url}/frames/1", headers=OCTET_STREAM, timeout=30))
    _assert_damaged(requests.get(f"{url}/frames/1", timeout=30))
    _assert_damaged(requests.get(f"{url}/rendered", headers=PNG, timeout=30))
    # The object as stored is still sent, because sending it needs no decoding.
    assert requests.get(url, headers=AS_STORED, timeout=30).status_code == 200


def test_more_frames_declared_than_stored(stack: Stack) -> None:
    url = _store(stack, _variant(NumberOfFrames=1000000))
    assert requests.get(f"{url}/frames/1", headers=OCTET_STREAM, timeout=30).status_code == 200
    _assert_damaged(requests.get(f"{url}/frames/999999", headers=OCTET_STREAM, timeout=30))
    _assert_damaged(requests.get(f"{url}/frames/2", timeout=30))


def test_huge_dimensions_frames(stack: Stack) -> None:
    url = _store(stack, _variant(Rows=60000, Columns=60000))
    response = requests.get(f"{url}/frames/1", headers=OCTET_STREAM, timeout=30)
    _assert_damaged(response)
    assert "7200000000" in response.json()["error"]
    _assert_damaged(requests.get(f"{url}/rendered", headers=PNG, timeout=30))


def test_mislabelled_syntax_not_406(stack: Stack) -> None:
    ds = _variant()
    explicit = b"1.2.840.10008.1.2.1\x00"
    data = encode(ds)
    assert data.count(explicit) == 1
    url = _store(stack, ds, data.replace(explicit, b"1.2.840.10008.1.2.5\x00"))
    response = requests.get(url, timeout=30)
    _assert_damaged(response)
    assert "could not be decoded" in response.json()["error"]
    assert requests.get(url, headers=AS_STORED, timeout=30).status_code == 200


def test_intact_frames_still_sent(stack: Stack) -> None:
    ds = _variant()
    url = _store(stack, ds)
    response = requests.get(f"{url}/frames/1", headers=OCTET_STREAM, timeout=30)
    assert response.status_code == 200
    assert response.content == ds.PixelData
