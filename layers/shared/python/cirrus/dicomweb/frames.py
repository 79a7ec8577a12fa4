"""WADO-RS frame retrieval (PS3.18 10.4.1.1.3): ``{instance}/frames/{list}``.

Frames of native (uncompressed) Pixel Data are served as application/octet-stream, each read
with a ranged GET of its bytes. Frames of encapsulated Pixel Data are served as stored, with
the stored transfer syntax named on each part, when the Accept allows that syntax.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from typing import Final

import pydicom
from pydicom.encaps import generate_frames
from pydicom.uid import UID, ExplicitVRBigEndian

from cirrus.dicomweb.media import MediaType, format_media_type, parse_accept
from cirrus.dicomweb.multipart import MULTIPART_RELATED, Part, build_multipart_related
from cirrus.dicomweb.wado import OCTET_STREAM, Representation
from cirrus.errors import InvalidRequestError, NotAcceptableError, NotFoundError
from cirrus.index.attributes import first_value
from cirrus.index.reader import IndexReader, InstanceRef
from cirrus.storage.objects import ObjectStore

# The maximum number of frames one request may list.
MAX_FRAMES_PER_REQUEST: Final = 1000


def parse_frame_list(text: str) -> list[int]:
    """Return the 1-based frame numbers of a comma-separated list, or raise a 400 error."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise InvalidRequestError(
                f"frame number {item!r} is invalid; frames are numbered from 1, as in 1,3,5"
            )
        numbers.append(int(item))
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise InvalidRequestError(
            f"{len(numbers)} frames were requested; ask for at most {MAX_FRAMES_PER_REQUEST}"
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
    """Return the requested frames of one instance as multipart/related.

    Raises ``InvalidRequestError`` for a malformed list, ``NotFoundError`` for a frame past the
    last one or an instance without Pixel Data, and ``NotAcceptableError`` when the frames
    cannot be served in a representation that ``accept`` allows.
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
    syntax = UID(ref.transfer_syntax)
    if syntax.is_compressed:
        _require_syntax(parse_accept(accept), syntax)
        frames = _encapsulated_frames(store, ref, numbers, count)
        part_type = format_media_type(OCTET_STREAM, {"transfer-syntax": str(syntax)})
    else:
        if syntax == ExplicitVRBigEndian:
            # TODO: swap the bytes of big endian frames to the little endian order of PS3.18.
            raise NotAcceptableError(
                f"instance {ref.sop} is stored big endian; its frames cannot be served yet"
            )
        _require_syntax(parse_accept(accept), None)
        frames = _native_frames(store, ref, metadata, numbers)
        part_type = OCTET_STREAM
    body, content_type = build_multipart_related(
        [Part(frame, content_type=part_type) for frame in frames], OCTET_STREAM
    )
    return Representation(body, content_type)


def _require_syntax(ranges: Sequence[MediaType], stored: UID | None) -> None:
    """Accept a request for octet-stream frames in the stored syntax (None: uncompressed)."""
    for media in ranges:
        if media.essence in ("*/*", "multipart/*"):
            return
        if media.essence != MULTIPART_RELATED:
            continue
        root = media.param("type")
        if root is not None and not MediaType(root.lower()).matches(OCTET_STREAM):
            continue
        requested = media.param("transfer-syntax")
        if stored is None and requested in (None, "*", "1.2.840.10008.1.2.1"):
            return
        if stored is not None and requested in ("*", str(stored)):
            return
    where = f"transfer-syntax={stored}" if stored is not None else "no transfer-syntax"
    # TODO: decode or transcode frames for clients that do not accept the stored syntax.
    raise NotAcceptableError(
        f'frames are available as {MULTIPART_RELATED}; type="{OCTET_STREAM}" with {where} '
        "or transfer-syntax=*"
    )


def _native_frames(
    store: ObjectStore, ref: InstanceRef, metadata: dict[str, object], numbers: list[int]
) -> list[bytes]:
    rows = int(first_value(metadata, "00280010") or 0)
    columns = int(first_value(metadata, "00280011") or 0)
    samples = int(first_value(metadata, "00280002") or 1)
    bits = int(first_value(metadata, "00280100") or 0)
    pixel_bits = rows * columns * samples * bits
    if pixel_bits % 8:
        # TODO: frames of 1-bit data whose size is not a whole number of bytes.
        raise NotAcceptableError(f"frames of instance {ref.sop} do not start on byte boundaries")
    frame_size = pixel_bits // 8
    if ref.pixel_offset is None:
        value = _pixel_value(store, ref)
        return [value[(n - 1) * frame_size : n * frame_size] for n in numbers]
    frames = []
    for number in numbers:
        start = ref.pixel_offset + (number - 1) * frame_size
        data, _ = store.get_range(ref.object_key, start, start + frame_size)
        frames.append(data)
    return frames


def _encapsulated_frames(
    store: ObjectStore, ref: InstanceRef, numbers: list[int], count: int
) -> list[bytes]:
    frames = list(generate_frames(_pixel_value(store, ref), number_of_frames=count))
    return [frames[number - 1] for number in numbers]


def _pixel_value(store: ObjectStore, ref: InstanceRef) -> bytes:
    ds = pydicom.dcmread(BytesIO(store.get(ref.object_key)))
    value = ds.PixelData
    if not isinstance(value, bytes):
        raise NotFoundError(f"instance {ref.sop} has no Pixel Data")
    return value
