"""A corpus of malformed DICOM Part 10 objects, made from pydicom's bundled test files.

Every object is derived from one seed file and carries the outcome that the archive's write
path (STOW-RS and C-STORE) must give it: stored, or rejected with a failure status. The
element walk in this module is written independently of ``cirrus.dicom.scan``, so the
boundaries it cuts at do not share that scanner's mistakes.

The corpus of a seed contains:

- the object cut at every element boundary (top level, file meta, inside sequences and items,
  at item and delimiter tags, between fragments of encapsulated Pixel Data), inside every
  element header and in the middle of every value;
- value lengths too long, too short, odd, 0xFFFFFFF0 or undefined on elements other than
  sequences, and huge on Pixel Data;
- undefined-length sequences and items that never close, and sequences nested 8, 33 and
  3000 levels deep with defined and undefined lengths;
- VRs that are not VRs, unknown VRs and SQ on a text element;
- empty, too long, non-numeric and leading-zero UIDs, a SOP Class UID that is not a storage
  class, and a file meta whose SOP Instance UID differs from the data set's;
- no preamble, no 'DICM' prefix, no file meta, and a file meta group length that lies.
"""

from __future__ import annotations

import copy
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from typing import Final

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from tests.pydicom_files import bundled

# Outcomes: stored, or the STOW-RS failure reason and C-STORE status of a rejection.
STORED: Final = 0x0000
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122  # STOW-RS only: no C-STORE context carries such a class
DOES_NOT_MATCH: Final = 0xA900
CANNOT_UNDERSTAND: Final = 0xC000

# Explicit VR little endian, explicit VR big endian, implicit VR, a file with sequences (also
# implicit VR) and a deflated one.
SEEDS: Final = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "rtplan.dcm",
    "image_dfl.dcm",
)
PREAMBLE: Final = 128
META_START: Final = 132
PIXEL_DATA: Final = 0x7FE00010
ITEM: Final = 0xFFFEE000
ITEM_DELIMITER: Final = 0xFFFEE00D
SEQUENCE_DELIMITER: Final = 0xFFFEE0DD
UNDEFINED: Final = 0xFFFFFFFF
HUGE: Final = 0xFFFFFFF0
# Explicit VRs with a 4-byte length (PS3.5 Table 7.1-1), listed here rather than imported from
# cirrus.dicom.scan so that the walk does not share the scanner's mistakes.
_LONG_VRS: Final = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_REQUIRED: Final = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
}
PATIENT_NAME: Final = 0x00100010
STUDY_UID: Final = 0x0020000D
SOP_INSTANCE_UID: Final = 0x00080018
REFERENCED_SERIES_SEQUENCE: Final = 0x00081115
VERIFICATION: Final = "1.2.840.10008.1.1"


@dataclass(frozen=True)
class MalformedInput:
    """One malformed object and the outcome the write path must give it.

    ``reason`` is a lowercase text that the failure message contains. ``cstore`` is false for
    objects that a C-STORE cannot carry: without an intact file meta, a sender has no SOP
    class, instance and transfer syntax for the request. ``cstore_status`` is the C-STORE
    status where it differs from ``expected``.
    """

    name: str
    data: bytes
    expected: int
    reason: str = ""
    cstore: bool = True
    cstore_status: int | None = None

    @property
    def cstore_expected(self) -> int:
        return self.expected if self.cstore_status is None else self.cstore_status


@dataclass(frozen=True)
class Encoding:
    implicit: bool
    little: bool

    @property
    def order(self) -> str:
        return "<" if self.little else ">"


EXPLICIT_LE: Final = Encoding(implicit=False, little=True)


@dataclass(frozen=True)
class Element:
    """An element, item or delimiter found by ``walk``, with offsets into its buffer."""

    tag: int
    vr: str | None
    offset: int
    length_offset: int
    length_size: int
    value_offset: int
    length: int | None  # None for an undefined length
    depth: int  # 0 for a top-level element

    @property
    def label(self) -> str:
        return f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"


