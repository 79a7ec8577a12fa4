"""Fuzzing of the DICOM header parser on the paths of ingest and STOW-RS.

Inputs are pydicom's bundled files, mutated (truncated, bytes flipped, lengths and VRs
overwritten, unclosed or deeply nested sequences inserted, preamble or file meta dropped), and
random bytes. Ingest (``read_header`` with ranged reads, ``instance_metadata``, the JSON that
the index stores) and STOW-RS (``store_instances`` on an in-memory store) must either accept
the bytes or reject them with ``InvalidInstanceError``, and any other exception fails the test.
Work is bounded by bytes read: ``read_header`` fetches at most ``MAX_READ_FACTOR`` times the
object's size plus ``MAX_READ_SLACK`` bytes, in at most ``MAX_GETS`` requests.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cirrus.archive import check_header
from cirrus.dicom.dicomjson import instance_metadata
from cirrus.dicom.instance import parse_instance
from cirrus.dicom.scan import MAX_SEQUENCE_DEPTH, Encoding, read_element, scan_elements
from cirrus.dicomweb.stow import FailureReason, store_instances
from cirrus.errors import InvalidInstanceError, NotFoundError
from cirrus.ingest import read_header
from cirrus.storage.objects import Admission, StoredObject
from tests.fuzzing import fuzz_settings
from tests.pydicom_files import bundled

SEEDS = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "rtplan.dcm",
    "image_dfl.dcm",
    "SC_rgb_rle.dcm",
    "UN_sequence.dcm",
    "nested_priv_SQ.dcm",
    "JPEG2000.dcm",
)
KEY = "default/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5.dcm"
SITE = "default"
# pydicom warns about each invalid value it decodes, which mutated files are full of.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
# read_header reads the object at most once in ranges, once whole and once more for the
# elements after Pixel Data, plus the 8 bytes of a final sequence delimiter.
MAX_READ_FACTOR = 3
MAX_READ_SLACK = 8
MAX_GETS = 32
EXPLICIT_LE = Encoding(implicit_vr=False, little_endian=True)
# Lengths that overflow, run past the end, are odd or are the undefined length.
SPECIAL_LENGTHS = (0, 1, 3, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)


@cache
def seed_bytes(name: str) -> bytes:
    return bundled(name).read_bytes()


@dataclass(frozen=True)
class SeedLayout:
    """Where a seed's data set starts and the offsets of its top-level elements."""

    meta_end: int
    offsets: tuple[int, ...]


@cache
def seed_layout(name: str) -> SeedLayout:
    data = seed_bytes(name)
    view = memoryview(data)
    offsets = []
    offset = 132
    while data[offset : offset + 2] == b"\x02\x00":
        offsets.append(offset)
        offset = read_element(view, offset, EXPLICIT_LE).end
    meta_end = offset
    header = parse_instance(data)
    if header.pixel_data is None or header.pixel_data.value_offset >= 0:
        # A deflated data set (value_offset -1) has no element offsets in the object.
        elements = scan_elements(data, meta_end, header.encoding, stop_at=0x7FE00010)
        offsets.extend(element.offset for element in elements)
    return SeedLayout(meta_end, tuple(offsets))


@dataclass
class BytesReader:
    """An ``ObjectReader`` over one object in memory that counts what is read."""

    data: bytes
    gets: int = 0
    bytes_read: int = 0

    def get(self, key: str) -> bytes:
        self.gets += 1
        self.bytes_read += len(self.data)
        return self.data

    def get_range(self, key: str, start: int, end: int | None = None) -> tuple[bytes, int]:
        self.gets += 1
        chunk = self.data[start:end]
        self.bytes_read += len(chunk)
        return chunk, len(self.data)


