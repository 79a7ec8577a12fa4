"""WADO-RS rendered and thumbnail resources (PS3.18 8.3.5 and 10.4): images for display.

One frame is decoded (see ``cirrus.dicom.transcode``), the whole instance's resource showing
its first frame. Grayscale frames pass through the Modality LUT and a VOI window: the
request's ``window`` parameter, else the instance's first Window Center and Width with its VOI
LUT Function, else the frame's minimum and maximum. MONOCHROME1 is inverted, PALETTE COLOR
goes through its palette, and YBR colour arrives as RGB. The ``viewport`` region is then cut,
flipped when its width or height is negative, and scaled to fit the viewport with its aspect
ratio kept. The result is encoded as JPEG, PNG or GIF, as the Accept header prefers. Several
frames come as multipart/related, one image a part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from io import BytesIO
from typing import TYPE_CHECKING, Final

from cirrus.dicom.transcode import require_codecs
from cirrus.dicomweb.media import parse_accept
from cirrus.dicomweb.multipart import MULTIPART_RELATED, Part, build_multipart_related
from cirrus.dicomweb.wado import Representation
from cirrus.errors import InvalidParameterError, NotAcceptableError, NotFoundError
from cirrus.index.reader import IndexReader
from cirrus.storage.objects import ObjectStore

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

JPEG: Final = "image/jpeg"
PNG: Final = "image/png"
GIF: Final = "image/gif"
IMAGE_FORMATS: Final = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF"}
DEFAULT_QUALITY: Final = 90
THUMBNAIL_SIZE: Final = 128
MAX_VIEWPORT: Final = 4096
# PS3.18 8.3.5.1.4 names the functions in lower case, VOI LUT Function (0028,1056) in upper.
WINDOW_FUNCTIONS: Final = ("linear", "linear-exact", "sigmoid")


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): center and width in output units of the Modality LUT."""

    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class Viewport:
    """The ``viewport`` parameter (PS3.18 8.3.5.1.3): output size and an optional source region.

    ``source_width`` and ``source_height`` are None for the rest of the image from
    (``source_x``, ``source_y``); negative values flip the region.
    """

    columns: int
    rows: int
    source_x: int = 0
    source_y: int = 0
    source_width: int | None = None
    source_height: int | None = None


THUMBNAIL_VIEWPORT: Final = Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)


@dataclass(frozen=True)
class RenderOptions:
    """The presentation parameters of a rendered request (PS3.18 8.3.5.1)."""

    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = DEFAULT_QUALITY


def parse_render_options(params: dict[str, list[str]]) -> RenderOptions:
    """Read ``window``, ``viewport`` and ``quality``; raise ``InvalidParameterError`` if invalid."""
    # TODO: the annotation, charset and iccprofile parameters (PS3.18 8.3.5.1) are ignored.
    window = _parse_window(params["window"][-1]) if "window" in params else None
    viewport = _parse_viewport(params["viewport"][-1]) if "viewport" in params else None
    quality = DEFAULT_QUALITY
    if "quality" in params:
        value = params["quality"][-1]
        if not value.isdigit() or not 1 <= int(value) <= 100:
            raise InvalidParameterError(
                f"quality must be an integer from 1 to 100, not {value!r}",
                parameter="quality",
                kind="not an integer from 1 to 100",
            )
        quality = int(value)
    return RenderOptions(window, viewport, quality)


def parse_thumbnail_options(params: dict[str, list[str]]) -> RenderOptions:
    """Read the parameters of a thumbnail request: as for rendered, with a 128-pixel viewport."""
    options = parse_render_options(params)
    if options.viewport is None:
        return replace(options, viewport=THUMBNAIL_VIEWPORT)
    return options


def render_instance(
    store: ObjectStore,
    reader: IndexReader,
    site: str,
    uids: tuple[str, str, str],
    frame: int,
    options: RenderOptions,
    accept: str | None,
) -> Representation:
    """Return one frame of an instance as a JPEG, PNG or GIF image, as ``accept`` prefers."""
    return render_frames(store, reader, site, uids, [frame], options, accept)