def _header(buffer: bytes, offset: int, enc: Encoding) -> tuple[int, str | None, int, int, int]:
    """Return tag, VR, length, length offset and length size of the element at ``offset``."""
    group, number = struct.unpack_from(enc.order + "HH", buffer, offset)
    tag = (group << 16) | number
    if enc.implicit or group == 0xFFFE:
        (length,) = struct.unpack_from(enc.order + "L", buffer, offset + 4)
        vr = None
        if group != 0xFFFE:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = None  # a private tag: its value is walked as bytes
        return tag, vr, length, offset + 4, 4
    vr = buffer[offset + 4 : offset + 6].decode("latin-1")
    if vr in _LONG_VRS:
        (length,) = struct.unpack_from(enc.order + "L", buffer, offset + 8)
        return tag, vr, length, offset + 8, 4
    (length,) = struct.unpack_from(enc.order + "H", buffer, offset + 6)
    return tag, vr, length, offset + 6, 2


def walk(buffer: bytes, start: int, end: int, enc: Encoding, depth: int = 0) -> list[Element]:
    """Return every element from ``start`` to ``end``, with the contents of its sequences."""
    found: list[Element] = []
    offset = start
    while offset < end:
        element, offset = _walk_element(buffer, offset, enc, depth, found)
        if element.tag == ITEM_DELIMITER:
            break
    return found


def _walk_element(
    buffer: bytes, offset: int, enc: Encoding, depth: int, found: list[Element]
) -> tuple[Element, int]:
    tag, vr, length, length_offset, length_size = _header(buffer, offset, enc)
    value_offset = length_offset + length_size
    defined = None if length == UNDEFINED else length
    element = Element(tag, vr, offset, length_offset, length_size, value_offset, defined, depth)
    found.append(element)
    if tag >> 16 == 0xFFFE:
        return element, value_offset
    if vr == "SQ" or defined is None:
        fragments = vr != "SQ"  # encapsulated Pixel Data: items are fragments, not data sets
        return element, _walk_items(buffer, element, enc, depth + 1, found, fragments)
    return element, value_offset + length


def _walk_items(
    buffer: bytes,
    sequence: Element,
    enc: Encoding,
    depth: int,
    found: list[Element],
    fragments: bool,
) -> int:
    offset = sequence.value_offset
    end = None if sequence.length is None else sequence.value_offset + sequence.length
    while end is None or offset < end:
        tag, _, length, _, _ = _header(buffer, offset, enc)
        found.append(Element(tag, None, offset, offset + 4, 4, offset + 8, length, depth))
        offset += 8
        if tag == SEQUENCE_DELIMITER:
            break
        if fragments:
            offset += length
        elif length == UNDEFINED:
            items = walk(buffer, offset, len(buffer), enc, depth)
            found.extend(items)
            offset = items[-1].value_offset
        else:
            found.extend(walk(buffer, offset, offset + length, enc, depth))
            offset += length
    return offset


def encoding_of(transfer_syntax: str) -> Encoding:
    if transfer_syntax == ImplicitVRLittleEndian:
        return Encoding(implicit=True, little=True)
    if transfer_syntax == ExplicitVRBigEndian:
        return Encoding(implicit=False, little=False)
    return EXPLICIT_LE


@dataclass(frozen=True)
class Seed:
    """A seed file split into file meta and data set, both as encoded bytes."""

    name: str
    meta: bytes  # preamble, 'DICM' and the group 0002 elements
    dataset: bytes  # the data set as stored, deflated for the deflated syntax
    transfer_syntax: str
    sop_class: str

    @property
    def deflated(self) -> bool:
        return self.transfer_syntax == DeflatedExplicitVRLittleEndian

    @property
    def encoding(self) -> Encoding:
        return encoding_of(self.transfer_syntax)

    @property
    def plain_dataset(self) -> bytes:
        """Return the data set as encoded elements, inflated when it is deflated."""
        if self.deflated:
            return zlib.decompress(self.dataset, -zlib.MAX_WBITS)
        return self.dataset

    def with_dataset(self, plain: bytes) -> bytes:
        """Return a Part 10 object of this seed's file meta and the data set ``plain``."""
        return self.meta + (deflate(plain) if self.deflated else plain)

    @property
    def data(self) -> bytes:
        return self.meta + self.dataset

    @property
    def is_image(self) -> bool:
        return UID(self.sop_class).name.endswith("Image Storage")


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def encode(ds: Dataset) -> bytes:
    """Encode ``ds`` as a Part 10 object in the transfer syntax of its file meta."""
    with BytesIO() as buffer:
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


