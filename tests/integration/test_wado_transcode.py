"""WADO-RS transcoding over HTTP: instances, frames and rendered images of pydicom's test files.

Every check decodes what the server sent with pydicom and compares it with pydicom's decode
of the stored file. Lossy JPEG decoders differ by a few grey levels from each other (IDCT
rounding), so the reference decode of a compressed file uses pylibjpeg, the decoder that
Cirrus tries first, whenever pylibjpeg can decode that syntax.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pack_bits
from pydicom.uid import UID, generate_uid

from cirrus.config import Settings
from cirrus.dicomweb.multipart import Part, parse_multipart_related
from cirrus.storage.objects import ObjectStore
from tests.integration.test_dicomweb_stow_wado import Dicomweb, encode, post_parts, start_dicomweb
from tests.pydicom_files import all_bundled, bundled

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
DICOM = 'multipart/related; type="application/dicom"'
OCTETS = 'multipart/related; type="application/octet-stream"'


@pytest.fixture
def service(settings: Settings, object_store: ObjectStore) -> Iterator[Dicomweb]:
    dicomweb = start_dicomweb(settings, object_store)
    yield dicomweb
    dicomweb.server.shutdown()


def reference_pixels(ds: pydicom.Dataset) -> np.ndarray:
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed and "pylibjpeg" in get_decoder(syntax).available_plugins:
        ds.pixel_array_options(decoding_plugin="pylibjpeg")
    return ds.pixel_array


def one_file_per_syntax() -> dict[str, Path]:
    """Pick, for each transfer syntax among the bundled files, one that pydicom decodes."""
    chosen: dict[str, Path] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in all_bundled():
            try:
                ds = pydicom.dcmread(path)
                syntax = str(ds.file_meta.TransferSyntaxUID)
                if syntax in chosen or "PixelData" not in ds or "SOPInstanceUID" not in ds:
                    continue
                reference_pixels(ds)
            except Exception:
                continue
            chosen[syntax] = path
    return chosen


FILES_BY_SYNTAX = one_file_per_syntax()


def store(service: Dicomweb, *datasets: pydicom.Dataset | Path) -> None:
    bodies = [item.read_bytes() if isinstance(item, Path) else encode(item) for item in datasets]
    assert post_parts(f"{service.url}/studies", bodies).status_code == 200
    service.ingest_all()


def instance_url(service: Dicomweb, ds: pydicom.Dataset) -> str:
    return (
        f"{service.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def get_parts(url: str, accept: str | None) -> tuple[requests.Response, list[Part]]:
    headers = {} if accept is None else {"Accept": accept}
    response = requests.get(url, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response, parse_multipart_related(
        response.headers["Content-Type"], response.content
    ).parts


def part_dataset(part: Part) -> pydicom.Dataset:
    """Read a part and check that its label names the transfer syntax it is in."""
    ds = pydicom.dcmread(BytesIO(part.body))
    assert part.content_type == (
        f"application/dicom; transfer-syntax={ds.file_meta.TransferSyntaxUID}"
    )
    return ds


def test_bundled_syntaxes_cover_the_common_ones() -> None:
    expected = {EXPLICIT, IMPLICIT, "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5"}
    expected |= {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80"}
    expected |= {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
    assert expected <= set(FILES_BY_SYNTAX)


@pytest.mark.parametrize("syntax", sorted(FILES_BY_SYNTAX))
def test_every_stored_syntax_decodes(service: Dicomweb, syntax: str) -> None:
    path = FILES_BY_SYNTAX[syntax]
    original = pydicom.dcmread(path)
    expected = reference_pixels(original)
    if "StudyInstanceUID" in original and "SeriesInstanceUID" in original:
        store(service, path)
    else:
        # Some of the JPEG-LS test files have no study or series, which STOW-RS requires.
        original.StudyInstanceUID = generate_uid()
        original.SeriesInstanceUID = generate_uid()
        store(service, original)

    for target in (EXPLICIT, IMPLICIT):
        accept = f"{DICOM}; transfer-syntax={target}"
        _, (part,) = get_parts(instance_url(service, original), accept)
        ds = part_dataset(part)
        assert ds.file_meta.TransferSyntaxUID == target, path.name
        assert ds.SOPInstanceUID == original.SOPInstanceUID, path.name
        assert np.array_equal(ds.pixel_array, expected), f"{path.name} as {target}"


def test_lossless_targets_pixel_equal(service: Dicomweb) -> None:
    original = pydicom.dcmread(bundled("CT_small.dcm"))
    store(service, original)
    targets = [
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.1.99",
    ]
    for target in targets:
        _, (part,) = get_parts(
            instance_url(service, original), f"{DICOM}; transfer-syntax={target}"
        )
        ds = part_dataset(part)
        assert ds.file_meta.TransferSyntaxUID == target
        assert np.array_equal(ds.pixel_array, original.pixel_array), target
        assert "LossyImageCompression" not in ds or ds.LossyImageCompression == "00", target


def test_default_and_wildcard_syntax(service: Dicomweb) -> None:
    path = bundled("MR_small_jp2klossless.dcm")
    original = pydicom.dcmread(path)
    store(service, path)
    url = instance_url(service, original)
    for accept in (None, "*/*", DICOM, f"{DICOM}; transfer-syntax={EXPLICIT}"):
        _, (part,) = get_parts(url, accept)
        assert part_dataset(part).file_meta.TransferSyntaxUID == EXPLICIT, accept
    for accept in (f"{DICOM}; transfer-syntax=*", f'{DICOM}; transfer-syntax="*"'):
        _, (part,) = get_parts(url, accept)
        assert part.body == path.read_bytes(), accept
        assert part.content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90"


def test_study_parts_pick_own_syntax(service: Dicomweb) -> None:
    ct = pydicom.dcmread(bundled("CT_small.dcm"))
    lossy = pydicom.dcmread(bundled("SC_rgb_jpeg_dcmtk.dcm"))
    lossy.StudyInstanceUID = ct.StudyInstanceUID
    store(service, ct, lossy)
    url = f"{service.url}/studies/{ct.StudyInstanceUID}"
    # Both instances can be decoded and encoded losslessly in JPEG-LS, the first choice.
    accept = f"{DICOM}; transfer-syntax=1.2.840.10008.1.2.4.80, {DICOM}; transfer-syntax=*; q=0.5"
    _, parts = get_parts(url, accept)
    syntaxes = {part_dataset(part).SOPInstanceUID: part.content_type for part in parts}
    assert syntaxes == {
        ct.SOPInstanceUID: "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.80",
        lossy.SOPInstanceUID: "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.80",
    }
    # JPEG Baseline cannot be produced, so only the instance stored that way gets it.
    accept = f"{DICOM}; transfer-syntax=1.2.840.10008.1.2.4.50, {DICOM}; q=0.2"
    _, parts = get_parts(url, accept)
    syntaxes = {part_dataset(part).SOPInstanceUID: part.content_type for part in parts}
    assert syntaxes == {
        ct.SOPInstanceUID: f"application/dicom; transfer-syntax={EXPLICIT}",
        lossy.SOPInstanceUID: "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50",
    }


def test_not_acceptable_reasons(service: Dicomweb) -> None:
    original = pydicom.dcmread(bundled("CT_small.dcm"))
    store(service, original)
    url = instance_url(service, original)
    cases = {
        f"{DICOM}; transfer-syntax=1.2.840.10008.1.2.4.50": "1.2.840.10008.1.2.4.50",
        f"{DICOM}; transfer-syntax=1.2.840.10008.1.2.4.201": "1.2.840.10008.1.2.4.201",
        f"*/*, {DICOM}; transfer-syntax={EXPLICIT}; q=0": "cannot be sent as",
    }
    for accept, named in cases.items():
        response = requests.get(url, headers={"Accept": accept}, timeout=30)
        assert response.status_code == 406, accept
        message = response.json()["error"]
        assert f"instance {original.SOPInstanceUID} is stored in transfer syntax" in message
        assert named in message, accept


def test_undecodable_pixels_500(service: Dicomweb) -> None:
    broken = pydicom.dcmread(bundled("JPEG2000.dcm"))
    broken.SOPInstanceUID = generate_uid()
    broken.file_meta.MediaStorageSOPInstanceUID = broken.SOPInstanceUID
    broken.PixelData = broken.PixelData[:40] + b"\x00" * (len(broken.PixelData) - 40)
    store(service, broken)
    response = requests.get(instance_url(service, broken), headers={"Accept": DICOM}, timeout=30)
    # A lossy instance that cannot be decoded is sent as stored, as PS3.18 8.7.3.4 allows.
    assert response.status_code == 200
    (part,) = parse_multipart_related(response.headers["Content-Type"], response.content).parts
    assert part.content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.91"
    strict = requests.get(
        instance_url(service, broken),
        headers={"Accept": f"{DICOM}; transfer-syntax={EXPLICIT}"},
        timeout=30,
    )
    # The stored data is at fault, not the Accept header, so 500 and not 406.
    assert strict.status_code == 500
    assert "could not be converted" in strict.json()["error"]
    frames = frames_url(service, broken, "1")
    _, (frame,) = get_parts(frames, OCTETS)
    assert frame.content_type == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.91"
    decoded = requests.get(
        frames, headers={"Accept": f"{OCTETS}; transfer-syntax={EXPLICIT}"}, timeout=30
    )
    assert decoded.status_code == 500
    assert "could not be produced" in decoded.json()["error"]
    rendered = requests.get(f"{instance_url(service, broken)}/rendered", timeout=30)
    assert rendered.status_code == 500


def frames_url(service: Dicomweb, ds: pydicom.Dataset, frames: str) -> str:
    return f"{instance_url(service, ds)}/frames/{frames}"


def test_frames_big_endian_little_octets(service: Dicomweb) -> None:
    path = bundled("rtdose_expb.dcm")
    original = pydicom.dcmread(path)
    store(service, path)
    pixels = original.pixel_array
    little = pixels.astype(pixels.dtype.newbyteorder("<"))
    for accept in (None, OCTETS, f"{OCTETS}; transfer-syntax=*"):
        _, parts = get_parts(frames_url(service, original, "1,3"), accept)
        assert [part.body for part in parts] == [little[0].tobytes(), little[2].tobytes()]
        for part in parts:
            assert part.content_type == f"application/octet-stream; transfer-syntax={EXPLICIT}"


def test_frames_compressed_decoded(service: Dicomweb) -> None:
    path = bundled("SC_rgb_rle_2frame.dcm")
    original = pydicom.dcmread(path)
    store(service, path)
    _, parts = get_parts(frames_url(service, original, "2,1"), OCTETS)
    pixels = original.pixel_array
    assert [part.body for part in parts] == [pixels[1].tobytes(), pixels[0].tobytes()]


def decode_codestream(data: bytes, syntax: str, ds: pydicom.Dataset) -> np.ndarray:
    options = {
        "rows": ds.Rows,
        "columns": ds.Columns,
        "samples_per_pixel": ds.SamplesPerPixel,
        "bits_allocated": ds.BitsAllocated,
        "bits_stored": ds.BitsStored,
        "pixel_representation": ds.PixelRepresentation,
        "photometric_interpretation": ds.PhotometricInterpretation,
        "planar_configuration": 0,
        "number_of_frames": 1,
    }
    # The decoder reads encapsulated Pixel Data, so the bare codestream gets its item headers.
    array, _ = get_decoder(UID(syntax)).as_array(encapsulate([data]), **options)
    return array


def test_frame_single_part_jls(service: Dicomweb) -> None:
    original = pydicom.dcmread(bundled("CT_small.dcm"))
    store(service, original)
    response = requests.get(
        frames_url(service, original, "1"), headers={"Accept": "image/jls"}, timeout=30
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"
    decoded = decode_codestream(response.content, "1.2.840.10008.1.2.4.80", original)
    assert np.array_equal(decoded, original.pixel_array)


def test_frames_multipart_jp2(service: Dicomweb) -> None:
    path = bundled("SC_rgb_rle_2frame.dcm")
    original = pydicom.dcmread(path)
    store(service, path)
    response, parts = get_parts(
        frames_url(service, original, "1,2"), 'multipart/related; type="image/jp2"'
    )
    assert 'type="image/jp2"' in response.headers["Content-Type"]
    assert len(parts) == 2
    for index, part in enumerate(parts):
        assert part.content_type == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"
        decoded = decode_codestream(part.body, "1.2.840.10008.1.2.4.90", original)
        assert np.array_equal(decoded, original.pixel_array[index]), index


def test_frames_jpeg_as_stored_or_406(service: Dicomweb) -> None:
    jpeg_path = bundled("SC_rgb_jpeg_dcmtk.dcm")
    jpeg = pydicom.dcmread(jpeg_path)
    ct = pydicom.dcmread(bundled("CT_small.dcm"))
    store(service, jpeg_path, ct)
    _, (part,) = get_parts(frames_url(service, jpeg, "1"), 'multipart/related; type="image/jpeg"')
    assert part.body == next(generate_frames(jpeg.PixelData, number_of_frames=1))
    assert part.content_type == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    response = requests.get(
        frames_url(service, ct, "1"), headers={"Accept": "image/jpeg"}, timeout=30
    )
    assert response.status_code == 406
    assert "cannot be sent as image/jpeg" in response.json()["error"]


def test_frames_bad_numbers(service: Dicomweb) -> None:
    path = bundled("SC_rgb_rle_2frame.dcm")
    original = pydicom.dcmread(path)
    store(service, path)
    assert requests.get(frames_url(service, original, "3"), timeout=30).status_code == 404
    assert requests.get(frames_url(service, original, "1,3"), timeout=30).status_code == 404
    for bad in ("0", "-1", "x", "1,,2", "1.5"):
        response = requests.get(frames_url(service, original, bad), timeout=30)
        assert response.status_code == 400, bad


def test_rendered_multiframe_frames(service: Dicomweb) -> None:
    path = bundled("SC_rgb_rle_2frame.dcm")
    original = pydicom.dcmread(path)
    store(service, path)
    url = instance_url(service, original)
    whole = requests.get(f"{url}/rendered", headers={"Accept": "image/png"}, timeout=30)
    first = requests.get(f"{url}/frames/1/rendered", headers={"Accept": "image/png"}, timeout=30)
    second = requests.get(f"{url}/frames/2/rendered", headers={"Accept": "image/png"}, timeout=30)
    assert whole.status_code == first.status_code == second.status_code == 200
    frames = original.pixel_array
    assert np.array_equal(np.asarray(Image.open(BytesIO(whole.content))), frames[0])
    assert np.array_equal(np.asarray(Image.open(BytesIO(first.content))), frames[0])
    assert np.array_equal(np.asarray(Image.open(BytesIO(second.content))), frames[1])
    both, parts = get_parts(f"{url}/frames/2,1/rendered", 'multipart/related; type="image/png"')
    assert 'type="image/png"' in both.headers["Content-Type"]
    assert [part.content_type for part in parts] == ["image/png", "image/png"]
    rendered = [np.asarray(Image.open(BytesIO(part.body))) for part in parts]
    assert np.array_equal(rendered[0], frames[1])
    assert np.array_equal(rendered[1], frames[0])
    past = requests.get(f"{url}/frames/1,3/rendered", timeout=30)
    assert past.status_code == 404


def test_rendered_gif_region_and_windows(service: Dicomweb) -> None:
    original = pydicom.dcmread(bundled("CT_small.dcm"))
    store(service, original)
    url = f"{instance_url(service, original)}/rendered"
    gif = requests.get(f"{url}?viewport=32,16", headers={"Accept": "image/gif"}, timeout=30)
    assert gif.status_code == 200
    assert gif.headers["Content-Type"] == "image/gif"
    assert Image.open(BytesIO(gif.content)).size == (16, 16)
    # The left half of the image, flipped, in a 64x128 viewport.
    region = requests.get(
        f"{url}?viewport=64,128,0,0,-64,128", headers={"Accept": "image/png"}, timeout=30
    )
    assert region.status_code == 200
    assert Image.open(BytesIO(region.content)).size == (64, 128)
    images = {}
    for function in ("linear", "linear-exact", "sigmoid"):
        response = requests.get(
            f"{url}?window=40,400,{function}", headers={"Accept": "image/png"}, timeout=30
        )
        assert response.status_code == 200, function
        images[function] = np.asarray(Image.open(BytesIO(response.content)))
    assert not np.array_equal(images["linear"], images["sigmoid"])


def test_rendered_bad_parameters_400(service: Dicomweb) -> None:
    original = pydicom.dcmread(bundled("CT_small.dcm"))
    store(service, original)
    url = f"{instance_url(service, original)}/rendered"
    for query in (
        "window=40",
        "window=40,0",
        "window=a,b",
        "window=40,400,cubic",
        "viewport=0,10",
        "viewport=10",
        "viewport=10,10,0,0,0,5",
        "viewport=10,10,0,0,999,5",
        "viewport=10,10,-1,0,5,5",
        "quality=0",
        "quality=high",
    ):
        response = requests.get(f"{url}?{query}", timeout=30)
        assert response.status_code == 400, query
        assert response.json()["error"], query


def test_big_endian_keeps_other_elements(service: Dicomweb) -> None:
    original = pydicom.dcmread(bundled("MR_small_bigendian.dcm"))
    store(service, bundled("MR_small_bigendian.dcm"))
    _, (part,) = get_parts(instance_url(service, original), DICOM)
    ds = part_dataset(part)
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT
    for elem in original:
        if elem.tag != 0x7FE00010:
            assert ds[elem.tag].value == elem.value, elem.tag


def test_frames_one_bit_and_deflated(service: Dicomweb) -> None:
    one_bit = pydicom.dcmread(bundled("liver_1frame.dcm"))
    deflated = pydicom.dcmread(bundled("image_dfl.dcm"))
    store(service, bundled("liver_1frame.dcm"), bundled("image_dfl.dcm"))
    _, (part,) = get_parts(frames_url(service, one_bit, "1"), OCTETS)
    assert part.body == pack_bits(one_bit.pixel_array)
    _, (part,) = get_parts(frames_url(service, deflated, "1"), OCTETS)
    assert part.body == deflated.pixel_array.tobytes()
    assert part.content_type == f"application/octet-stream; transfer-syntax={EXPLICIT}"
