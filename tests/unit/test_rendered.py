"""Rendered-image parameters, VOI windows and viewports, on small synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from cirrus.dicomweb.display import display_pixels, fit_viewport
from cirrus.dicomweb.rendered import Viewport, Window, parse_render_options
from cirrus.errors import InvalidRequestError

GRAY = {"photometric_interpretation": "MONOCHROME2", "samples_per_pixel": 1}


def grayscale(**attributes: object) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.SamplesPerPixel = 1
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def render(values: list[float], window: Window | None, ds: Dataset | None = None) -> list[int]:
    pixels = np.array([values], dtype=np.int16)
    return display_pixels(ds or grayscale(), pixels, GRAY, window)[0].tolist()


def test_parse_full_options() -> None:
    options = parse_render_options(
        {"window": ["40,400,SIGMOID"], "viewport": ["64,32,1,2,-10,20"], "quality": ["75"]}
    )
    assert options.window == Window(40.0, 400.0, "sigmoid")
    assert options.viewport == Viewport(64, 32, 1, 2, -10, 20)
    assert options.quality == 75


def test_parse_viewport_empty_region_values() -> None:
    options = parse_render_options({"viewport": ["64,32,,,,"]})
    assert options.viewport == Viewport(64, 32)


@pytest.mark.parametrize(
    "params",
    [
        {"window": ["40"]},
        {"window": ["40,0.5"]},
        {"window": ["40,0,sigmoid"]},
        {"window": ["40,400,cubic"]},
        {"window": ["nan,400"]},
        {"window": ["40,400,linear,extra"]},
        {"viewport": ["64"]},
        {"viewport": ["64,32,1,2"]},
        {"viewport": ["0,32"]},
        {"viewport": ["64,5000"]},
        {"viewport": ["64,32,-1,0,10,10"]},
        {"viewport": ["64,32,0,0,0,10"]},
        {"viewport": ["a,b"]},
        {"quality": ["0"]},
        {"quality": ["101"]},
        {"quality": ["-5"]},
    ],
)
def test_parse_invalid_options(params: dict[str, list[str]]) -> None:
    with pytest.raises(InvalidRequestError):
        parse_render_options(params)


def test_linear_window_bounds() -> None:
    # PS3.3 C.11.2.1.2.1 with c=40, w=400: 0 up to -160, 255 above 239, the middle at 39.5.
    assert render([-160, 240, -1000, 1000], Window(40, 400, "linear")) == [0, 255, 0, 255]
    assert render([39], Window(40, 400, "linear")) == [127]


def test_linear_exact_window() -> None:
    assert render([-160, 240, 40], Window(40, 400, "linear-exact")) == [0, 255, 128]


def test_sigmoid_window() -> None:
    # 255 / (1 + exp(-4)) is 250.3; the center maps to the middle.
    assert render([40, 440, -360], Window(40, 400, "sigmoid")) == [128, 250, 5]


def test_width_one_is_threshold() -> None:
    assert render([39, 40, 41], Window(40, 1, "linear")) == [0, 255, 255]


def test_instance_window_and_rescale() -> None:
    ds = grayscale(WindowCenter=40, WindowWidth=400, RescaleSlope=2, RescaleIntercept=-100)
    # Stored 70 is 40 after the Modality LUT, the window center.
    assert render([70], None, ds) == [128]


def test_monochrome1_inverted() -> None:
    ds = grayscale(PhotometricInterpretation="MONOCHROME1")
    meta = {"photometric_interpretation": "MONOCHROME1", "samples_per_pixel": 1}
    pixels = np.array([[0, 100]], dtype=np.uint16)
    assert display_pixels(ds, pixels, meta, None)[0].tolist() == [255, 0]


def test_min_max_without_window() -> None:
    assert render([10, 20, 30], None) == [0, 128, 255]


def test_fit_keeps_aspect_ratio() -> None:
    image = Image.new("L", (100, 50))
    assert fit_viewport(image, Viewport(50, 50)).size == (50, 25)
    assert fit_viewport(image, Viewport(400, 400)).size == (400, 200)


def test_fit_region_and_flip() -> None:
    image = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4))
    region = fit_viewport(image, Viewport(2, 2, 1, 1, -2, 2))
    assert np.asarray(region).tolist() == [[6, 5], [10, 9]]
    flipped = fit_viewport(image, Viewport(4, 4, 0, 0, 4, -4))
    assert np.asarray(flipped)[0].tolist() == [12, 13, 14, 15]


def test_fit_region_outside_image() -> None:
    image = Image.new("L", (4, 4))
    with pytest.raises(InvalidRequestError):
        fit_viewport(image, Viewport(2, 2, 3, 0, 2, 2))
    with pytest.raises(InvalidRequestError):
        fit_viewport(image, Viewport(2, 2, 0, 4, None, None))