def seed_dataset(name: str) -> Dataset:
    """Read a seed, with its file meta naming the data set's SOP Class and Instance UIDs.

    pydicom's rtplan.dcm names another SOP Instance UID in its file meta than in its data
    set; the corpus has that mismatch as a case of its own.
    """
    ds = pydicom.dcmread(bundled(name))
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def split_seed(name: str, data: bytes) -> Seed:
    offset = META_START
    while data[offset : offset + 2] == b"\x02\x00":
        _, _, length, length_offset, size = _header(data, offset, EXPLICIT_LE)
        offset = length_offset + size + length
    meta = pydicom.dcmread(BytesIO(data), stop_before_pixels=True).file_meta
    return Seed(
        name,
        data[:offset],
        data[offset:],
        str(meta.TransferSyntaxUID),
        str(meta.MediaStorageSOPClassUID),
    )


@cache
def seed(name: str) -> Seed:
    """Return a seed with its own UIDs, re-encoded once so that its file meta matches."""
    return split_seed(name, encode(seed_dataset(name)))


def fresh_seed(name: str, study: str, series: str | None = None) -> Seed:
    """Return a seed with ``study``, a new series (unless given) and a new SOP Instance UID."""
    ds = seed_dataset(name)
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return split_seed(name, encode(ds))


def corpus(source: Seed) -> list[MalformedInput]:
    """Return every malformed object made from ``source``."""
    return [
        *truncations(source),
        *length_errors(source),
        *sequence_errors(source),
        *vr_errors(source),
        *uid_errors(source),
        *framing_errors(source),
    ]


def full_corpus() -> list[MalformedInput]:
    return [case for name in SEEDS for case in corpus(seed(name))]


# --- truncation ------------------------------------------------------------------------------


def truncations(source: Seed) -> list[MalformedInput]:
    """Cut the object at every element boundary, inside every header and in every value."""
    cases = [
        MalformedInput(
            f"{source.name}/cut-at-{cut}", source.data[:cut], CANNOT_UNDERSTAND, "dicm", False
        )
        for cut in (0, 64, PREAMBLE, PREAMBLE + 2)
    ]
    cases += _meta_truncations(source)
    plain = source.plain_dataset
    elements = walk(plain, 0, len(plain), source.encoding)
    top_level = [element for element in elements if element.depth == 0]
    present: set[int] = set()
    for element in elements:
        where = f"{element.offset}-{element.label}"
        if element.depth == 0:
            expected = _expected_at_top_level(source, present)
            present.add(element.tag)
        else:
            expected = CANNOT_UNDERSTAND
        if element.offset > 0:
            cases.append(_cut(source, plain, f"boundary-{where}", element.offset, expected))
        cases.append(_cut(source, plain, f"in-header-{where}", element.offset + 3))
        if element.length is not None and element.length >= 2 and element.tag >> 16 != 0xFFFE:
            middle = element.value_offset + element.length // 2
            cases.append(_cut(source, plain, f"mid-value-{where}", middle))
    if top_level:
        # Every element present: the whole object, which the seed itself must pass as.
        assert _expected_at_top_level(source, present) == STORED, source.name
    if source.deflated:
        for fraction in (4, 2):
            cut = len(source.meta) + len(source.dataset) // fraction
            name = f"{source.name}/deflated-stream-cut-at-{cut}"
            cases.append(MalformedInput(name, source.data[:cut], CANNOT_UNDERSTAND, "truncated"))
    return cases