@dataclass
class MemoryStore:
    """The ``put`` of an ``ObjectStore``, in memory."""

    objects: dict[str, bytes] = field(default_factory=dict)

    def put(self, key: str, data: bytes, tags: Mapping[str, str] | None = None) -> StoredObject:
        self.objects[key] = data
        return StoredObject(key=key, size=len(data), etag="etag")

    def put_after(
        self,
        key: str,
        data: bytes,
        admission: Admission,
        tags: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Run the admission's checks, then ``put``, in the order of the S3 store."""
        admission.begin()
        admission.finish()
        return self.put(key, data, tags)

    def get(self, key: str) -> bytes:
        """Return an object, as the legal hold check of a resent instance reads it."""
        try:
            return self.objects[key]
        except KeyError:
            raise NotFoundError(f"no object {key}") from None


def check_ingest(data: bytes) -> None:
    """Run the header reading of ingest on ``data`` and check its outcome and its reads."""
    reader = BytesReader(data)
    try:
        header, size = read_header(reader, KEY)
    except InvalidInstanceError:
        header = None
    assert reader.bytes_read <= MAX_READ_FACTOR * len(data) + MAX_READ_SLACK
    assert reader.gets <= MAX_GETS
    if header is None:
        return
    assert size == len(data)
    metadata = instance_metadata(header)
    json.dumps(metadata)
    try:
        check_header(header, SITE)
    except InvalidInstanceError:
        pass


def check_stow(data: bytes) -> None:
    """Store ``data`` as one STOW-RS part, which must be stored or fail with a known reason."""
    store = MemoryStore()
    outcome = store_instances(store, SITE, [data], "http://127.0.0.1/dicomweb")  # type: ignore[arg-type]
    reasons = [failure.reason for failure in outcome.failures]
    assert FailureReason.PROCESSING_FAILURE not in reasons, outcome.warnings
    assert len(outcome.failures) + len(outcome.stored) == 1
    json.dumps(outcome.response)


def check_both(data: bytes) -> None:
    check_ingest(data)
    check_stow(data)


def element_header(tag: int, vr: bytes, length: int, implicit: bool) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHL", group, element, length)
    return struct.pack("<HH2sHL", group, element, vr, 0, length)


def nested_sequences(depth: int, implicit: bool, defined: bool) -> bytes:
    """Return ReferencedSeriesSequence (0008,1115) nested ``depth`` levels deep."""
    item_end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    inner = b""
    for _ in range(depth):
        if defined:
            item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
            inner = element_header(0x00081115, b"SQ", len(item), implicit) + item
        else:
            item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner + item_end
            inner = element_header(0x00081115, b"SQ", 0xFFFFFFFF, implicit) + item + sequence_end
    return inner


def unclosed_sequence(implicit: bool) -> bytes:
    """Return an undefined-length sequence with an item that is never closed."""
    return (
        element_header(0x00081115, b"SQ", 0xFFFFFFFF, implicit)
        + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + element_header(0x00080060, b"CS", 2, implicit)
        + b"CT"
    )


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(SEEDS))
    data = bytearray(seed_bytes(name))
    layout = seed_layout(name)
    offsets = layout.offsets
    implicit = name == "MR_small_implicit.dcm"
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        size = len(data)
        if not size:
            break
        anywhere = st.integers(min_value=0, max_value=size - 1)
        at = draw(st.one_of(st.sampled_from(offsets), anywhere)) if offsets else draw(anywhere)
        at = min(at, size)
        kind = draw(
            st.sampled_from(
                (
                    "truncate",
                    "flip",
                    "length32",
                    "length16",
                    "vr",
                    "unclosed",
                    "nested",
                    "drop_preamble",
                    "drop_meta",
                    "splice_random",
                )
            )
        )
        if kind == "truncate":
            del data[at:]
        elif kind == "flip":
            data[min(at, size - 1)] ^= draw(st.integers(min_value=1, max_value=255))
        elif kind == "length32":
            # An explicit VR long-form length is at +8, an implicit VR length at +4.
            where = at + draw(st.sampled_from((4, 8)))
            length = draw(st.one_of(st.sampled_from(SPECIAL_LENGTHS), st.integers(0, 2**32 - 1)))
            data[where : where + 4] = struct.pack("<L", length)[: max(0, size - where)]
        elif kind == "length16":
            length = draw(st.one_of(st.sampled_from((1, 3, 0xFFFF)), st.integers(0, 0xFFFF)))
            data[at + 6 : at + 8] = struct.pack("<H", length)[: max(0, size - at - 6)]
        elif kind == "vr":
            vr = draw(
                st.one_of(
                    st.sampled_from((b"XX", b"sq", b"\0\0", b"UN", b"SQ")),
                    st.binary(min_size=2, max_size=2),
                )
            )
            data[at + 4 : at + 6] = vr[: max(0, size - at - 4)]
        elif kind == "unclosed":
            data[at:at] = unclosed_sequence(implicit)
        elif kind == "nested":
            depth = draw(st.one_of(st.integers(1, MAX_SEQUENCE_DEPTH + 2), st.integers(1, 2000)))
            data[at:at] = nested_sequences(depth, implicit, draw(st.booleans()))
        elif kind == "drop_preamble":
            del data[: draw(st.sampled_from((128, 132)))]
        elif kind == "drop_meta":
            del data[132 : layout.meta_end]
        else:
            data[at:at] = draw(st.binary(max_size=64))
    return bytes(data)


