"""WADO-RS retrieve transactions (PS3.18 10.4): instances, metadata and bulk data.

Instances are sent in the transfer syntax that the Accept header selects (see
``cirrus.dicomweb.negotiation``): the stored Part 10 bytes when that is the stored syntax,
else the instance transcoded by ``cirrus.dicom.transcode``. Metadata is the DICOM JSON written
at ingest, with its relative bulk data references made absolute for the base URL of the
request. The DICOMweb app serves series and study metadata from stored bundles instead
(``cirrus.dicomweb.bundles``) and uses ``retrieve_metadata`` for single instances.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cirrus.dicom.dicomjson import absolute_bulkdata_uris, find_bulk_element
from cirrus.dicom.transcode import TranscodeError, transcode
from cirrus.dicom.uids import IMPLICIT_VR_LITTLE_ENDIAN
from cirrus.dicomweb.media import MediaType, parse_accept
from cirrus.dicomweb.multipart import (
    MULTIPART_RELATED,
    FilePart,
    Part,
    build_multipart_related,
)
from cirrus.dicomweb.negotiation import DICOM_MEDIA_TYPE as DICOM_MEDIA_TYPE
from cirrus.dicomweb.negotiation import OCTET_STREAM as OCTET_STREAM
from cirrus.dicomweb.negotiation import (
    Acceptable,
    Choice,
    acceptable_types,
    describe,
    instance_choices,
    producible_syntaxes,
)
from cirrus.errors import (
    DamagedInstanceError,
    NotAcceptableError,
    NotFoundError,
    RangeNotSatisfiableError,
)
from cirrus.index.reader import IndexReader, InstanceRef
from cirrus.storage.objects import ObjectStore

if TYPE_CHECKING:
    from pydicom.uid import UID

logger = logging.getLogger(__name__)

DICOM_JSON_MEDIA_TYPE: Final = "application/dicom+json"
PIXEL_DATA_PATH: Final = "7FE00010"
# Concurrent S3 GETs when a study or series is read. The boto3 client is thread-safe.
READ_WORKERS: Final = 8

JsonDict = dict[str, Any]
_STUDY_UID: Final = "0020000D"
_SERIES_UID: Final = "0020000E"
_SOP_UID: Final = "00080018"


@dataclass(frozen=True)
class Representation:
    """A response body with its Content-Type.

    ``content_range`` is set for a 206 response: the Content-Range value (RFC 9110 14.4) of the
    bytes sent, such as ``bytes 0-9/32768``.
    """

    body: bytes
    content_type: str
    content_range: str | None = None


def study_url(base_url: str, study: str) -> str:
    return f"{base_url}/studies/{study}"


def instance_url(base_url: str, study: str, series: str, sop: str) -> str:
    return f"{base_url}/studies/{study}/series/{series}/instances/{sop}"


@dataclass(frozen=True)
class InstancePlan:
    """The instances of a retrieve, each with the representations acceptable for it."""

    items: list[tuple[InstanceRef, list[Choice]]]

    @property
    def stored_size(self) -> int:
        """Return the total size of the stored objects, an estimate of the response size."""
        return sum(ref.size for ref, _ in self.items)

    def parts(self, store: ObjectStore) -> Iterator[Part | FilePart]:
        """Yield the part of each instance, reading a few objects ahead of the one yielded.

        Where ``store`` keeps objects as files (the local stack), an instance sent as stored
        is yielded as a ``FilePart`` of its file, which is not read here.
        """
        items = [(ref, choices, _sent_file(store, ref, choices)) for ref, choices in self.items]
        keys = iter([ref.object_key for ref, _, file in items if file is None])
        with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
            pending: deque[Future[bytes]] = deque()
            for key in islice(keys, READ_WORKERS):
                pending.append(pool.submit(store.get, key))
            for ref, choices, file in items:
                if file is not None:
                    yield FilePart(file, content_type=choices[0].part_type)
                    continue
                data = pending.popleft().result()
                next_key = next(keys, None)
                if next_key is not None:
                    pending.append(pool.submit(store.get, next_key))
                yield _instance_part(ref, data, choices)


def plan_instances(
    reader: IndexReader,
    site: str,
    study: str,
    series: str | None = None,
    sop: str | None = None,
    accept: str | None = None,
) -> InstancePlan:
    """Look up the instances of a retrieve and the representations ``accept`` allows for each.

    ``build_instances`` then returns them as one body, ``InstancePlan.parts`` one part at a
    time. Each part is in the best transfer syntax of ``accept`` that can be produced for it.
    Raises ``NotFoundError`` when nothing matches, and ``NotAcceptableError``, before any
    object is read, when the installed codecs rule out every representation of an instance.
    """
    if sop is not None:
        if series is None:
            raise ValueError("an instance is retrieved with its series")
        refs = [reader.instance(site, study, series, sop)]
    else:
        refs = reader.instances(site, study, series)
    acceptable = acceptable_types(accept, (DICOM_MEDIA_TYPE,))
    if not acceptable.types:
        raise NotAcceptableError(
            f'instances are available only as {MULTIPART_RELATED}; type="{DICOM_MEDIA_TYPE}"'
        )
    return InstancePlan([(ref, _choices_for(acceptable, ref)) for ref in refs])


def build_instances(store: ObjectStore, plan: InstancePlan) -> Representation:
    """Read the objects of ``plan`` and return them as one multipart/related body."""
    plans = plan.items
    refs = [ref for ref, _ in plans]
    bodies = _read_objects(store, [ref.object_key for ref in refs])
    parts = []
    for index, (ref, choices) in enumerate(plans):
        parts.append(_instance_part(ref, bodies[index], choices))
        bodies[index] = b""  # drop the stored bytes as soon as their part exists
    body, content_type = build_multipart_related(parts, DICOM_MEDIA_TYPE)
    return Representation(body, content_type)


def retrieve_metadata(
    reader: IndexReader,
    site: str,
    base_url: str,
    study: str,
    series: str | None = None,
    sop: str | None = None,
    accept: str | None = None,
) -> list[JsonDict]:
    """Return the DICOM JSON of each instance of a study, series or instance.

    Each BulkDataURI is the absolute bulk data URL of its instance under ``base_url``.
    """
    require_dicom_json(accept)
    if sop is not None:
        if series is None:
            raise ValueError("an instance is retrieved with its series")
        items = [reader.instance_metadata(site, study, series, sop)]
    else:
        items = reader.metadata(site, study, series)
    for item in items:
        url = instance_url(
            base_url, _uid(item, _STUDY_UID), _uid(item, _SERIES_UID), _uid(item, _SOP_UID)
        )
        absolute_bulkdata_uris(item, url)
    return items


def retrieve_bulkdata(
    store: ObjectStore,
    reader: IndexReader,
    site: str,
    ref_uids: tuple[str, str, str],
    path: str,
    accept: str | None = None,
    byte_range: str | None = None,
) -> Representation:
    """Return the value of one bulk data element as a one-part multipart/related body.

    With ``byte_range`` (the Range header, ``bytes=first-last``, ``bytes=first-`` or
    ``bytes=-suffix``), the part holds only those bytes of the value, and both the part and the
    representation carry their Content-Range. A Range header that RFC 9110 14.2 lets a server
    ignore (another unit, invalid syntax, several ranges) is ignored, so the whole value is sent.

    ``ref_uids`` are the study, series and SOP Instance UIDs, and ``path`` is the element's bulk
    data path (``7FE00010``, ``00880200/0/7FE00010``). Top-level Pixel Data is read with a
    ranged GET when its offset and length are indexed, anything else from the whole object.
    """
    if not _accepts_multipart(parse_accept(accept), OCTET_STREAM):
        raise NotAcceptableError(
            f'bulk data is available only as {MULTIPART_RELATED}; type="{OCTET_STREAM}"'
        )
    ref = reader.instance(site, *ref_uids)
    value = _bulk_value(store, ref, path)
    selected = None if byte_range is None else _byte_slice(byte_range, len(value))
    if selected is None:
        body, content_type = build_multipart_related(
            [Part(value, content_type=OCTET_STREAM)], OCTET_STREAM
        )
        return Representation(body, content_type)
    content_range = f"bytes {selected.start}-{selected.stop - 1}/{len(value)}"
    part = Part(
        value[selected], content_type=OCTET_STREAM, headers={"content-range": content_range}
    )
    body, content_type = build_multipart_related([part], OCTET_STREAM)
    return Representation(body, content_type, content_range)


def _byte_slice(header: str, size: int) -> slice | None:
    """Return the slice that one byte range (RFC 9110 14.1.2) selects from ``size`` bytes.

    Returns None for a header that RFC 9110 14.2 lets a server ignore: a unit other than
    bytes, invalid syntax, a last-pos before first-pos, or several ranges, which this server
    does not support. Raises ``RangeNotSatisfiableError`` for a valid range that selects no
    byte: a first-pos at or past the end, or a suffix length of 0.
    """
    unit, equals, spec = header.partition("=")
    if not equals or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first_valid = first == "" or _is_digits(first)
    last_valid = last == "" or _is_digits(last)
    if not dash or not first_valid or not last_valid or not (first or last):
        return None
    if not first:
        suffix = int(last)
        if suffix > 0 and size > 0:
            return slice(max(size - suffix, 0), size)
    else:
        start = int(first)
        if last and int(last) < start:
            return None
        if start < size:
            return slice(start, min(int(last) + 1, size) if last else size)
    raise RangeNotSatisfiableError(
        f"range {header!r} selects no byte of the {size}-byte value; request a range that "
        f"starts before byte {size}, or omit Range for the whole value"
    )


def _is_digits(text: str) -> bool:
    """Tell whether ``text`` is one or more ASCII digits, the DIGIT of RFC 9110 14.1.1."""
    return text.isascii() and text.isdigit()


def require_dicom_json(accept: str | None) -> None:
    """Raise ``NotAcceptableError`` unless ``accept`` allows application/dicom+json."""
    for media in parse_accept(accept):
        if media.matches(DICOM_JSON_MEDIA_TYPE) or media.matches("application/json"):
            return
    raise NotAcceptableError(f"this resource is available only as {DICOM_JSON_MEDIA_TYPE}")


def stored_syntax(ref: InstanceRef) -> UID:
    """Return the stored transfer syntax of ``ref``; Implicit VR LE when it had no file meta."""
    from pydicom.uid import UID

    return UID(ref.transfer_syntax or IMPLICIT_VR_LITTLE_ENDIAN)


def _choices_for(acceptable: Acceptable, ref: InstanceRef) -> list[Choice]:
    choices = instance_choices(acceptable, stored_syntax(ref))
    if not choices:
        raise NotAcceptableError(
            f"instance {ref.sop} is stored in transfer syntax {stored_syntax(ref)} and cannot "
            f"be sent as {describe(acceptable)}; ask for transfer-syntax=* to receive it as "
            f"stored, or for one of {', '.join(producible_syntaxes(stored_syntax(ref)))}"
        )
    return choices


def _sent_file(store: ObjectStore, ref: InstanceRef, choices: list[Choice]) -> Path | None:
    """Return the file of ``ref`` if ``store`` has one and its part is the stored bytes.

    ``_instance_part`` sends the stored bytes for the first choice when that choice is the
    stored transfer syntax, so a ``FilePart`` of the file is the same part.
    """
    if choices[0].transfer_syntax != ref.transfer_syntax:
        return None
    return store.local_file(ref.object_key)


def _instance_part(ref: InstanceRef, data: bytes, choices: list[Choice]) -> Part:
    """Return the part of the first choice that can be produced from the stored ``data``."""
    reasons = []
    damaged = False
    for choice in choices:
        # An object stored without file meta is rewritten, so every part is Part 10.
        if choice.transfer_syntax == ref.transfer_syntax:
            return Part(data, content_type=choice.part_type)
        started = time.perf_counter()
        try:
            converted = transcode(data, choice.transfer_syntax)
        except TranscodeError as exc:
            reasons.append(f"to {choice.transfer_syntax} ({exc})")
            damaged = damaged or isinstance(exc, DamagedInstanceError)
            continue
        logger.info(
            "instance transcoded",
            extra={
                "sop_instance_uid": ref.sop,
                "source_syntax": ref.transfer_syntax,
                "target_syntax": str(choice.transfer_syntax),
                "stored_bytes": len(data),
                "sent_bytes": len(converted),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return Part(converted, content_type=choice.part_type)
    message = (
        f"instance {ref.sop} could not be converted from transfer syntax "
        f"{stored_syntax(ref)} {'; nor '.join(reasons)}"
    )
    raise DamagedInstanceError(message) if damaged else NotAcceptableError(message)


def _accepts_multipart(ranges: Sequence[MediaType], root_type: str) -> bool:
    return any(
        media.essence in ("*/*", "multipart/*") or _is_multipart_of(media, root_type)
        for media in ranges
    )


def _is_multipart_of(media: MediaType, root_type: str) -> bool:
    """Tell whether ``media`` is multipart/related whose ``type`` covers ``root_type``."""
    if media.essence != MULTIPART_RELATED:
        return False
    root = media.param("type")
    return root is None or MediaType(root.lower()).matches(root_type)


def _read_objects(store: ObjectStore, keys: list[str]) -> list[bytes]:
    if len(keys) == 1:
        return [store.get(keys[0])]
    with ThreadPoolExecutor(max_workers=min(READ_WORKERS, len(keys))) as pool:
        return list(pool.map(store.get, keys))


def _bulk_value(store: ObjectStore, ref: InstanceRef, path: str) -> bytes:
    import pydicom

    offset, length = ref.pixel_offset, ref.pixel_length
    if path.strip("/").upper() == PIXEL_DATA_PATH and offset is not None and length is not None:
        if length == 0:
            return b""
        data, _ = store.get_range(ref.object_key, offset, offset + length)
        if len(data) == length:
            return data
        logger.warning(
            "ranged read of Pixel Data returned fewer bytes than indexed; reading the object",
            extra={"object_key": ref.object_key, "expected": length, "received": len(data)},
        )
    ds = pydicom.dcmread(BytesIO(store.get(ref.object_key)))
    value = find_bulk_element(ds, path).value
    if not isinstance(value, bytes):
        raise NotFoundError(f"the element at bulk data path {path!r} is not bulk data")
    return value


def _uid(metadata: JsonDict, tag: str) -> str:
    return str(metadata[tag]["Value"][0])
