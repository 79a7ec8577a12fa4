"""WADO-RS frame retrieval (PS3.18 10.4.1.1.3): ``{instance}/frames/{list}``.

The Accept header selects a media type and transfer syntax for the frames (see
``cirrus.dicomweb.negotiation``). The frames are produced in one of four ways:

- native little endian frames sent as application/octet-stream are read with one ranged GET
  each when the index contains the Pixel Data offset;
- big endian and compressed frames sent as octet-stream are decoded to little endian pixels;
- compressed frames requested in their stored syntax are sent as stored, without the item
  delimiters of the encapsulation (PS3.18 8.7.3.3.2);
- frames requested in another compressed syntax are decoded, then encoded losslessly.

Decoded YBR colour is sent as YCbCr, without conversion to RGB, so that the colour model of
Photometric Interpretation in the instance's metadata stays true for the frames. A JPEG
decoder returns a CB and CR value for every pixel, so decoded frames of an instance stored as
YBR_FULL_422 are YBR_FULL, three bytes a pixel, as in the instance transcoded to Explicit VR
Little Endian. Frames encoded into another syntax carry the same values. Octet-stream frames of
YBR_FULL_422 stored in Explicit or Implicit VR Little Endian are sent as stored, two bytes a
pixel, as the metadata describes them.

One frame requested with a bare media type (``Accept: image/jls``) is sent as a single-part
body. Otherwise the response is multipart/related, one part for each frame, and each part
names the transfer syntax of its content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, Final

from cirrus.dicom.transcode import (
    CODEC_ERRORS,
    TranscodeError,
    UndecodableDataError,
    decode_frames,
    encode_frame,
    error_reason,
    is_compressed,
)
from cirrus.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from cirrus.dicomweb.multipart import Part, build_multipart_related
from cirrus.dicomweb.negotiation import (
    FRAME_ROOT_TYPES,
    OCTET_STREAM,
    Choice,
    acceptable_types,
    describe,
    frame_choices,
)
from cirrus.dicomweb.wado import Representation, stored_syntax
from cirrus.errors import (
    DamagedInstanceError,
    InvalidParameterError,
    NotAcceptableError,
    NotFoundError,
)
from cirrus.index.attributes import first_value
from cirrus.index.reader import IndexReader, InstanceRef
from cirrus.storage.objects import ObjectStore

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pydicom.uid import UID

logger = logging.getLogger(__name__)

# The maximum number of frames one request may list.
MAX_FRAMES_PER_REQUEST: Final = 1000
# Stored syntaxes whose Pixel Data bytes are already the little endian octets of PS3.18.
_LITTLE_ENDIAN_NATIVE: Final = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


def parse_frame_list(text: str) -> list[int]:
    """Return the 1-based frame numbers of a comma-separated list, or raise a 400 error."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise InvalidParameterError(
                f"frame number {item!r} is invalid; frames are numbered from 1, as in 1,3,5",
                parameter="frames",
                kind="invalid frame number",
            )
        numbers.append(int(item))
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise InvalidParameterError(
            f"{len(numbers)} frames were requested; ask for at most {MAX_FRAMES_PER_REQUEST}",
            parameter="frames",
            kind="too many frames",
        )
    return numbers


def retrieve_frames(
    store: ObjectStore,
    reader: IndexReader,
    site: str,
    uids: tuple[str, str, str],
    frame_list: str,
    accept: str | None = None,
) -> Representation:
    """Return the requested frames of one instance in the representation ``accept`` selects.

    Raises ``InvalidRequestError`` for a malformed list, ``NotFoundError`` for a frame past the
    last one or an instance without Pixel Data, and ``NotAcceptableError`` when the frames
    cannot be produced in any representation that ``accept`` allows. Raises
    ``DamagedInstanceError`` when the stored object cannot be parsed or decoded, or its Pixel
    Data is shorter than the frames it declares.
    """
    numbers = parse_frame_list(frame_list)
    ref = reader.instance(site, *uids)
    metadata = reader.instance_metadata(site, *uids)
    if "7FE00010" not in metadata:
        raise NotFoundError(f"instance {ref.sop} has no Pixel Data, so it has no frames")
    count = int(first_value(metadata, "00280008") or 1)
    beyond = [number for number in numbers if number > count]
    if beyond:
        raise NotFoundError(
            f"instance {ref.sop} has {count} frames; frame {beyond[0]} is past the last"
        )
    stored = stored_syntax(ref)
    acceptable = acceptable_types(accept, FRAME_ROOT_TYPES, single_part=len(numbers) == 1)
    choices = frame_choices(acceptable, stored)
    if not choices:
        raise NotAcceptableError(
            f"frames of instance {ref.sop}, stored in transfer syntax {stored}, cannot be sent "
            f"as {describe(acceptable)}; ask for multipart/related; "
            f'type="{OCTET_STREAM}" (decoded little endian pixels) or transfer-syntax=*'
        )
    source = _FrameSource(store, ref, metadata, count)
    reasons = []
    damaged = False
    for choice in choices:
        try:
            frames = _produce(source, choice, numbers)
        except TranscodeError as exc:
            reasons.append(f"{choice.media_type} ({choice.transfer_syntax}): {exc}")
            damaged = damaged or isinstance(exc, DamagedInstanceError)
            logger.info(
                "frames not produced in one acceptable representation",
                extra={
                    "sop_instance_uid": ref.sop,
                    "media_type": choice.media_type,
                    "transfer_syntax": str(choice.transfer_syntax),
                    "reason": str(exc),
                },
            )
            continue
        if not choice.multipart:
            return Representation(frames[0], choice.part_type)
        parts = [Part(frame, content_type=choice.part_type) for frame in frames]
        body, content_type = build_multipart_related(parts, choice.media_type)
        return Representation(body, content_type)
    message = f"frames of instance {ref.sop} could not be produced: {'; '.join(reasons)}"
    raise DamagedInstanceError(message) if damaged else NotAcceptableError(message)