# A data set of 3000 nested defined-length sequences after Pixel Data made pydicom recurse
# past Python's limit (RecursionError) when its metadata was built.
DEEP_DEFINED = seed_bytes("CT_small.dcm") + nested_sequences(3000, False, True)

# SeriesTime (0008,0031) with the unknown VR "UM" raised NotImplementedError from
# instance_metadata, because pydicom decodes an element when it is first read.
UNKNOWN_VR = seed_bytes("CT_small.dcm").replace(b"\x08\x001\x00TM", b"\x08\x001\x00UM", 1)

# Modality (0008,0060) as UL with a 2-byte value raised BytesLengthException from
# instance_metadata.
WRONG_LENGTH = seed_bytes("CT_small.dcm").replace(b"\x08\x00`\x00CS", b"\x08\x00`\x00UL", 1)


@fuzz_settings(500)
@given(data=mutated_seed())
@example(data=DEEP_DEFINED)
@example(data=UNKNOWN_VR)
@example(data=WRONG_LENGTH)
def test_mutated_instance_parsed_or_rejected(data: bytes) -> None:
    check_both(data)


@fuzz_settings(300)
@given(
    data=st.one_of(
        st.binary(max_size=4096),
        st.binary(max_size=1024).map(lambda tail: b"\0" * 128 + b"DICM" + tail),
    )
)
def test_random_bytes_parsed_or_rejected(data: bytes) -> None:
    check_both(data)


@pytest.mark.parametrize("name", SEEDS)
def test_seeds_are_accepted(name: str) -> None:
    data = seed_bytes(name)
    reader = BytesReader(data)
    header, size = read_header(reader, KEY)
    assert size == len(data)
    assert len(header.dataset) > 0


def test_deep_defined_length_sequences_rejected() -> None:
    with pytest.raises(InvalidInstanceError, match="nested more than"):
        parse_instance(DEEP_DEFINED)


def test_unknown_vr_left_out_of_metadata() -> None:
    assert UNKNOWN_VR != seed_bytes("CT_small.dcm")
    metadata = instance_metadata(parse_instance(UNKNOWN_VR))
    assert "00080031" not in metadata
    assert "00080030" in metadata


def test_wrong_value_length_left_out_of_metadata() -> None:
    assert WRONG_LENGTH != seed_bytes("CT_small.dcm")
    metadata = instance_metadata(parse_instance(WRONG_LENGTH))
    assert "00080060" not in metadata
    assert "00080070" in metadata
