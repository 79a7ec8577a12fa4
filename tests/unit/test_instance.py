"""Header parsing of Part 10 objects, whole and as prefixes, on pydicom's test files."""

from __future__ import annotations

import zlib
from io import BytesIO

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from cirrus.archive import check_instance
from cirrus.dicom.dicomjson import dataset_to_json, find_bulk_element, instance_metadata
from cirrus.dicom.instance import (
    INFLATION_RATIO,
    MAX_INFLATED_BYTES,
    MIN_INFLATED_LIMIT,
    inflation_limit,
    parse_instance,
)
from cirrus.dicom.scan import TruncatedError
from cirrus.errors import InstanceTooLargeError, InvalidInstanceError
from tests.pydicom_files import bundled

FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "JPEG2000.dcm",
    "rtplan.dcm",
    "image_dfl.dcm",
    "SC_rgb_rle.dcm",
    "JPEG2000-embedded-sequence-delimiter.dcm",
    "UN_sequence.dcm",
    "nested_priv_SQ.dcm",
    "MR_small_padded.dcm",
]


def _bytes(name: str) -> bytes:
    return bundled(name).read_bytes()


@pytest.mark.parametrize("name", FILES)
def test_parse_matches_pydicom(name: str) -> None:
    data = _bytes(name)
    ds = pydicom.dcmread(bundled(name))
    header = parse_instance(data)
    assert header.dataset.get("SOPInstanceUID") == ds.get("SOPInstanceUID")
    assert header.transfer_syntax == ds.file_meta.TransferSyntaxUID
    expected = {f"{elem.tag:08X}" for elem in ds}
    got = set(instance_metadata(header))
    assert got == expected


@pytest.mark.parametrize("name", FILES)
def test_prefix_reads_need_more_or_succeed(name: str) -> None:
    data = _bytes(name)
    whole = instance_metadata(parse_instance(data))
    length = 256
    while True:
        try:
            header = parse_instance(data[:length], len(data))
        except TruncatedError as exc:
            assert exc.needed > length
            length = exc.needed
            continue
        break
    if header.tail_offset is not None:
        header.merge_tail(data[header.tail_offset :])
    if header.tail_unknown:
        assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    assert instance_metadata(header) == whole


@pytest.mark.parametrize("cut", [10, 131, 200, 1000, -100, -1])
def test_truncated_object_is_undecodable(cut: int) -> None:
    data = _bytes("CT_small.dcm")
    with pytest.raises(InvalidInstanceError) as info:
        parse_instance(data[:cut])
    assert info.value.undecodable


def test_garbage_is_not_part10() -> None:
    with pytest.raises(InvalidInstanceError, match="no 'DICM' prefix"):
        parse_instance(b"\x00" * 128 + b"JUNK" + b"\x01" * 300)


def test_bad_explicit_vr_is_rejected() -> None:
    data = bytearray(_bytes("CT_small.dcm"))
    # The file meta ends after (0002,0000) and the group length it holds.
    first_element = 132 + 12 + int.from_bytes(data[140:144], "little")
    data[first_element + 4 : first_element + 6] = b"\x01\x02"
    with pytest.raises(InvalidInstanceError, match="no valid VR"):
        parse_instance(bytes(data))


def test_missing_sop_instance_uid_is_named() -> None:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    del ds.SOPInstanceUID
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    header = parse_instance(buffer.getvalue())
    with pytest.raises(InvalidInstanceError, match=r"SOPInstanceUID \(0008,0018\)"):
        header.instance_key("default")


def test_bulk_paths_resolve_in_sequences() -> None:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    metadata = dataset_to_json(ds, path=())
    assert metadata["7FE00010"]["BulkDataURI"] == "bulkdata/7FE00010"
    element = find_bulk_element(ds, "7FE00010")
    assert element.value == ds.PixelData


def test_unknown_vr_is_undecodable() -> None:
    data = bytearray(bundled("CT_small.dcm").read_bytes())
    at = data.index(b"\x08\x00\x18\x00UI")
    data[at + 4 : at + 6] = b"UU"
    with pytest.raises(InvalidInstanceError, match="Unknown Value Representation") as info:
        check_instance(bytes(data), "default")
    assert info.value.undecodable


def test_truncated_deflate_stream_is_rejected() -> None:
    data = bundled("image_dfl.dcm").read_bytes()
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    inflated = zlib.decompress(data[meta_end:], -zlib.MAX_WBITS)
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    half = compressor.compress(inflated[: len(inflated) // 2]) + compressor.flush()
    with pytest.raises(InvalidInstanceError, match="truncated"):
        parse_instance(data[:meta_end] + half)
    with pytest.raises(InvalidInstanceError, match="deflated data set is truncated"):
        parse_instance(data[: meta_end + 200])


def test_image_without_pixel_data_is_rejected() -> None:
    data = bundled("CT_small.dcm").read_bytes()
    pixel = parse_instance(data).pixel_data
    assert pixel is not None
    cut = pixel.value_offset - 12  # the start of the (7FE0,0010) element header
    with pytest.raises(InvalidInstanceError, match="CT Image Storage instance has no Pixel Data"):
        check_instance(data[:cut], "default")


def _deflated_ct(pixel_bytes: int) -> bytes:
    """Return CT_small in Deflated Explicit VR LE with ``pixel_bytes`` of zero Pixel Data."""
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.Rows, ds.Columns = 1000, pixel_bytes // 2000
    ds.PixelData = bytes(pixel_bytes)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    with BytesIO() as buffer:
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


def test_deflate_bomb_is_refused_before_inflating() -> None:
    data = _deflated_ct(24 * 1024**2)
    assert len(data) < 100_000  # zeros deflate about a thousand times

    with pytest.raises(InstanceTooLargeError, match="inflates to more than 16777216 bytes"):
        check_instance(data, "default")


def test_deflated_instance_within_limit_is_read() -> None:
    header = parse_instance(_deflated_ct(4 * 1024**2))

    assert header.dataset.Rows == 1000
    assert header.pixel_data is not None
    assert inflation_limit(10) == MIN_INFLATED_LIMIT
    assert inflation_limit(1024**2) == INFLATION_RATIO * 1024**2
    assert inflation_limit(1024**3) == MAX_INFLATED_BYTES


def _with_uid(keyword: str, uid: str) -> bytes:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    setattr(ds, keyword, uid)
    with BytesIO() as buffer:
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


@pytest.mark.parametrize(
    "uid", ["abc", "1..2", ".1.2", "1.2.", "1.2-3", "1.2.3_x", "1.02.3", "1.2.3.ABC", "1" * 65]
)
@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"])
def test_invalid_uid_is_rejected(keyword: str, uid: str) -> None:
    with pytest.raises(InvalidInstanceError, match=r"is not a valid UID; PS3\.5 9\.1") as info:
        check_instance(_with_uid(keyword, uid), "default")
    assert keyword in str(info.value)
    assert not info.value.undecodable


@pytest.mark.parametrize("uid", ["0", "0.1", "1.20.300", "2.25." + "9" * 58])
def test_conformant_uid_is_accepted(uid: str) -> None:
    checked = check_instance(_with_uid("SeriesInstanceUID", uid), "default")

    assert checked.key.series == uid
