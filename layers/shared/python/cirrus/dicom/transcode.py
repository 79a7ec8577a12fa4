"""Transcoding of stored instances and frames between transfer syntaxes (PS3.5 8 and 10).

Pixel Data is decoded by pydicom 3 with the plugins installed beside it, tried in the order of
``DECODING_PLUGINS``: pylibjpeg first, then pyjpegls, pydicom's own RLE decoder, GDCM and
Pillow. A plugin that fails on one codestream does not stop the next one from trying. Encoding
uses pydicom's encoders (pylibjpeg-rle, pyjpegls, pylibjpeg-openjpeg).

Only lossless encoders are used, so no transcode loses information. JPEG-LS Near-Lossless
(1.2.840.10008.1.2.4.81) is produced with NEAR=0, which is lossless. JPEG Baseline, JPEG
Extended, JPEG 2000 (1.2.840.10008.1.2.4.91, for which pydicom 3.0 requires a lossy option)
and the other lossy syntaxes are sent only as stored. Decoded lossy data keeps Lossy Image
Compression (0028,2110) as "01". Decoded YBR colour keeps its YCbCr values in every syntax
produced, and only ``frame_array``, which rendering uses, converts it to RGB.

Explicit VR Big Endian is never produced. Implicit VR Little Endian is produced only on
request, because PS3.18 8.7.3 bars it from web services. docs/transfer-syntaxes.md lists what
each plugin decodes and encodes.

A process may run without numpy and the codec plugins: the DICOMweb Lambda does, because
pydicom imports all of them when it is imported. Then ``CODECS_INSTALLED`` is false, the
``can_*`` checks answer for the syntaxes that pydicom has a decoder or encoder for, and any
step that needs pixel codecs raises ``CodecsUnavailable`` so that the caller can hand the
request to a process that has them. Re-encoding between the little endian native syntaxes
needs no codec and works in either process.

This module imports pydicom inside the functions that use it, as do the other modules that
the Lambda handlers import at start (``cirrus.dicom.uids``). So the pixel function imports
numpy and the codecs when its first request needs pixel data, not when its handler loads.
"""

from __future__ import annotations

import importlib.util
import logging
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any, Final

from cirrus.dicom.instance import DECODING_ERRORS
from cirrus.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_2000_LOSSLESS,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    RLE_LOSSLESS,
)
from cirrus.errors import DamagedInstanceError, NotAcceptableError

if TYPE_CHECKING:
    import numpy as np
    from pydicom.dataset import Dataset
    from pydicom.uid import UID

logger = logging.getLogger(__name__)

# Whether this process can decode and encode Pixel Data: numpy comes with the codec layer and
# every plugin needs it. Without it pydicom imports no plugin.
CODECS_INSTALLED: Final = importlib.util.find_spec("numpy") is not None

# Decoding plugins in order of preference. pylibjpeg comes first because it covers every
# compressed syntax that pydicom 3.0 has a decoder for. GDCM and Pillow decode some
# codestreams that it rejects.
DECODING_PLUGINS: Final = ("pylibjpeg", "pyjpegls", "pydicom", "gdcm", "pillow")
ENCODING_PLUGINS: Final = ("pylibjpeg", "pyjpegls", "pydicom", "gdcm")