def render_frames(
    store: ObjectStore,
    reader: IndexReader,
    site: str,
    uids: tuple[str, str, str],
    numbers: Sequence[int],
    options: RenderOptions,
    accept: str | None,
) -> Representation:
    """Return rendered frames: one image for one frame, else multipart/related of images.

    Raises ``NotFoundError`` for a frame past the last one and ``NotAcceptableError`` when
    ``accept`` allows none of the image media types.
    """
    import pydicom

    media_type = _image_type(accept)
    ref = reader.instance(site, *uids)
    ds = pydicom.dcmread(BytesIO(store.get(ref.object_key)))
    if "PixelData" not in ds:
        raise NotFoundError(f"instance {ref.sop} has no Pixel Data to render")
    count = int(ds.get("NumberOfFrames") or 1)
    beyond = [number for number in numbers if number > count]
    if beyond:
        raise NotFoundError(
            f"instance {ref.sop} has {count} frames; frame {beyond[0]} is past the last"
        )
    images = [render_frame(ds, number, options, media_type) for number in numbers]
    if len(images) == 1:
        return Representation(images[0], media_type)
    parts = [Part(image, content_type=media_type) for image in images]
    body, content_type = build_multipart_related(parts, media_type)
    return Representation(body, content_type)


def _parse_window(text: str) -> Window:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 3):
        raise _invalid_window(f"window must be center,width[,function], not {text!r}", "malformed")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError as exc:
        raise _invalid_window(
            f"window center and width must be numbers, not {text!r}", "not numbers"
        ) from exc
    function = parts[2].lower().replace("_", "-") if len(parts) == 3 else "linear"
    if function not in WINDOW_FUNCTIONS:
        raise _invalid_window(
            f"window function {parts[2]!r} is unknown; use {', '.join(WINDOW_FUNCTIONS)}",
            "unknown function",
        )
    if not math.isfinite(center) or not math.isfinite(width):
        raise _invalid_window(f"window center and width must be finite, not {text!r}", "not finite")
    # PS3.3 C.11.2.1.2.1: width >= 1 for the linear function, > 0 for the others.
    if width < 1 if function == "linear" else width <= 0:
        raise _invalid_window(
            f"window width {parts[1]} is too small for {function}", "width too small"
        )
    return Window(center, width, function)


def _invalid_window(message: str, kind: str) -> InvalidParameterError:
    return InvalidParameterError(message, parameter="window", kind=kind)


def invalid_viewport(message: str, kind: str) -> InvalidParameterError:
    return InvalidParameterError(message, parameter="viewport", kind=kind)


def _parse_viewport(text: str) -> Viewport:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 6):
        raise invalid_viewport(
            f"viewport must be vw,vh or vw,vh,sx,sy,sw,sh, not {text!r}", "malformed"
        )
    try:
        values = [int(part) if part else None for part in parts]
    except ValueError as exc:
        raise invalid_viewport(
            f"viewport values must be integers, not {text!r}", "not integers"
        ) from exc
    columns, rows = values[0], values[1]
    if (
        columns is None
        or rows is None
        or not (0 < columns <= MAX_VIEWPORT and 0 < rows <= MAX_VIEWPORT)
    ):
        raise invalid_viewport(
            f"viewport width and height must be 1 to {MAX_VIEWPORT}", "size out of range"
        )
    if len(values) == 2:
        return Viewport(columns, rows)
    source_x, source_y, source_width, source_height = values[2:]
    if (source_x or 0) < 0 or (source_y or 0) < 0:
        raise invalid_viewport(
            f"viewport sx and sy must not be negative, not {text!r}", "negative source offset"
        )
    if source_width == 0 or source_height == 0:
        raise invalid_viewport(
            f"viewport sw and sh must not be 0, not {text!r}", "empty source region"
        )
    return Viewport(columns, rows, source_x or 0, source_y or 0, source_width, source_height)


def render_frame(ds: Dataset, number: int, options: RenderOptions, media_type: str) -> bytes:
    """Encode frame ``number`` of ``ds`` for display; raise ``NotAcceptableError`` if it fails.

    Raises ``CodecsUnavailable`` in a process without numpy, Pillow and the codecs.
    """
    require_codecs("rendering")
    # Imported here: the module needs numpy and Pillow, which only the pixel layer has.
    from cirrus.dicomweb.display import draw_frame

    return draw_frame(ds, number, options, media_type)


def _image_type(accept: str | None) -> str:
    """Return the image media type that ``accept`` prefers, bare or as a multipart type."""
    return image_choice(accept)[0]


def image_choice(accept: str | None) -> tuple[str, bool]:
    """Return the image media type that ``accept`` prefers and whether its range was bare.

    A range is bare when it is not multipart/related, so one image may be sent as the whole
    body. Raises ``NotAcceptableError`` when no range allows a JPEG, PNG or GIF image.
    """
    for media in parse_accept(accept):
        essence = media.essence
        bare = essence != MULTIPART_RELATED
        if not bare:
            essence = (media.param("type") or "image/*").strip().lower()
        if essence in ("*/*", "image/*", "multipart/*"):
            return JPEG, bare and essence != "multipart/*"
        if essence in IMAGE_FORMATS:
            return essence, bare
    raise NotAcceptableError(f"rendered images are available as {JPEG}, {PNG} or {GIF}")
