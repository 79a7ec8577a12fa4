"""Reading the header of a DICOM Part 10 instance (PS3.10 7.1) without touching Pixel Data.

``parse_instance`` takes either a whole object or a prefix of one (a ranged GET of the first
bytes). It returns the data set without Pixel Data, where Pixel Data sits in the object, and
what else must be read when the prefix did not reach the end of the header.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Final

from cirrus.dicom.scan import (
    PIXEL_DATA_TAG,
    Encoding,
    MalformedError,
    RawElement,
    TruncatedError,
    read_element,
    scan_elements,
)
from cirrus.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from cirrus.errors import InstanceTooLargeError, InvalidInstanceError
from cirrus.storage.keys import InstanceKey, check_uid

if TYPE_CHECKING:
    from pydicom.dataset import Dataset, FileMetaDataset

logger = logging.getLogger(__name__)

PREAMBLE_LENGTH: Final = 128
MAGIC: Final = b"DICM"
_META_START: Final = PREAMBLE_LENGTH + len(MAGIC)
_EXPLICIT_LE: Final = Encoding(implicit_vr=False, little_endian=True)

# A deflated data set is inflated in memory, and the retrieve path holds it about three times
# over in a function of 3008 MB. It may therefore inflate to at most INFLATION_RATIO times its
# stream and never past MAX_INFLATED_BYTES, the largest upload the service takes. By our
# estimate deflate shrinks image data 2 to 10 times, and mostly black images some 30 times,
# so 64 leaves room, while zeros (about 1000 times) are refused. The floor spares small objects.
INFLATION_RATIO: Final = 64
MIN_INFLATED_LIMIT: Final = 16 * 1024**2
MAX_INFLATED_BYTES: Final = 512 * 1024**2
_INFLATE_CHUNK: Final = 1024**2

# Exceptions pydicom raises on malformed input, besides its own InvalidDicomError.
DECODING_ERRORS: Final = (NotImplementedError, ValueError, TypeError, KeyError, UnicodeError)


@dataclass(frozen=True)
class PixelDataLocation:
    """The position of the top-level Pixel Data value in the object."""

    vr: str
    value_offset: int
    length: int | None  # None for encapsulated Pixel Data of undefined length


@dataclass
class InstanceHeader:
    """The parsed header of one instance.

    ``dataset`` contains every top-level element except Pixel Data, including elements that follow
    it when they were read. ``tail_offset`` is set when elements may follow Pixel Data at that
    offset but the prefix ended before them. ``tail_unknown`` is set when Pixel Data has an
    undefined length and the prefix did not reach its end.
    """

    file_meta: FileMetaDataset
    dataset: Dataset
    pixel_data: PixelDataLocation | None
    tail_offset: int | None = None
    tail_unknown: bool = False

    @property
    def transfer_syntax(self) -> str:
        return str(self.file_meta.TransferSyntaxUID)

    @property
    def encoding(self) -> Encoding:
        return encoding_of(self.transfer_syntax)

    def instance_key(self, site: str) -> InstanceKey:
        """Return the storage identity, checking that the three UIDs are usable."""
        ds = self.dataset
        return checked_instance_key(
            site,
            str(ds.get("StudyInstanceUID", "")),
            str(ds.get("SeriesInstanceUID", "")),
            str(ds.get("SOPInstanceUID", "")),
        )

    def merge_tail(self, tail: bytes) -> None:
        """Add the elements that follow Pixel Data, read from the bytes at ``tail_offset``."""
        self.dataset.update(_read_raw_dataset(tail, self.encoding))
        self.tail_offset = None


def checked_instance_key(site: str, study: str, series: str, sop: str) -> InstanceKey:
    """Return the storage identity of these UIDs, checking that each is usable."""
    return InstanceKey(
        site=site,
        study=check_uid("StudyInstanceUID (0020,000D)", study),
        series=check_uid("SeriesInstanceUID (0020,000E)", series),
        sop=check_uid("SOPInstanceUID (0008,0018)", sop),
    )


def encoding_of(transfer_syntax: str) -> Encoding:
    if transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN:
        return Encoding(implicit_vr=True, little_endian=True)
    if transfer_syntax == EXPLICIT_VR_BIG_ENDIAN:
        return Encoding(implicit_vr=False, little_endian=False)
    return _EXPLICIT_LE


def parse_instance(data: bytes, total_size: int | None = None) -> InstanceHeader:
    """Parse the Part 10 object ``data``, or its first bytes when ``total_size`` is larger.

    Raises ``InvalidInstanceError`` for bytes that are not a Part 10 instance, and
    ``TruncatedError`` when a prefix is too short for the header. Its ``needed`` is then the
    number of bytes to read. A whole object that ends early is an ``InvalidInstanceError``.
    """
    from pydicom.errors import InvalidDicomError

    total = len(data) if total_size is None else total_size
    complete = len(data) >= total
    try:
        return _parse(data, total, complete)
    except TruncatedError as exc:
        if complete:
            raise InvalidInstanceError(str(exc), undecodable=True) from exc
        raise
    except (MalformedError, InvalidDicomError, zlib.error, *DECODING_ERRORS) as exc:
        raise InvalidInstanceError(f"not a valid DICOM data set: {exc}", undecodable=True) from exc


def _parse(data: bytes, total: int, complete: bool) -> InstanceHeader:
    if len(data) < _META_START or data[PREAMBLE_LENGTH:_META_START] != MAGIC:
        if not complete and len(data) < _META_START:
            raise TruncatedError("object is shorter than the Part 10 preamble", _META_START)
        raise InvalidInstanceError(
            "not a DICOM Part 10 object: no 'DICM' prefix after the 128-byte preamble",
            undecodable=True,
        )
    meta_end = _file_meta_end(data, complete)
    file_meta = _read_file_meta(data[:meta_end])
    transfer_syntax = str(file_meta.get("TransferSyntaxUID", ""))
    if not transfer_syntax:
        raise InvalidInstanceError(
            "file meta has no TransferSyntaxUID (0002,0010); the sender must set it"
        )
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        if not complete:
            raise TruncatedError("a deflated data set is read whole", total)
        return _parse_deflated(data, meta_end, file_meta)

    encoding = encoding_of(transfer_syntax)
    elements = scan_elements(data, meta_end, encoding, stop_at=PIXEL_DATA_TAG)
    pixel = elements[-1] if elements and elements[-1].tag == PIXEL_DATA_TAG else None
    if pixel is None:
        if not complete:
            # The prefix ended on an element boundary before Pixel Data: read more.
            raise TruncatedError("header continues past the prefix", min(total, 2 * len(data)))
        dataset = _read_raw_dataset(data[meta_end:], encoding)
        return InstanceHeader(file_meta, dataset, pixel_data=None)

    dataset = _read_raw_dataset(data[meta_end : pixel.offset], encoding)
    location = PixelDataLocation(
        # Implicit VR Pixel Data is OW (PS3.5 A.1), which is also what pydicom reports.
        vr=pixel.vr or "OW",
        value_offset=pixel.value_offset,
        length=pixel.length,
    )
    header = InstanceHeader(file_meta, dataset, location)
    if complete:
        _read_tail(header, data, pixel, encoding)
    elif pixel.length is None:
        header.tail_unknown = True
    elif pixel.value_offset + pixel.length < total:
        end = pixel.value_offset + pixel.length
        if end < len(data):
            header.merge_tail(data[end:])
            if len(data) < total:
                raise TruncatedError("elements after Pixel Data continue past the prefix", total)
        else:
            header.tail_offset = end
    return header


def _read_tail(header: InstanceHeader, data: bytes, pixel: RawElement, enc: Encoding) -> None:
    """Check that Pixel Data is whole and read what follows it."""
    element = read_element(memoryview(data), pixel.offset, enc)
    tail = data[element.end :]
    if tail:
        scan_elements(tail, 0, enc)
        header.merge_tail(tail)


def _parse_deflated(data: bytes, meta_end: int, file_meta: FileMetaDataset) -> InstanceHeader:
    inflated = inflate_dataset(memoryview(data)[meta_end:])
    scan_elements(inflated, 0, _EXPLICIT_LE)
    ds = _read_raw_dataset(inflated, _EXPLICIT_LE)
    del inflated
    location = None
    if "PixelData" in ds:
        # Offsets inside a deflated stream are useless for ranged reads: bulk data of a
        # deflated instance is served by reading the object whole.
        location = PixelDataLocation(vr=ds["PixelData"].VR, value_offset=-1, length=None)
        del ds.PixelData
    return InstanceHeader(file_meta, ds, location)


def inflation_limit(stream_length: int) -> int:
    """Return the most bytes a deflated data set of ``stream_length`` bytes may inflate to."""
    return min(MAX_INFLATED_BYTES, max(MIN_INFLATED_LIMIT, INFLATION_RATIO * stream_length))


def inflate_dataset(stream: memoryview) -> bytes:
    """Inflate the raw deflate ``stream`` of a data set (PS3.5 A.5), within ``inflation_limit``.

    The stream is inflated in chunks, so a stream that would exceed the limit is refused
    once the limit is reached, before the memory is spent. Raises ``InstanceTooLargeError``
    then, and ``InvalidInstanceError`` for a truncated stream (dcmread would stop silently
    at its end).
    """
    limit = inflation_limit(len(stream))
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    chunks: list[bytes] = []
    size = 0
    pending: bytes | memoryview = stream
    while not inflater.eof:
        chunk = inflater.decompress(pending, min(_INFLATE_CHUNK, limit + 1 - size))
        if not chunk:
            break  # the input gives no more output before the end: the stream is cut short
        size += len(chunk)
        if size > limit:
            raise InstanceTooLargeError(
                f"deflated data set of {len(stream)} bytes inflates to more than {limit} "
                f"bytes, the most this archive inflates for a stream of that size"
            )
        chunks.append(chunk)
        pending = inflater.unconsumed_tail
    if not inflater.eof:
        raise InvalidInstanceError("deflated data set is truncated", undecodable=True)
    return b"".join(chunks)


def _file_meta_end(data: bytes, complete: bool) -> int:
    """Return the offset after the last group 0002 element (always explicit VR LE)."""
    offset = _META_START
    view = memoryview(data)
    while offset + 4 <= len(data):
        (group,) = struct.unpack_from("<H", data, offset)
        if group != 0x0002:
            return offset
        element = read_element(view, offset, _EXPLICIT_LE)
        offset = element.end
    if offset == len(data) and complete:
        return offset
    raise TruncatedError("file meta information is truncated", offset + 8)


def _read_file_meta(meta: bytes) -> FileMetaDataset:
    from pydicom.dataset import FileMetaDataset

    ds = _read_raw_dataset(meta[_META_START:], _EXPLICIT_LE)
    file_meta = FileMetaDataset()
    file_meta.update(ds)
    return file_meta


def _read_raw_dataset(data: bytes, encoding: Encoding) -> Dataset:
    from pydicom.filereader import read_dataset

    return read_dataset(BytesIO(data), encoding.implicit_vr, encoding.little_endian)
