"""Decoded colour over HTTP: frames and transcoded instances of pydicom's JPEG colour files.

Octet-stream frames, frames re-encoded in another syntax and a transcoded instance carry the
same YCbCr values, and the instance is labelled YBR_FULL. The reference values come from
pylibjpeg, the decoder that Cirrus tries first.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array
from pydicom.pixels.decoders.base import get_decoder

from cirrus.config import Settings
from cirrus.dicomweb.multipart import Part, parse_multipart_related
from tests.integration.dicomweb_stack import Stack, post_instances, running_stack
from tests.pydicom_files import bundled

EXPLICIT = "1.2.840.10008.1.2.1"
RLE = "1.2.840.10008.1.2.5"
JPEG_LS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
DICOM = 'multipart/related; type="application/dicom"'
OCTETS = 'multipart/related; type="application/octet-stream"'
# JPEG Baseline files whose codestream is YCbCr, with the Photometric Interpretation they store.
YBR_FILES = {
    "SC_rgb_dcmtk_+eb+cy+n2.dcm": "YBR_FULL",
    "SC_rgb_dcmtk_+eb+cy+np.dcm": "YBR_FULL_422",
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": "YBR_FULL_422",
    "examples_ybr_color.dcm": "YBR_FULL_422",
}


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


def store_file(stack: Stack, path: Path) -> pydicom.Dataset:
    response = post_instances(f"{stack.url}/studies", [path.read_bytes()])
    assert response.status_code == 200, response.text
    assert stack.index() >= 1
    return pydicom.dcmread(path)


def instance_url(stack: Stack, ds: pydicom.Dataset) -> str:
    return (
        f"{stack.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def get_parts(url: str, accept: str) -> list[Part]:
    response = requests.get(url, headers={"Accept": accept}, timeout=60)
    assert response.status_code == 200, response.text
    return parse_multipart_related(response.headers["Content-Type"], response.content).parts


def decoded(ds: pydicom.Dataset, as_rgb: bool) -> np.ndarray:
    """Decode the first frame with pylibjpeg, with or without conversion to RGB."""
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    array, _ = decoder.as_array(ds, index=0, decoding_plugin="pylibjpeg", as_rgb=as_rgb)
    return array


def first_frame(ds: pydicom.Dataset) -> tuple[bytes, np.ndarray]:
    """Return the native Pixel Data bytes and the pixel array of the first frame of ``ds``."""
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    pixels = ds.pixel_array
    return bytes(ds.PixelData[:size]), pixels[0] if int(ds.get("NumberOfFrames", 1)) > 1 else pixels


def transcoded(stack: Stack, ds: pydicom.Dataset, syntax: str) -> pydicom.Dataset:
    (part,) = get_parts(instance_url(stack, ds), f"{DICOM}; transfer-syntax={syntax}")
    assert part.content_type == f"application/dicom; transfer-syntax={syntax}"
    return pydicom.dcmread(BytesIO(part.body))


@pytest.mark.parametrize("name", sorted(YBR_FILES))
def test_ybr_frames_keep_ycbcr(stack: Stack, name: str) -> None:
    original = store_file(stack, bundled(name))
    assert original.PhotometricInterpretation == YBR_FILES[name]

    (part,) = get_parts(f"{instance_url(stack, original)}/frames/1", OCTETS)

    assert part.content_type == f"application/octet-stream; transfer-syntax={EXPLICIT}"
    ycbcr = decoded(original, as_rgb=False)
    assert len(part.body) == original.Rows * original.Columns * 3
    assert part.body == ycbcr.tobytes()
    assert part.body != decoded(original, as_rgb=True).tobytes()


@pytest.mark.parametrize("name", sorted(YBR_FILES))
def test_ybr_instance_native_is_ybr_full(stack: Stack, name: str) -> None:
    original = store_file(stack, bundled(name))
    (frame,) = get_parts(f"{instance_url(stack, original)}/frames/1", OCTETS)

    ds = transcoded(stack, original, EXPLICIT)

    assert ds.PhotometricInterpretation == "YBR_FULL"
    assert ds.PlanarConfiguration == 0
    assert ds.LossyImageCompression == "01"
    data, pixels = first_frame(ds)
    assert data == frame.body
    # pydicom converts YBR_FULL to RGB itself; libjpeg's conversion rounds a little otherwise.
    difference = pixels.astype(int) - decoded(original, as_rgb=True).astype(int)
    assert np.abs(difference).max() <= 2, name


@pytest.mark.parametrize("name", sorted(YBR_FILES))
def test_ybr_instance_compressed_keeps_ycbcr(stack: Stack, name: str) -> None:
    original = store_file(stack, bundled(name))
    ycbcr = decoded(original, as_rgb=False)

    for syntax in (RLE, JPEG_LS, JPEG_2000_LOSSLESS):
        ds = transcoded(stack, original, syntax)
        assert ds.PhotometricInterpretation == "YBR_FULL", syntax
        pixels = pixel_array(ds, as_rgb=False)
        first = pixels[0] if int(ds.get("NumberOfFrames", 1)) > 1 else pixels
        assert np.array_equal(first, ycbcr), syntax


@pytest.mark.parametrize("name", sorted(YBR_FILES))
def test_ybr_frames_reencoded_keep_ycbcr(stack: Stack, name: str) -> None:
    original = store_file(stack, bundled(name))
    url = f"{instance_url(stack, original)}/frames/1"
    options = {
        "rows": original.Rows,
        "columns": original.Columns,
        "samples_per_pixel": 3,
        "bits_allocated": 8,
        "bits_stored": 8,
        "pixel_representation": 0,
        "photometric_interpretation": "YBR_FULL",
        "planar_configuration": 0,
        "number_of_frames": 1,
    }

    for media_type, syntax in (("image/jls", JPEG_LS), ("image/jp2", JPEG_2000_LOSSLESS)):
        (part,) = get_parts(url, f'multipart/related; type="{media_type}"')
        assert part.content_type == f"{media_type}; transfer-syntax={syntax}"
        decoder = get_decoder(pydicom.uid.UID(syntax))
        array, _ = decoder.as_array(encapsulate([part.body]), as_rgb=False, **options)
        assert np.array_equal(array, decoded(original, as_rgb=False)), media_type


def test_rgb_jpeg_stays_rgb(stack: Stack) -> None:
    original = store_file(stack, bundled("SC_rgb_dcmtk_+eb+cr.dcm"))
    assert original.PhotometricInterpretation == "RGB"
    rgb = decoded(original, as_rgb=True)

    (frame,) = get_parts(f"{instance_url(stack, original)}/frames/1", OCTETS)
    ds = transcoded(stack, original, EXPLICIT)

    assert frame.body == rgb.tobytes()
    assert ds.PhotometricInterpretation == "RGB"
    assert first_frame(ds)[0] == rgb.tobytes()


def test_metadata_keeps_stored_photometric(stack: Stack) -> None:
    original = store_file(stack, bundled("SC_rgb_dcmtk_+eb+cy+np.dcm"))

    response = requests.get(
        f"{instance_url(stack, original)}/metadata",
        headers={"Accept": "application/dicom+json"},
        timeout=60,
    )

    assert response.status_code == 200, response.text
    (item,) = response.json()
    assert item["00280004"]["Value"] == ["YBR_FULL_422"]


# Native YBR_FULL_422: two horizontally adjacent pixels share one CB and one CR value, so a
# frame has two bytes a pixel (PS3.3 C.7.6.3.1.2).
NATIVE_422 = "SC_ybr_full_422_uncompressed.dcm"


def test_ybr_422_native_frames_as_stored(stack: Stack) -> None:
    original = store_file(stack, bundled(NATIVE_422))
    assert original.PhotometricInterpretation == "YBR_FULL_422"
    assert original.file_meta.TransferSyntaxUID == EXPLICIT

    for accept in (OCTETS, f"{OCTETS}; transfer-syntax=*"):
        (part,) = get_parts(f"{instance_url(stack, original)}/frames/1", accept)
        assert part.content_type == f"application/octet-stream; transfer-syntax={EXPLICIT}"
        assert len(part.body) == original.Rows * original.Columns * 2, accept
        assert part.body == original.PixelData, accept


def test_ybr_422_native_frames_reencoded(stack: Stack) -> None:
    original = store_file(stack, bundled(NATIVE_422))
    ycbcr = pixel_array(original, as_rgb=False)
    options = {
        "rows": original.Rows,
        "columns": original.Columns,
        "samples_per_pixel": 3,
        "bits_allocated": 8,
        "bits_stored": 8,
        "pixel_representation": 0,
        "photometric_interpretation": "YBR_FULL",
        "planar_configuration": 0,
        "number_of_frames": 1,
    }
    encoded = (
        ("image/dicom-rle", RLE),
        ("image/jls", JPEG_LS),
        ("image/jp2", JPEG_2000_LOSSLESS),
    )

    for media_type, syntax in encoded:
        url = f"{instance_url(stack, original)}/frames/1"
        (part,) = get_parts(url, f'multipart/related; type="{media_type}"')
        assert part.content_type == f"{media_type}; transfer-syntax={syntax}"
        decoder = get_decoder(pydicom.uid.UID(syntax))
        array, _ = decoder.as_array(encapsulate([part.body]), as_rgb=False, **options)
        assert np.array_equal(array, ycbcr), media_type


def test_ybr_422_native_instance_transcoded(stack: Stack) -> None:
    original = store_file(stack, bundled(NATIVE_422))
    ycbcr = pixel_array(original, as_rgb=False)

    as_stored = transcoded(stack, original, EXPLICIT)
    assert as_stored.PhotometricInterpretation == "YBR_FULL_422"
    assert as_stored.PixelData == original.PixelData
    for syntax in (RLE, JPEG_LS, JPEG_2000_LOSSLESS):
        ds = transcoded(stack, original, syntax)
        assert ds.PhotometricInterpretation == "YBR_FULL", syntax
        assert np.array_equal(pixel_array(ds, as_rgb=False), ycbcr), syntax


def test_ybr_422_native_rendered(stack: Stack) -> None:
    original = store_file(stack, bundled(NATIVE_422))

    response = requests.get(
        f"{instance_url(stack, original)}/rendered", headers={"Accept": "image/png"}, timeout=60
    )

    assert response.status_code == 200, response.text
    image = Image.open(BytesIO(response.content))
    assert image.size == (original.Columns, original.Rows)
    assert image.mode == "RGB"
    rendered = np.asarray(image).astype(int)
    assert np.abs(rendered - pixel_array(original).astype(int)).max() <= 1