# Syntaxes whose Pixel Data is native: the data set is re-encoded, Pixel Data only byte-swapped.
NATIVE_SYNTAXES: Final = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
    }
)
# Native syntaxes that can be produced. Explicit VR Big Endian is retired (PS3.5 A.3) and
# forbidden in web services, so nothing is transcoded to it.
NATIVE_TARGETS: Final = frozenset(
    {IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}
)
# Compressed syntaxes that can be produced, each with the encoder options that keep it lossless.
LOSSLESS_ENCODINGS: Final[dict[str, dict[str, Any]]] = {
    RLE_LOSSLESS: {},
    JPEG_LS_LOSSLESS: {},
    JPEG_LS_NEAR_LOSSLESS: {"jls_error": 0},
    JPEG_2000_LOSSLESS: {},
}
# Compressed syntaxes whose codestreams are always or usually lossy (PS3.5 8.2).
LOSSY_SYNTAXES: Final = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.100",
        "1.2.840.10008.1.2.4.101",
        "1.2.840.10008.1.2.4.102",
        "1.2.840.10008.1.2.4.103",
        "1.2.840.10008.1.2.4.104",
        "1.2.840.10008.1.2.4.105",
        "1.2.840.10008.1.2.4.106",
        "1.2.840.10008.1.2.4.203",
    }
)
# PS3.5 7.1.2: a defined length is a 32-bit value, and 0xFFFFFFFF means undefined.
MAX_NATIVE_PIXEL_LENGTH: Final = 0xFFFFFFFE
_WORD_SIZES: Final = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
# Exceptions that pydicom, numpy and the codec plugins raise on data they cannot handle.
CODEC_ERRORS: Final = (*DECODING_ERRORS, RuntimeError, AttributeError, IndexError, OverflowError)


class CodecsUnavailable(Exception):
    """This process has no pixel codecs, and the request needs them.

    Deliberately outside ``CODEC_ERRORS`` and ``CirrusError``, so that no handler of those
    turns it into a response: it must reach the code that forwards the request.
    """


def require_codecs(purpose: str) -> None:
    """Raise ``CodecsUnavailable`` unless this process has the pixel codecs."""
    if not CODECS_INSTALLED:
        raise CodecsUnavailable(f"{purpose} needs the pixel codecs, which this process lacks")


class TranscodeError(NotAcceptableError):
    """The stored data cannot be produced in the requested transfer syntax."""


class UndecodableDataError(DamagedInstanceError, TranscodeError):
    """The stored object or its Pixel Data cannot be parsed or decoded by any plugin.

    It is a ``TranscodeError``, so callers still try their other representations, and its
    status is that of ``DamagedInstanceError`` (500) because the stored data is at fault.
    """


@dataclass(frozen=True)
class Frame:
    """One frame of native pixels: little endian bytes with the attributes that describe them.

    Colour frames are interleaved (Planar Configuration 0). ``photometric`` is the
    interpretation of these bytes (see ``native_photometric``).
    """

    data: bytes
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str


def transfer_syntax_of(ds: Dataset) -> UID:
    """Return the transfer syntax in which ``ds`` was read (Implicit VR LE when unlabelled)."""
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        return UID(str(syntax))
    implicit, little = ds.original_encoding
    if little is False:
        return UID(EXPLICIT_VR_BIG_ENDIAN)
    if implicit is not False:
        return UID(IMPLICIT_VR_LITTLE_ENDIAN)
    return UID(EXPLICIT_VR_LITTLE_ENDIAN)


def can_decode(syntax: str) -> bool:
    """Tell whether Pixel Data in ``syntax`` can be decoded with the installed plugins."""
    if syntax in NATIVE_SYNTAXES:
        return True
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return False
    # Without codecs, a process that has them decides (see CodecsUnavailable).
    return not CODECS_INSTALLED or bool(decoder.available_plugins)


def can_encode(syntax: str) -> bool:
    """Tell whether native Pixel Data can be written in ``syntax`` without loss."""
    if syntax in NATIVE_TARGETS:
        return True
    if syntax not in LOSSLESS_ENCODINGS:
        return False
    from pydicom.pixels.encoders.base import get_encoder

    return not CODECS_INSTALLED or bool(get_encoder(syntax).available_plugins)


def can_transcode(source: str, target: str) -> bool:
    """Tell whether an instance stored in ``source`` could be produced in ``target``.

    This looks only at the installed codecs. A codec may still reject a particular image (a
    bit depth it does not support, a corrupt codestream), which ``transcode`` reports.
    """
    return source == target or (can_decode(source) and can_encode(target))


