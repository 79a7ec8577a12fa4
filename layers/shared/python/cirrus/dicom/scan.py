"""A scanner of the raw element structure of an encoded data set (PS3.5 7.1 and 7.5).

``pydicom.dcmread`` does not say whether a buffer ended early: on a truncated buffer it can
return fewer elements without an error. The scanner walks the top-level elements of a data set
and skips values and nested sequences by their lengths. With it the archive distinguishes a
complete instance from a truncated one, finds Pixel Data without reading it, and learns how
many bytes of an object it must read for the whole header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

PIXEL_DATA_TAG: Final = 0x7FE00010
ITEM_TAG: Final = 0xFFFEE000
ITEM_DELIMITER_TAG: Final = 0xFFFEE00D
SEQUENCE_DELIMITER_TAG: Final = 0xFFFEE0DD
UNDEFINED_LENGTH: Final = 0xFFFFFFFF

# Explicit VRs that have a reserved field and a 4-byte length (PS3.5 Table 7.1-1).
_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


class _ByteOrder:
    """The struct formats of a tag and of the two value length fields, in one byte order."""

    def __init__(self, order: str) -> None:
        self.tag = struct.Struct(order + "HH")
        self.short_length = struct.Struct(order + "H")
        self.long_length = struct.Struct(order + "L")


_LITTLE_ENDIAN: Final = _ByteOrder("<")
_BIG_ENDIAN: Final = _ByteOrder(">")

# Sequences nested deeper than this are rejected; real instances rarely exceed 5 levels.
MAX_SEQUENCE_DEPTH: Final = 32


class TruncatedError(Exception):
    """The buffer ends inside an element; ``needed`` is the offset that must be available."""

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


class MalformedError(Exception):
    """The bytes cannot be an encoded data set."""


@dataclass(frozen=True)
class RawElement:
    """A top-level element: its tag, VR (explicit syntaxes only) and byte positions."""

    tag: int
    vr: str | None
    offset: int
    value_offset: int
    length: int | None  # None for an undefined length
    end: int  # the offset after the value; for a header read alone, the value's offset
    value_read: bool = True


@dataclass(frozen=True)
class Encoding:
    implicit_vr: bool
    little_endian: bool


def scan_elements(
    buffer: bytes | memoryview,
    start: int,
    encoding: Encoding,
    *,
    stop_at: int | None = None,
) -> list[RawElement]:
    """Return the top-level elements from ``start`` to the end of ``buffer``.

    Scanning stops at the first element whose tag is ``stop_at``: that element is the last of
    the list, with only its header read (``value_read`` is False and its value may lie past the
    end of the buffer). Raises ``TruncatedError`` when an element runs past the end of
    the buffer and ``MalformedError`` on structure that no encoder produces.
    """
    view = memoryview(buffer)
    elements: list[RawElement] = []
    offset = start
    while offset < len(view):
        tag, vr, length, value_offset = _read_header(view, offset, encoding)
        if tag == stop_at:
            defined = None if length == UNDEFINED_LENGTH else length
            elements.append(
                RawElement(tag, vr, offset, value_offset, defined, value_offset, value_read=False)
            )
            break
        element = _read_value(view, offset, encoding, 0, tag, vr, length, value_offset)
        elements.append(element)
        offset = element.end
    return elements


def _read_header(
    view: memoryview, offset: int, encoding: Encoding
) -> tuple[int, str | None, int, int]:
    """Read one element header; return tag, VR, value length and value offset."""
    if offset + 8 > len(view):
        _need(view, offset + 8, offset)
    structs = _LITTLE_ENDIAN if encoding.little_endian else _BIG_ENDIAN
    group, element = structs.tag.unpack_from(view, offset)
    tag = (group << 16) | element
    if group == 0xFFFE or encoding.implicit_vr:
        # Item and delimiter tags are always followed by a 4-byte length (PS3.5 7.5).
        (length,) = structs.long_length.unpack_from(view, offset + 4)
        return tag, None, length, offset + 8
    vr_bytes = bytes(view[offset + 4 : offset + 6])
    if not (vr_bytes.isalpha() and vr_bytes.isupper()):
        raise MalformedError(
            f"element ({group:04X},{element:04X}) at offset {offset} has no valid VR "
            f"({vr_bytes!r}); the data set is not explicit VR as its transfer syntax says"
        )
    if vr_bytes in _LONG_VRS:
        _need(view, offset + 12, offset)
        (length,) = structs.long_length.unpack_from(view, offset + 8)
        return tag, vr_bytes.decode(), length, offset + 12
    (length,) = structs.short_length.unpack_from(view, offset + 6)
    return tag, vr_bytes.decode(), length, offset + 8


def read_element(view: memoryview, offset: int, encoding: Encoding, depth: int = 0) -> RawElement:
    """Read the element at ``offset`` whole, walking the items of an undefined length."""
    tag, vr, length, value_offset = _read_header(view, offset, encoding)
    return _read_value(view, offset, encoding, depth, tag, vr, length, value_offset)


def _read_value(
    view: memoryview,
    offset: int,
    encoding: Encoding,
    depth: int,
    tag: int,
    vr: str | None,
    length: int,
    value_offset: int,
) -> RawElement:
    """Read the value of the element at ``offset`` whose header ``_read_header`` returned."""
    if length != UNDEFINED_LENGTH:
        end = value_offset + length
        _need(view, end, offset, tag)
        if _is_sequence(tag, vr):
            # pydicom decodes nested sequences recursively, so a defined-length sequence is
            # walked too, and it may nest no deeper than an undefined-length one.
            nested = Encoding(implicit_vr=True, little_endian=True) if vr == "UN" else encoding
            _check_items(view, value_offset, end, nested, depth + 1)
        return RawElement(tag, vr, offset, value_offset, length, end)
    # An undefined length is allowed for SQ, for UN that contains an implicit VR sequence and
    # for encapsulated Pixel Data (PS3.5 7.1.2, 6.2.2 and A.4). All three end with a sequence
    # delimiter after a series of items.
    nested = Encoding(implicit_vr=True, little_endian=True) if vr == "UN" else encoding
    end = _skip_items(view, value_offset, nested, depth + 1)
    return RawElement(tag, vr, offset, value_offset, None, end)


def _is_sequence(tag: int, vr: str | None) -> bool:
    """Tell whether pydicom reads the element as a sequence (SQ, or UN or implicit VR of a
    tag that the data dictionary defines as SQ)."""
    if vr == "SQ":
        return True
    if vr not in (None, "UN") or tag >> 16 == 0xFFFE:
        return False
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def _check_items(view: memoryview, offset: int, end: int, encoding: Encoding, depth: int) -> None:
    """Walk the items of a defined-length sequence value from ``offset`` to ``end``.

    Raises ``MalformedError`` when the value contains something other than items or the
    sequences nest more than ``MAX_SEQUENCE_DEPTH`` levels deep, and ``TruncatedError`` when
    an element runs past the end of the buffer.
    """
    if depth > MAX_SEQUENCE_DEPTH:
        raise MalformedError(f"sequences are nested more than {MAX_SEQUENCE_DEPTH} levels deep")
    while offset < end:
        tag, _, length, value_offset = _read_header(view, offset, encoding)
        if tag == SEQUENCE_DELIMITER_TAG:
            return  # a sequence delimiter ends the walk, as it ends an undefined length
        if tag != ITEM_TAG:
            raise MalformedError(
                f"expected an item at offset {offset}, found ({tag >> 16:04X},{tag & 0xFFFF:04X})"
            )
        if length == UNDEFINED_LENGTH:
            offset = _skip_item_elements(view, value_offset, encoding, depth)
            continue
        # pydicom 3.0 reads an item that claims more bytes than its sequence has up to the
        # end of the sequence (DICOMDIR-nooffset of its test files), so the walk does too.
        item_end = min(value_offset + length, end)
        offset = value_offset
        while offset < item_end:
            offset = read_element(view, offset, encoding, depth).end


def _skip_items(view: memoryview, offset: int, encoding: Encoding, depth: int) -> int:
    """Skip the items of an undefined-length value; return the offset after its delimiter."""
    if depth > MAX_SEQUENCE_DEPTH:
        raise MalformedError(f"sequences are nested more than {MAX_SEQUENCE_DEPTH} levels deep")
    while True:
        tag, _, length, value_offset = _read_header(view, offset, encoding)
        if tag == SEQUENCE_DELIMITER_TAG:
            return value_offset
        if tag != ITEM_TAG:
            raise MalformedError(
                f"expected an item or sequence delimiter at offset {offset}, found "
                f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
            )
        if length != UNDEFINED_LENGTH:
            offset = value_offset + length
            _need(view, offset, value_offset, tag)
            continue
        offset = _skip_item_elements(view, value_offset, encoding, depth)


def _skip_item_elements(view: memoryview, offset: int, encoding: Encoding, depth: int) -> int:
    """Skip the elements of an undefined-length item; return the offset after its delimiter."""
    while True:
        _need(view, offset + 8, offset)
        structs = _LITTLE_ENDIAN if encoding.little_endian else _BIG_ENDIAN
        group, element = structs.tag.unpack_from(view, offset)
        if (group << 16) | element == ITEM_DELIMITER_TAG:
            return offset + 8
        offset = read_element(view, offset, encoding, depth).end


def _need(view: memoryview, end: int, offset: int, tag: int | None = None) -> None:
    if end > len(view):
        where = f"element ({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag is not None else "element"
        raise TruncatedError(
            f"data set is truncated: {where} at offset {offset} needs {end - len(view)} "
            f"more bytes than the {len(view)} available",
            needed=end,
        )