@dataclass
class _FrameSource:
    """The stored instance behind a frame request. ``dataset`` reads and parses it once."""

    store: ObjectStore
    ref: InstanceRef
    metadata: dict[str, object]
    count: int
    _dataset: Dataset | None = field(default=None, init=False)

    @property
    def stored(self) -> UID:
        return stored_syntax(self.ref)

    def dataset(self) -> Dataset:
        if self._dataset is None:
            import pydicom
            from pydicom.errors import InvalidDicomError

            try:
                self._dataset = pydicom.dcmread(BytesIO(self.store.get(self.ref.object_key)))
            except (InvalidDicomError, *CODEC_ERRORS) as exc:
                raise UndecodableDataError(
                    f"the stored object could not be parsed: {error_reason(exc)}"
                ) from exc
            if "PixelData" not in self._dataset:
                raise NotFoundError(f"instance {self.ref.sop} has no Pixel Data")
        return self._dataset


def _produce(source: _FrameSource, choice: Choice, numbers: list[int]) -> list[bytes]:
    target = choice.transfer_syntax
    if target == source.stored and is_compressed(target):
        return _encapsulated_frames(source, numbers)
    if target == EXPLICIT_VR_LITTLE_ENDIAN:
        if source.stored in _LITTLE_ENDIAN_NATIVE:
            native = _native_frames(source, numbers)
            if native is not None:
                return native
        return [frame.data for frame in decode_frames(source.dataset(), numbers)]
    decoded = decode_frames(source.dataset(), numbers)
    return [encode_frame(frame, target) for frame in decoded]


def _native_frames(source: _FrameSource, numbers: list[int]) -> list[bytes] | None:
    """Read native little endian frames by byte range; None when they are not byte-aligned.

    The frames are sent as stored, so a YBR_FULL_422 frame keeps its two bytes a pixel.
    """
    frame_size = native_frame_size(source.metadata)
    if frame_size is None:
        return None  # 1-bit frames that share bytes: decode_frames packs each frame alone
    ref = source.ref
    if ref.pixel_offset is None:
        value = source.dataset().PixelData
        _check_frames_fit(ref, numbers, frame_size, len(value))
        return [value[(n - 1) * frame_size : n * frame_size] for n in numbers]
    # Without an indexed length, the end of the object bounds the Pixel Data.
    available = ref.pixel_length if ref.pixel_length is not None else ref.size - ref.pixel_offset
    _check_frames_fit(ref, numbers, frame_size, available)
    frames = []
    for number in numbers:
        start = ref.pixel_offset + (number - 1) * frame_size
        data, _ = source.store.get_range(ref.object_key, start, start + frame_size)
        if len(data) < frame_size:
            raise UndecodableDataError(
                f"frame {number} of instance {ref.sop} has {len(data)} of its {frame_size} "
                "bytes in the stored object; the stored object is damaged"
            )
        frames.append(data)
    return frames


def native_frame_size(metadata: dict[str, object]) -> int | None:
    """Return the size in bytes of one native frame described by DICOM JSON ``metadata``.

    Returns None when a frame does not end on a byte boundary, or the size is 0. pydicom's
    ``get_expected_length`` computes the size, so that YBR_FULL_422 counts two samples a
    pixel, because two adjacent pixels share one CB and one CR value (PS3.3 C.7.6.3.1.2).
    """
    from pydicom.dataset import Dataset
    from pydicom.pixels.utils import get_expected_length

    frame = Dataset()
    frame.Rows = int(first_value(metadata, "00280010") or 0)
    frame.Columns = int(first_value(metadata, "00280011") or 0)
    frame.SamplesPerPixel = int(first_value(metadata, "00280002") or 1)
    frame.BitsAllocated = int(first_value(metadata, "00280100") or 0)
    frame.PhotometricInterpretation = str(first_value(metadata, "00280004") or "")
    pixel_bits = frame.Rows * frame.Columns * frame.SamplesPerPixel * frame.BitsAllocated
    if pixel_bits % 8 or pixel_bits == 0:
        return None
    return get_expected_length(frame)


def _check_frames_fit(
    ref: InstanceRef, numbers: list[int], frame_size: int, available: int
) -> None:
    """Raise ``UndecodableDataError`` when ``available`` Pixel Data bytes lack a frame."""
    last = max(numbers)
    if last * frame_size > available:
        raise UndecodableDataError(
            f"instance {ref.sop} has {available} bytes of Pixel Data, fewer than the "
            f"{last * frame_size} that frame {last} of {frame_size} bytes needs; the stored "
            "object is damaged"
        )


def _encapsulated_frames(source: _FrameSource, numbers: list[int]) -> list[bytes]:
    from pydicom.encaps import generate_frames

    value = source.dataset().PixelData
    try:
        frames = list(generate_frames(value, number_of_frames=source.count))
        return [frames[number - 1] for number in numbers]
    except (ValueError, IndexError) as exc:
        raise UndecodableDataError(
            f"the encapsulated Pixel Data is malformed: {error_reason(exc)}"
        ) from exc