def is_compressed(syntax: str) -> bool:
    """Tell whether ``syntax`` encapsulates Pixel Data; False for UIDs pydicom does not know.

    pydicom's ``UID.is_compressed`` raises ValueError for private and unknown UIDs.
    """
    from pydicom.uid import UID

    uid = UID(syntax)
    return uid.is_transfer_syntax and uid.is_compressed


def is_lossy(syntax: str) -> bool:
    """Tell whether ``syntax`` is one whose codestreams are (or may be) lossy."""
    return syntax in LOSSY_SYNTAXES


def native_pixel_length(ds: Dataset) -> int:
    """Return the length in bytes that the decoded Pixel Data of ``ds`` would have."""
    bits = (
        int(ds.get("Rows") or 0)
        * int(ds.get("Columns") or 0)
        * int(ds.get("SamplesPerPixel") or 1)
        * int(ds.get("BitsAllocated") or 0)
        * int(ds.get("NumberOfFrames") or 1)
    )
    return (bits + 7) // 8


def transcode(data: bytes, target: str) -> bytes:
    """Return the Part 10 object ``data`` re-encoded in the transfer syntax ``target``.

    The data set keeps every element. Pixel Data is decoded to native little endian first
    when it is compressed or big endian, then compressed losslessly when ``target`` is a
    compressed syntax. Raises ``TranscodeError`` with the reason when that is not possible.
    """
    from pydicom.uid import UID

    if not can_encode(target):
        raise TranscodeError(f"no lossless encoder is installed for transfer syntax {target}")
    target = UID(target)
    ds = _read(data)
    source = transfer_syntax_of(ds)
    if source == target and "TransferSyntaxUID" in ds.file_meta:
        return data
    if "PixelData" in ds:
        _to_native(ds, source)
        if target.is_compressed:
            _upsample_ybr_422(ds)
            _compress(ds, target)
    elif target.is_compressed and _has_native_only_elements(ds):
        raise TranscodeError(f"float Pixel Data has no encapsulated form in {target}")
    _swap_words(ds, source)
    ds.file_meta.TransferSyntaxUID = target
    return _write(ds, target)


def decode_frames(ds: Dataset, numbers: Sequence[int]) -> list[Frame]:
    """Decode the 1-based ``numbers`` of the frames of ``ds`` to native little endian pixels.

    YBR colour keeps its YCbCr values, without conversion to RGB. Raises ``TranscodeError``
    when no installed plugin can decode them.
    """
    source = transfer_syntax_of(ds)
    if not can_decode(source):
        raise TranscodeError(f"no decoder is installed for transfer syntax {source}")
    indices = [number - 1 for number in numbers]
    errors: list[str] = []
    for plugin in _decoding_plugins(source):
        try:
            decoded = _iter_frames(ds, indices, plugin, as_rgb=False)
            return [_frame(array, meta) for array, meta in decoded]
        except CODEC_ERRORS as exc:
            errors.append(f"{plugin or 'numpy'}: {error_reason(exc)}")
    raise UndecodableDataError(
        f"frames in transfer syntax {source} could not be decoded ({'; '.join(errors)})"
    )


