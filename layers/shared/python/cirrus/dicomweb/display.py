"""Pixels to a displayed image: the VOI window, palettes, the viewport and the image encoding.

The rendered resources (``cirrus.dicomweb.rendered``) parse the request and call
``draw_frame``. It is a module of its own because it needs numpy and Pillow, which only a
process with the pixel codecs has. ``rendered`` imports it when a frame is drawn.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut

from cirrus.dicom.transcode import CODEC_ERRORS, error_reason, frame_array
from cirrus.dicomweb.rendered import (
    IMAGE_FORMATS,
    JPEG,
    WINDOW_FUNCTIONS,
    RenderOptions,
    Viewport,
    Window,
    invalid_viewport,
)
from cirrus.errors import NotAcceptableError


def draw_frame(ds: Dataset, number: int, options: RenderOptions, media_type: str) -> bytes:
    """Encode frame ``number`` of ``ds`` for display; raise ``NotAcceptableError`` if it fails."""
    pixels, meta = frame_array(ds, number)
    try:
        display = display_pixels(ds, pixels, meta, options.window)
    except CODEC_ERRORS as exc:
        # A Modality LUT, palette or pixel layout that pydicom cannot apply.
        raise NotAcceptableError(f"frame {number} cannot be rendered: {error_reason(exc)}") from exc
    image = Image.fromarray(display)
    if options.viewport is not None:
        image = fit_viewport(image, options.viewport)
    output = BytesIO()
    if media_type == JPEG:
        image.save(output, format="JPEG", quality=options.quality)
    else:
        image.save(output, format=IMAGE_FORMATS[media_type])
    return output.getvalue()


def display_pixels(
    ds: Dataset, pixels: np.ndarray, meta: dict[str, Any], window: Window | None
) -> np.ndarray:
    """Return 8-bit grayscale or RGB pixels for display."""
    photometric = str(meta.get("photometric_interpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        rgb: np.ndarray = apply_color_lut(pixels, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return _to_uint8(rgb.astype(np.float64) / (2**bits - 1))
    if int(meta.get("samples_per_pixel", 1)) == 3:
        if pixels.dtype == np.uint8:
            return pixels
        top = 2 ** int(meta.get("bits_stored", 16)) - 1
        return _to_uint8(pixels.astype(np.float64) / top)
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if window is None:
        window = _instance_window(ds) or _min_max(values)
    display = _apply_window(values, window)
    return 255 - display if photometric == "MONOCHROME1" else display


def fit_viewport(image: Image.Image, viewport: Viewport) -> Image.Image:
    """Cut the viewport's source region from ``image`` and scale it to fit the viewport."""
    left, top = viewport.source_x, viewport.source_y
    width = viewport.source_width if viewport.source_width is not None else image.width - left
    height = viewport.source_height if viewport.source_height is not None else image.height - top
    inside = left + abs(width) <= image.width and top + abs(height) <= image.height
    if width == 0 or height == 0 or not inside:
        raise invalid_viewport(
            f"viewport source region is outside the {image.width}x{image.height} image",
            "source region outside the image",
        )
    region = image.crop((left, top, left + abs(width), top + abs(height)))
    if width < 0:
        region = region.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if height < 0:
        region = region.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    scale = min(viewport.columns / region.width, viewport.rows / region.height)
    size = (max(1, round(region.width * scale)), max(1, round(region.height * scale)))
    return region if size == region.size else region.resize(size, Image.Resampling.LANCZOS)


def _instance_window(ds: Dataset) -> Window | None:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    function = str(ds.get("VOILUTFunction") or "LINEAR").lower().replace("_", "-")
    if function not in WINDOW_FUNCTIONS or width <= 0 or (function == "linear" and width < 1):
        return None
    return Window(center, width, function)


def _min_max(values: np.ndarray) -> Window:
    low, high = float(values.min()), float(values.max())
    return Window((low + high) / 2, max(high - low, 1.0), "linear-exact")


def _apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Map ``values`` to 0-255 with the VOI LUT function of PS3.3 C.11.2.1.2."""
    center, width = window.center, window.width
    if window.function == "sigmoid":
        return _to_uint8(1 / (1 + np.exp(-4 * (values - center) / width)))
    if window.function == "linear-exact":
        return _to_uint8((values - center) / width + 0.5)
    if width == 1:
        # The linear function with width 1 is a threshold at center - 0.5.
        return np.where(values > center - 0.5, 255, 0).astype(np.uint8)
    return _to_uint8((values - (center - 0.5)) / (width - 1) + 0.5)


def _to_uint8(fraction: np.ndarray) -> np.ndarray:
    scaled: np.ndarray = np.clip(fraction, 0.0, 1.0) * 255
    return scaled.round().astype(np.uint8)


def _first(value: Any) -> float:
    return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)