def _meta_truncations(source: Seed) -> list[MalformedInput]:
    """Cut inside the file meta: at a boundary the meta is short, elsewhere truncated."""
    cases = []
    for element in walk(source.meta, META_START, len(source.meta), EXPLICIT_LE):
        label = f"{element.offset}-{element.label}"
        cut = source.meta[: element.offset]
        # Without its data set, a boundary cut lacks the transfer syntax or every UID. A
        # deflated syntax needs a deflate stream, and an empty one is truncated.
        expected = DOES_NOT_MATCH
        if source.deflated and element.tag > 0x00020010:
            expected = CANNOT_UNDERSTAND
        cases.append(
            MalformedInput(f"{source.name}/meta-boundary-{label}", cut, expected, "", False)
        )
        middle = source.meta[: element.value_offset + max(element.length or 0, 2) // 2]
        cases.append(
            MalformedInput(
                f"{source.name}/meta-mid-value-{label}", middle, CANNOT_UNDERSTAND, "", False
            )
        )
    return cases


def _expected_at_top_level(source: Seed, present: set[int]) -> int:
    """Return the outcome of the data set made of the top-level elements ``present``."""
    if not set(_REQUIRED) <= present:
        return DOES_NOT_MATCH  # a UID the archive needs is missing
    if source.is_image and PIXEL_DATA not in present:
        return DOES_NOT_MATCH
    return STORED


def _cut(
    source: Seed, plain: bytes, label: str, cut: int, expected: int = CANNOT_UNDERSTAND
) -> MalformedInput:
    reason = "truncated" if expected == CANNOT_UNDERSTAND else ""
    # pynetdicom 3.0.4 finds the data set's offset with pydicom's file meta reader, which
    # takes the bytes of a data set shorter than a tag as its own, so it sends nothing.
    cstore = source.deflated or cut >= 4
    return MalformedInput(
        f"{source.name}/{label}", source.with_dataset(plain[:cut]), expected, reason, cstore
    )


# --- lengths ---------------------------------------------------------------------------------


def _top(source: Seed, tag: int) -> Element | None:
    plain = source.plain_dataset
    for element in walk(plain, 0, len(plain), source.encoding):
        if element.depth == 0 and element.tag == tag:
            return element
    return None


def _set_length(source: Seed, element: Element, length: int) -> bytes:
    plain = bytearray(source.plain_dataset)
    size = element.length_size
    field = "H" if size == 2 else "L"
    plain[element.length_offset : element.length_offset + size] = struct.pack(
        source.encoding.order + field, length & (0xFFFF if size == 2 else 0xFFFFFFFF)
    )
    return source.with_dataset(bytes(plain))


def length_errors(source: Seed) -> list[MalformedInput]:
    cases = []
    for tag in (PATIENT_NAME, STUDY_UID):
        element = _top(source, tag)
        assert element is not None and element.length is not None, (source.name, tag)
        label = f"{source.name}/{element.label}"
        max_length = 0xFFFF if element.length_size == 2 else HUGE
        for name, length in (
            ("too-long", element.length + 2),
            ("too-short", element.length - 2),
            ("huge", max_length),
            ("much-too-long", element.length + 0x1000),
        ):
            data = _set_length(source, element, length)
            cases.append(MalformedInput(f"{label}/length-{name}", data, CANNOT_UNDERSTAND))
        if element.length_size == 4:
            data = _set_length(source, element, UNDEFINED)
            cases.append(MalformedInput(f"{label}/length-undefined", data, CANNOT_UNDERSTAND))
    cases.append(_odd_length(source))
    pixel = _top(source, PIXEL_DATA)
    if pixel is not None and pixel.length is not None:
        for name, length in (
            ("huge", HUGE),
            ("undefined", UNDEFINED),
            ("plus-one", pixel.length + 1),
        ):
            data = _set_length(source, pixel, length)
            cases.append(
                MalformedInput(f"{source.name}/pixel-data-length-{name}", data, CANNOT_UNDERSTAND)
            )
    return cases


def _odd_length(source: Seed) -> MalformedInput:
    """Give PatientName an odd length by dropping its last byte; PS3.5 7.1.1 wants even ones.

    The structure stays consistent, so the archive stores it: the name reads one character
    shorter.
    """
    element = _top(source, PATIENT_NAME)
    assert element is not None and element.length is not None
    plain = source.plain_dataset
    length = element.length - 1 if element.length % 2 == 0 else element.length
    field = "H" if element.length_size == 2 else "L"
    header = plain[element.offset : element.length_offset] + struct.pack(
        source.encoding.order + field, length
    )
    value = plain[element.value_offset : element.value_offset + length]
    changed = (
        plain[: element.offset] + header + value + plain[element.value_offset + element.length :]
    )
    return MalformedInput(
        f"{source.name}/(0010,0010)/length-odd", source.with_dataset(changed), STORED
    )


# --- sequences -------------------------------------------------------------------------------


def _element_header(tag: int, vr: str, length: int, enc: Encoding) -> bytes:
    group, number = tag >> 16, tag & 0xFFFF
    if enc.implicit:
        return struct.pack(enc.order + "HHL", group, number, length)
    if vr in _LONG_VRS:
        return struct.pack(enc.order + "HH2sHL", group, number, vr.encode(), 0, length)
    return struct.pack(enc.order + "HH2sH", group, number, vr.encode(), length)


def _item(tag: int, length: int, enc: Encoding) -> bytes:
    return struct.pack(enc.order + "HHL", tag >> 16, tag & 0xFFFF, length)


def nested(depth: int, enc: Encoding, defined: bool) -> bytes:
    """Return ReferencedSeriesSequence (0008,1115) nested ``depth`` levels deep."""
    inner = b""
    for _ in range(depth):
        if defined:
            item = _item(ITEM, len(inner), enc) + inner
            inner = _element_header(REFERENCED_SERIES_SEQUENCE, "SQ", len(item), enc) + item
        else:
            item = _item(ITEM, UNDEFINED, enc) + inner + _item(ITEM_DELIMITER, 0, enc)
            inner = (
                _element_header(REFERENCED_SERIES_SEQUENCE, "SQ", UNDEFINED, enc)
                + item
                + _item(SEQUENCE_DELIMITER, 0, enc)
            )
    return inner


def _insert(source: Seed, extra: bytes) -> bytes:
    """Insert ``extra`` before Pixel Data, or at the end of a data set without it."""
    plain = source.plain_dataset
    pixel = _top(source, PIXEL_DATA)
    at = pixel.offset if pixel is not None else len(plain)
    return source.with_dataset(plain[:at] + extra + plain[at:])


def sequence_errors(source: Seed) -> list[MalformedInput]:
    enc = source.encoding
    modality = _element_header(0x00080060, "CS", 2, enc) + b"CT"
    open_sequence = _element_header(REFERENCED_SERIES_SEQUENCE, "SQ", UNDEFINED, enc)
    open_item = _item(ITEM, UNDEFINED, enc)
    closed_item = open_item + modality + _item(ITEM_DELIMITER, 0, enc)
    cases = [
        # Undefined lengths that never close, at the end of the data set.
        (
            "unclosed-item-at-end",
            source.with_dataset(source.plain_dataset + open_sequence + open_item + modality),
        ),
        (
            "unclosed-sequence-at-end",
            source.with_dataset(source.plain_dataset + open_sequence + closed_item),
        ),
        # An unclosed sequence before Pixel Data swallows it and ends without a delimiter.
        ("unclosed-item-before-pixel-data", _insert(source, open_sequence + open_item + modality)),
        ("unclosed-sequence-before-pixel-data", _insert(source, open_sequence + closed_item)),
    ]
    result = [
        MalformedInput(f"{source.name}/{name}", data, CANNOT_UNDERSTAND) for name, data in cases
    ]
    for depth, expected in ((8, STORED), (33, CANNOT_UNDERSTAND), (3000, CANNOT_UNDERSTAND)):
        for defined in (True, False):
            kind = "defined" if defined else "undefined"
            reason = "nested more than" if expected == CANNOT_UNDERSTAND else ""
            data = _insert(source, nested(depth, enc, defined))
            result.append(
                MalformedInput(f"{source.name}/nested-{depth}-{kind}", data, expected, reason)
            )
    return result


# --- VRs -------------------------------------------------------------------------------------


def vr_errors(source: Seed) -> list[MalformedInput]:
    """Overwrite the VR of explicit VR elements; implicit VR data sets have none."""
    if source.encoding.implicit:
        return []
    plain = source.plain_dataset
    cases = []
    name = _top(source, PATIENT_NAME)
    uid = _top(source, SOP_INSTANCE_UID)
    assert name is not None and uid is not None
    for vr, expected in (
        (b"pn", CANNOT_UNDERSTAND),
        (b"\0\0", CANNOT_UNDERSTAND),
        (b"ZZ", STORED),
        (b"SQ", CANNOT_UNDERSTAND),
    ):
        changed = plain[: name.offset + 4] + vr + plain[name.offset + 6 :]
        label = vr.hex()
        cases.append(
            MalformedInput(
                f"{source.name}/(0010,0010)/vr-{label}", source.with_dataset(changed), expected
            )
        )
    # An unknown VR on a UID that the archive reads cannot be decoded.
    changed = plain[: uid.offset + 4] + b"ZZ" + plain[uid.offset + 6 :]
    cases.append(
        MalformedInput(
            f"{source.name}/(0008,0018)/vr-5a5a", source.with_dataset(changed), CANNOT_UNDERSTAND
        )
    )
    return cases


# --- UIDs ------------------------------------------------------------------------------------


def uid_errors(source: Seed) -> list[MalformedInput]:
    """Re-encode the seed with invalid UIDs; the structure of the data set stays valid."""
    with warnings.catch_warnings():
        # pydicom warns about each invalid UID it is given, which is the point here.
        warnings.simplefilter("ignore")
        return _uid_errors(source)


def _uid_errors(source: Seed) -> list[MalformedInput]:
    ds = pydicom.dcmread(BytesIO(source.data))
    cases = []
    for keyword, value, cstore in (
        ("SOPInstanceUID", "", False),  # a C-STORE request must name an instance
        # pynetdicom 3.0 sends no command with a UID over 64 characters.
        ("SOPInstanceUID", "1." + "2" * 70, False),
        ("SOPInstanceUID", "1.2.abc.4", True),
        ("StudyInstanceUID", "", True),
        ("StudyInstanceUID", "1.02.3", True),
        ("SeriesInstanceUID", "1..3", True),
    ):
        changed = copy.deepcopy(ds)
        setattr(changed, keyword, value)
        if keyword == "SOPInstanceUID" and value:
            changed.file_meta.MediaStorageSOPInstanceUID = value
        label = value if len(value) < 20 else f"{len(value)}-chars"
        cases.append(
            MalformedInput(
                f"{source.name}/{keyword}-{label or 'empty'}",
                encode(changed),
                DOES_NOT_MATCH,
                "uid",
                cstore,
            )
        )
    changed = copy.deepcopy(ds)
    changed.SOPClassUID = changed.file_meta.MediaStorageSOPClassUID = VERIFICATION
    cases.append(
        MalformedInput(
            f"{source.name}/SOPClassUID-not-storage",
            encode(changed),
            SOP_CLASS_NOT_SUPPORTED,
            "storage",
            False,
        )
    )
    # STOW-RS stores the data set under its own UIDs, as it stores pydicom's rtplan.dcm. A
    # C-STORE request names the file meta's UID, which differs from the data set's: 0xA900.
    cases.append(
        MalformedInput(
            f"{source.name}/meta-sop-instance-differs",
            _meta_sop_instance_changed(source),
            STORED,
            cstore_status=DOES_NOT_MATCH,
        )
    )
    return cases


def _meta_sop_instance_changed(source: Seed) -> bytes:
    """Change the last digit of MediaStorageSOPInstanceUID (0002,0003) in the bytes.

    pydicom 3.0 writes the data set's SOP Instance UID into the file meta when it encodes,
    so the mismatch is made after encoding. The length stays, and so does the group length.
    """
    (element,) = [
        element
        for element in walk(source.meta, META_START, len(source.meta), EXPLICIT_LE)
        if element.tag == 0x00020003
    ]
    assert element.length is not None
    value = source.meta[element.value_offset : element.value_offset + element.length]
    uid = value.rstrip(b"\0")
    changed_uid = uid[:-1] + (b"2" if uid[-1:] == b"1" else b"1")
    meta = source.meta.replace(value, changed_uid + value[len(uid) :], 1)
    assert meta != source.meta
    return meta + source.dataset


# --- preamble and file meta ------------------------------------------------------------------


def framing_errors(source: Seed) -> list[MalformedInput]:
    data = source.data
    meta_end = len(source.meta)
    cases = [
        MalformedInput(
            f"{source.name}/no-preamble", data[PREAMBLE:], CANNOT_UNDERSTAND, "dicm", False
        ),
        MalformedInput(
            f"{source.name}/no-preamble-no-dicm",
            data[META_START:],
            CANNOT_UNDERSTAND,
            "dicm",
            False,
        ),
        MalformedInput(
            f"{source.name}/data-set-only", data[meta_end:], CANNOT_UNDERSTAND, "dicm", False
        ),
        MalformedInput(
            f"{source.name}/no-file-meta",
            data[:META_START] + data[meta_end:],
            DOES_NOT_MATCH,
            "transfersyntaxuid",
            False,
        ),
    ]
    group_length = walk(source.meta, META_START, meta_end, EXPLICIT_LE)[0]
    assert group_length.tag == 0x00020000, source.name
    (actual,) = struct.unpack_from("<L", data, group_length.value_offset)
    for label, value in (
        ("zero", 0),
        ("short", actual - 20),
        ("long", actual + 100),
        ("max", UNDEFINED),
    ):
        lied = bytearray(data)
        struct.pack_into("<L", lied, group_length.value_offset, value)
        # The group length is redundant, so the archive finds the meta's end by its elements.
        cases.append(
            MalformedInput(f"{source.name}/meta-group-length-{label}", bytes(lied), STORED)
        )
    return cases


# --- subsets for the network paths -----------------------------------------------------------

ALL_CASES_ENV: Final = "CIRRUS_MALFORMED_ALL"
# Seeds whose every kind of damage goes over the network; the others send only truncations.
_ALL_KINDS_SEEDS: Final = ("CT_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm")
_CUTS_PER_SEED: Final = 6


def _representative(cases: list[MalformedInput], seed_name: str) -> list[int]:
    """Return the indices of the cases of one seed that the network tests send."""
    if os.environ.get(ALL_CASES_ENV) == "corpus":
        return list(range(len(cases)))
    cut_kinds = ("/boundary-", "/in-header-", "/mid-value-", "/meta-", "/cut-at-", "/deflated-")
    cuts = [i for i, case in enumerate(cases) if any(kind in case.name for kind in cut_kinds)]
    step = max(1, len(cuts) // _CUTS_PER_SEED)
    picks = cuts[step // 2 :: step][:_CUTS_PER_SEED]
    if seed_name in _ALL_KINDS_SEEDS:
        picks += [i for i in range(len(cases)) if i not in set(cuts)]
    return [i for i in picks if "nested-3000" not in cases[i].name]


def ci_subset(cases: list[MalformedInput]) -> list[MalformedInput]:
    """Return every third case, or all of them when CIRRUS_MALFORMED_ALL is set.

    With CIRRUS_MALFORMED_ALL=corpus, ``network_cases`` returns the whole corpus, and the
    network tests send every one of its inputs (several minutes each).
    """
    return cases if os.environ.get(ALL_CASES_ENV) else cases[::3]


def network_cases(study: str) -> list[MalformedInput]:
    """Return a representative subset of the corpus, made from seeds in ``study``.

    Each case that is to be stored comes from a seed with a new series and SOP Instance UID,
    so that stored cases do not replace each other. A case has the same index in the corpus
    of a seed with new UIDs as in ``full_corpus``, because new UIDs move offsets, not elements.
    """
    selected = []
    for name in SEEDS:
        template = corpus(seed(name))
        shared = corpus(fresh_seed(name, study))
        for index in _representative(template, name):
            case = shared[index]
            if case.expected == STORED:
                case = corpus(fresh_seed(name, study))[index]
            assert case.expected == template[index].expected, case.name
            selected.append(case)
    return selected