def frame_array(ds: Dataset, number: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode frame ``number`` (1-based) of ``ds`` to an array, with pydicom's pixel metadata.

    YBR colour comes back as RGB. Raises ``TranscodeError`` when no plugin can decode it.
    """
    source = transfer_syntax_of(ds)
    if not can_decode(source):
        raise TranscodeError(f"no decoder is installed for transfer syntax {source}")
    errors: list[str] = []
    for plugin in _decoding_plugins(source):
        try:
            return next(_iter_frames(ds, [number - 1], plugin, as_rgb=True))
        except CODEC_ERRORS as exc:
            errors.append(f"{plugin or 'numpy'}: {error_reason(exc)}")
    raise UndecodableDataError(
        f"frame {number} in transfer syntax {source} could not be decoded ({'; '.join(errors)})"
    )


def encode_frame(frame: Frame, target: str) -> bytes:
    """Compress one native frame losslessly in ``target``; raise ``TranscodeError`` if not."""
    if target not in LOSSLESS_ENCODINGS or not can_encode(target):
        raise TranscodeError(f"no lossless encoder is installed for transfer syntax {target}")
    require_codecs("encoding a frame")
    from pydicom.pixels.encoders.base import get_encoder

    encoder = get_encoder(target)
    options = {
        **LOSSLESS_ENCODINGS[target],
        "rows": frame.rows,
        "columns": frame.columns,
        "samples_per_pixel": frame.samples_per_pixel,
        "bits_allocated": frame.bits_allocated,
        "bits_stored": frame.bits_stored,
        "pixel_representation": frame.pixel_representation,
        "photometric_interpretation": frame.photometric,
        "planar_configuration": 0,
        "number_of_frames": 1,
    }
    errors: list[str] = []
    for plugin in _plugins(ENCODING_PLUGINS, encoder.available_plugins):
        try:
            return bytes(encoder.encode(frame.data, encoding_plugin=plugin, **options))
        except CODEC_ERRORS as exc:
            errors.append(f"{plugin}: {error_reason(exc)}")
    raise TranscodeError(
        f"the frame could not be encoded in transfer syntax {target} ({'; '.join(errors)})"
    )


def _read(data: bytes) -> Dataset:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(BytesIO(data), force=True)
    except (InvalidDicomError, *CODEC_ERRORS) as exc:
        raise UndecodableDataError(
            f"the stored object could not be parsed: {error_reason(exc)}"
        ) from exc


def _write(ds: Dataset, target: UID) -> bytes:
    """Encode ``ds`` as a Part 10 object in ``target``.

    pydicom copies each value into a buffer of its own before writing it, so Pixel Data would
    exist three times at the peak: in ``ds``, in that buffer and in the output. Here the rest
    of the data set is written by pydicom, and Pixel Data is joined in with the element header
    written by hand, so the output is the only copy of it. Deflated output goes through pydicom
    whole, because pydicom compresses the encoded data set as one stream.
    """
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    implicit = target == IMPLICIT_VR_LITTLE_ENDIAN
    pixels = (
        ds["PixelData"]
        if "PixelData" in ds and target != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
        else None
    )
    before, after = ds, Dataset()
    if pixels is not None:
        before = ds.copy()  # shallow: the values are shared
        del before["PixelData"]
        for elem in ds:
            if elem.tag > 0x7FE00010:
                after.add(elem)
                del before[elem.tag]
    try:
        head = BytesIO()
        pydicom.dcmwrite(
            head, before, implicit_vr=implicit, little_endian=True, enforce_file_format=True
        )
        if pixels is None:
            return head.getvalue()
        tail = DicomBytesIO()
        tail.is_little_endian, tail.is_implicit_VR = True, implicit
        write_dataset(tail, after)
    except CODEC_ERRORS as exc:
        raise TranscodeError(
            f"the data set could not be written in {target}: {error_reason(exc)}"
        ) from exc
    value = pixels.value
    # PS3.5 A.2: OW for native Pixel Data of more than 8 bits allocated, else OB.
    vr = "OW" if int(ds.get("BitsAllocated") or 8) > 8 else "OB"
    return b"".join(
        [
            head.getvalue(),
            _pixel_header(vr, len(value), target),
            value,
            b"\x00" * (len(value) % 2),
            _pixel_trailer(target),
            tail.getvalue(),
        ]
    )


def _pixel_header(vr: str, length: int, target: UID) -> bytes:
    """Return the tag, VR and length of top-level Pixel Data (PS3.5 7.1.2 and A.4)."""
    tag = struct.pack("<HH", 0x7FE0, 0x0010)
    if target.is_compressed:
        return tag + b"OB\x00\x00" + struct.pack("<I", 0xFFFFFFFF)
    length += length % 2
    if target == IMPLICIT_VR_LITTLE_ENDIAN:
        return tag + struct.pack("<I", length)
    return tag + vr.encode("ascii") + b"\x00\x00" + struct.pack("<I", length)


def _pixel_trailer(target: UID) -> bytes:
    # Encapsulated Pixel Data ends with a Sequence Delimitation Item (FFFE,E0DD) of length 0.
    return struct.pack("<HHI", 0xFFFE, 0xE0DD, 0) if target.is_compressed else b""


def _to_native(ds: Dataset, source: UID) -> None:
    """Replace compressed or big endian Pixel Data of ``ds`` with native little endian.

    YBR colour keeps its YCbCr values, and Photometric Interpretation is set to match the new
    Pixel Data (see ``native_photometric``).
    """
    if not source.is_transfer_syntax:
        raise TranscodeError(f"{source} is not a transfer syntax that pydicom can decode")
    if source.is_compressed:
        length = native_pixel_length(ds)
        if length > MAX_NATIVE_PIXEL_LENGTH:
            raise TranscodeError(
                f"decoded Pixel Data would have {length} bytes, "
                "more than a 32-bit value length allows"
            )
        _decompress(ds, source)
    elif source == EXPLICIT_VR_BIG_ENDIAN:
        numbers = range(1, int(ds.get("NumberOfFrames") or 1) + 1)
        frames = decode_frames(ds, numbers)
        _set_native_pixels(ds, frames)


def _upsample_ybr_422(ds: Dataset) -> None:
    """Give native YBR_FULL_422 Pixel Data a CB and CR value for every pixel, as YBR_FULL.

    pydicom 3.0.2's encoders expect every sample of every pixel, so they reject 4:2:2 data for
    its length. Repeating each shared CB and CR value for both pixels of the pair loses nothing.
    """
    if ds.get("PhotometricInterpretation") != "YBR_FULL_422":
        return
    numbers = range(1, int(ds.get("NumberOfFrames") or 1) + 1)
    _set_native_pixels(ds, decode_frames(ds, numbers))


def _decompress(ds: Dataset, source: UID) -> None:
    if not can_decode(source):
        raise TranscodeError(f"no decoder is installed for transfer syntax {source}")
    require_codecs("decompressing Pixel Data")
    errors: list[str] = []
    for plugin in _decoding_plugins(source):
        try:
            # Without as_rgb, pydicom keeps the YCbCr values and also the label YBR_FULL_422,
            # which native_photometric corrects.
            ds.decompress(decoding_plugin=plugin, as_rgb=False, generate_instance_uid=False)
            ds.PhotometricInterpretation = native_photometric(ds.PhotometricInterpretation)
            return
        except CODEC_ERRORS as exc:
            errors.append(f"{plugin}: {error_reason(exc)}")
    raise UndecodableDataError(f"Pixel Data in {source} could not be decoded ({'; '.join(errors)})")


def _compress(ds: Dataset, target: UID) -> None:
    require_codecs("compressing Pixel Data")
    from pydicom.pixels.encoders.base import get_encoder

    encoder = get_encoder(target)
    errors: list[str] = []
    for plugin in _plugins(ENCODING_PLUGINS, encoder.available_plugins):
        try:
            ds.compress(
                target,
                encoding_plugin=plugin,
                generate_instance_uid=False,
                **LOSSLESS_ENCODINGS[target],
            )
            return
        except CODEC_ERRORS as exc:
            errors.append(f"{plugin}: {error_reason(exc)}")
    raise TranscodeError(f"Pixel Data could not be encoded in {target} ({'; '.join(errors)})")


def _set_native_pixels(ds: Dataset, frames: list[Frame]) -> None:
    ds.PixelData = b"".join(frame.data for frame in frames)
    ds["PixelData"].VR = "OW" if frames[0].bits_allocated > 8 else "OB"
    if frames[0].samples_per_pixel > 1:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = frames[0].photometric


def _swap_words(ds: Dataset, source: UID) -> None:
    """Swap the bytes of OW, OL, OF, OD and OV values read big endian, other than Pixel Data.

    pydicom converts numeric VRs when it reads them but keeps these values as raw bytes.
    """
    if source != EXPLICIT_VR_BIG_ENDIAN:
        return
    require_codecs("byte-swapping big endian values")
    import numpy as np

    for elem in ds.iterall():
        size = _WORD_SIZES.get(elem.VR)
        if size is None or elem.tag == 0x7FE00010 or not isinstance(elem.value, bytes):
            continue
        dtype = np.dtype(f">u{size}")
        usable = len(elem.value) - len(elem.value) % size
        swapped = np.frombuffer(elem.value[:usable], dtype).astype(dtype.newbyteorder("<"))
        elem.value = swapped.tobytes() + elem.value[usable:]
    ds.set_original_encoding(False, True)


def _has_native_only_elements(ds: Dataset) -> bool:
    return any(keyword in ds for keyword in ("FloatPixelData", "DoubleFloatPixelData"))


def _decoding_plugins(source: UID) -> list[str]:
    if source in NATIVE_SYNTAXES:
        return [""]  # pydicom decodes native data with numpy; there is no plugin to name
    from pydicom.pixels.decoders.base import get_decoder

    return _plugins(DECODING_PLUGINS, get_decoder(source).available_plugins)


def _plugins(preferred: Iterable[str], available: Iterable[str]) -> list[str]:
    available = list(available)
    ordered = [name for name in preferred if name in available]
    return ordered + [name for name in available if name not in ordered]


def _iter_frames(
    ds: Dataset, indices: list[int], plugin: str, as_rgb: bool
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    require_codecs("decoding frames")
    from pydicom.pixels.decoders.base import get_decoder

    decoder = get_decoder(transfer_syntax_of(ds))
    # as_rgb converts YBR colour to RGB; pydicom types these options as a TypedDict.
    options: Any = {"as_rgb": as_rgb}
    for index in indices:
        yield decoder.as_array(ds, index=index, decoding_plugin=plugin, **options)


def _frame(array: np.ndarray, meta: dict[str, Any]) -> Frame:
    import numpy as np

    bits_allocated = int(meta["bits_allocated"])
    if bits_allocated == 1:
        # The decoder unpacks 1-bit data to one byte a pixel; PS3.5 8.1.1 packs 8 to a byte.
        data = np.packbits(array.ravel(), bitorder="little").tobytes()
    else:
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return Frame(
        data=data,
        rows=int(meta["rows"]),
        columns=int(meta["columns"]),
        samples_per_pixel=int(meta["samples_per_pixel"]),
        bits_allocated=bits_allocated,
        bits_stored=int(meta["bits_stored"]),
        pixel_representation=int(meta["pixel_representation"]),
        photometric=native_photometric(str(meta["photometric_interpretation"])),
    )


def native_photometric(decoded: str) -> str:
    """Return the Photometric Interpretation of decoded pixels that pydicom labels ``decoded``.

    pydicom 3.0.2 keeps the label YBR_FULL_422 on a decoded frame, but the frame has a CB and CR
    value for every pixel. In a native encoding YBR_FULL_422 means that two horizontally
    adjacent pixels share one CB and one CR value (PS3.3 C.7.6.3.1.2), so these pixels are
    YBR_FULL.
    """
    return "YBR_FULL" if decoded == "YBR_FULL_422" else decoded


def error_reason(exc: BaseException) -> str:
    """Return an error from pydicom or a codec on one line, at most 400 characters.

    Some of these messages run to many lines or carry a traceback. The first line is kept, and
    when it ends with a colon, so are the indented lines that follow it: pydicom lists there
    the values a codec refused, or the error of each plugin.
    """
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    reason = lines[0].strip()
    if reason.endswith(":"):
        details = []
        for line in lines[1:]:
            if not line[:1].isspace() or line.strip().startswith('File "'):
                break
            details.append(line.strip())
        reason = f"{reason} {'; '.join(details)}" if details else reason.rstrip(":")
    return reason[:400]
