"""WADO-RS rendered and thumbnail resources (PS3.18 8.3.5 and 10.4): images for display.

A frame is decoded with pydicom, whose codecs pylibjpeg provides, and passed through the
Modality LUT and a window. The window is the request's ``window`` parameter, else the
instance's first window, else its minimum and maximum. The image is then scaled into
``viewport`` when given and encoded as JPEG or PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels.processing import apply_modality_lut

from cirrus.dicomweb.media import parse_accept
from cirrus.dicomweb.wado import Representation
from cirrus.errors import InvalidRequestError, NotAcceptableError, NotFoundError
from cirrus.index.reader import IndexReader
from cirrus.storage.objects import ObjectStore

JPEG: Final = "image/jpeg"
PNG: Final = "image/png"
DEFAULT_QUALITY: Final = 90
THUMBNAIL_VIEWPORT: Final = (128, 128)
MAX_VIEWPORT: Final = 4096


@dataclass(frozen=True)
class RenderOptions:
    """The presentation parameters of a rendered request (PS3.18 8.3.5.1)."""

    window: tuple[float, float] | None = None
    viewport: tuple[int, int] | None = None
    quality: int = DEFAULT_QUALITY


def parse_render_options(params: dict[str, list[str]]) -> RenderOptions:
    """Read ``window``, ``viewport`` and ``quality``; raise ``InvalidRequestError`` if invalid."""
    window = None
    if "window" in params:
        parts = params["window"][-1].split(",")
        function = parts[2].strip().lower() if len(parts) > 2 else "linear"
        try:
            center, width = float(parts[0]), float(parts[1])
        except (ValueError, IndexError) as exc:
            raise InvalidRequestError("window must be center,width[,function]") from exc
        if width <= 0 or function != "linear":
            # TODO: the linear-exact and sigmoid VOI LUT functions.
            raise InvalidRequestError("window needs a positive width and the linear function")
        window = (center, width)
    viewport = None
    if "viewport" in params:
        try:
            columns, rows = (int(value) for value in params["viewport"][-1].split(",")[:2])
        except ValueError as exc:
            raise InvalidRequestError("viewport must be columns,rows in pixels") from exc
        if not (0 < columns <= MAX_VIEWPORT and 0 < rows <= MAX_VIEWPORT):
            raise InvalidRequestError(f"viewport sides must be from 1 to {MAX_VIEWPORT} pixels")
        viewport = (columns, rows)
    quality = DEFAULT_QUALITY
    if "quality" in params:
        value = params["quality"][-1]
        if not value.isdigit() or not 1 <= int(value) <= 100:
            raise InvalidRequestError(f"quality must be an integer from 1 to 100, not {value!r}")
        quality = int(value)
    return RenderOptions(window, viewport, quality)


def render_instance(
    store: ObjectStore,
    reader: IndexReader,
    site: str,
    uids: tuple[str, str, str],
    frame: int,
    options: RenderOptions,
    accept: str | None,
) -> Representation:
    """Return one frame of an instance as a JPEG or PNG image, as ``accept`` prefers."""
    media_type = _image_type(accept)
    ref = reader.instance(site, *uids)
    ds = pydicom.dcmread(BytesIO(store.get(ref.object_key)))
    if "PixelData" not in ds:
        raise NotFoundError(f"instance {ref.sop} has no Pixel Data to render")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frame > frames:
        raise NotFoundError(
            f"instance {ref.sop} has {frames} frames; frame {frame} is past the last"
        )
    pixels = ds.pixel_array if frames == 1 else ds.pixel_array[frame - 1]
    image = Image.fromarray(_display_pixels(ds, pixels, options.window))
    if options.viewport is not None:
        image.thumbnail(options.viewport)
    output = BytesIO()
    if media_type == PNG:
        image.save(output, format="PNG")
    else:
        image.save(output, format="JPEG", quality=options.quality)
    return Representation(output.getvalue(), media_type)


def _image_type(accept: str | None) -> str:
    for media in parse_accept(accept):
        if media.essence in ("*/*", "image/*", JPEG):
            return JPEG
        if media.essence == PNG:
            return PNG
    raise NotAcceptableError(f"rendered images are available as {JPEG} or {PNG}")


def _display_pixels(ds: Any, pixels: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Return 8-bit grayscale or RGB pixels for display."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        # pydicom 3 returns YBR color pixels converted to RGB.
        return _to_uint8(pixels.astype(np.float64), None)
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        window = (_first(ds.WindowCenter), _first(ds.WindowWidth))
    display = _to_uint8(values, window)
    return 255 - display if photometric == "MONOCHROME1" else display


def _to_uint8(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    if window is None:
        low, high = float(values.min()), float(values.max())
    else:
        # The linear function of PS3.3 C.11.2.1.2.1, without its half-pixel offsets.
        center, width = window
        low, high = center - width / 2, center + width / 2
    span = high - low if high > low else 1.0
    return (np.clip((values - low) / span, 0.0, 1.0) * 255).round().astype(np.uint8)


def _first(value: Any) -> float:
    return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)
