"""Rendered study and series resources (PS3.18 10.4): the first frame of each image instance.

Instances are read, decoded and rendered one at a time, in index order, with the same
parameters and media types as the rendered instance resource (``cirrus.dicomweb.rendered``).
An instance without Pixel Data, such as a structured report, is skipped, and so is an image
that cannot be decoded or rendered, which is logged. The response is multipart/related with
one image a part, each part's Content-Location being the instance's rendered resource. One
image requested with a bare media type (``Accept: image/png``) is sent as the whole body,
as for frames.

Rendered images are collected until their total size passes the buffered response limit.
Beyond it, ``render_group`` returns the parts rendered so far together with the iterator of
the rest, and the caller stages them to S3 part by part (``cirrus.dicomweb.delivery``). So a
large series never has more than one stored instance and the buffered images in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from itertools import chain
from typing import Final

from cirrus.dicom.transcode import CODEC_ERRORS, error_reason
from cirrus.dicomweb.multipart import Part, build_multipart_related
from cirrus.dicomweb.rendered import RenderOptions, image_choice, render_frame
from cirrus.dicomweb.wado import Representation, instance_url
from cirrus.errors import NotAcceptableError
from cirrus.index.reader import IndexReader, InstanceRef
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

# Bytes counted for the boundary and header fields of each part on top of its image, so that
# the buffered body stays within the limit. With three 64-character UIDs and a 150-character
# base URL in Content-Location, the delimiter and headers of a part take about 460 bytes.
PART_OVERHEAD: Final = 512


@dataclass(frozen=True)
class StagedRendering:
    """A rendered group too large to buffer: the parts rendered so far, then the rest."""

    parts: Iterator[Part]
    media_type: str


def render_group(
    store: ObjectStore,
    reader: IndexReader,
    site: str,
    base_url: str,
    study: str,
    series: str | None,
    options: RenderOptions,
    accept: str | None,
    limit: int,
) -> Representation | StagedRendering:
    """Render the first frame of each image instance of a study or series.

    Returns the whole body when its size stays within ``limit`` bytes, else a
    ``StagedRendering`` to be sent part by part. Raises ``NotFoundError`` for an unknown study
    or series and ``NotAcceptableError`` when ``accept`` allows no image type or no instance
    can be rendered. A ``viewport`` region outside an image raises ``InvalidRequestError``.
    """
    media_type, bare = image_choice(accept)
    refs = reader.instances(site, study, series)
    parts = _rendered_parts(store, refs, base_url, options, media_type)
    buffered: list[Part] = []
    size = 0
    for part in parts:
        buffered.append(part)
        size += len(part.body) + PART_OVERHEAD
        if size > limit:
            return StagedRendering(chain(buffered, parts), media_type)
    if not buffered:
        scope = f"series {series}" if series else f"study {study}"
        raise NotAcceptableError(f"{scope} has no image instance that can be rendered")
    if bare and len(buffered) == 1:
        return Representation(buffered[0].body, media_type)
    body, content_type = build_multipart_related(buffered, media_type)
    return Representation(body, content_type)


def _rendered_parts(
    store: ObjectStore,
    refs: list[InstanceRef],
    base_url: str,
    options: RenderOptions,
    media_type: str,
) -> Iterator[Part]:
    for ref in refs:
        image = _render_first_frame(store, ref, options, media_type)
        if image is not None:
            location = instance_url(base_url, ref.study, ref.series, ref.sop) + "/rendered"
            yield Part(image, content_type=media_type, content_location=location)


def _render_first_frame(
    store: ObjectStore, ref: InstanceRef, options: RenderOptions, media_type: str
) -> bytes | None:
    """Return the rendered first frame, or None for a non-image or unrenderable instance."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(BytesIO(store.get(ref.object_key)))
    except (InvalidDicomError, *CODEC_ERRORS) as exc:
        _log_skipped(ref, f"the stored object could not be parsed: {error_reason(exc)}")
        return None
    if "PixelData" not in ds:
        return None
    try:
        return render_frame(ds, 1, options, media_type)
    except NotAcceptableError as exc:
        _log_skipped(ref, str(exc))
        return None


def _log_skipped(ref: InstanceRef, reason: str) -> None:
    logger.info(
        "instance skipped from a rendered study or series",
        extra={"sop_instance_uid": ref.sop, "series_instance_uid": ref.series, "reason": reason},
    )
