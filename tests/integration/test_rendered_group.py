"""Rendered study and series resources over HTTP, on pydicom's bundled files and moto.

Each image part is compared with the rendered instance resource of the same instance, which
the tests of ``cirrus.dicomweb.rendered`` check against pydicom's decode.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from io import BytesIO

import pydicom
import pytest
import requests
from PIL import Image
from pydicom.uid import generate_uid

from cirrus.config import Settings
from cirrus.dicomweb import app as dicomweb_app
from cirrus.dicomweb.multipart import Part, parse_multipart_related
from cirrus.local.http import serve_http
from functions.dicomweb.handler import dicomweb_services, handle
from tests.integration.dicomweb_stack import Stack, encode, post_instances, read, running_stack

PNG_PARTS = 'multipart/related; type="image/png"'


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


@dataclasses.dataclass
class Study:
    uid: str
    # Series UID to the datasets stored in it, in the order of their SOP Instance UIDs.
    series: dict[str, list[pydicom.Dataset]]


def store_study(stack: Stack, layout: dict[str, list[str]]) -> Study:
    """Store bundled files as one new study, each list of names as one new series."""
    study = Study(generate_uid(), {})
    for names in layout.values():
        series_uid = generate_uid()
        datasets = []
        for name in names:
            ds = read(name)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study.uid, series_uid
            ds.SOPInstanceUID = generate_uid()
            datasets.append(ds)
        datasets.sort(key=lambda ds: str(ds.SOPInstanceUID))
        study.series[series_uid] = datasets
        response = post_instances(f"{stack.url}/studies", [encode(ds) for ds in datasets])
        assert response.status_code == 200, response.text
    stack.index()
    return study


def instance_rendered(stack: Stack, ds: pydicom.Dataset) -> str:
    return (
        f"{stack.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/rendered"
    )


def rendered_parts(response: requests.Response) -> list[Part]:
    assert response.status_code == 200, response.text
    content_type = response.headers["Content-Type"]
    assert content_type.startswith("multipart/related")
    assert 'type="image/png"' in content_type or "type=image/png" in content_type
    return parse_multipart_related(content_type, response.content).parts


def expected_image(stack: Stack, ds: pydicom.Dataset, query: str = "") -> bytes:
    response = requests.get(
        instance_rendered(stack, ds) + query, headers={"Accept": "image/png"}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.content


def test_series_parts_match_instances(stack: Stack) -> None:
    study = store_study(stack, {"images": ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"]})
    ((series, datasets),) = study.series.items()
    images = [ds for ds in datasets if "PixelData" in ds]
    url = f"{stack.url}/studies/{study.uid}/series/{series}/rendered"

    parts = rendered_parts(requests.get(url, headers={"Accept": PNG_PARTS}, timeout=60))

    assert len(parts) == len(images) == 2
    for part, ds in zip(parts, images, strict=True):
        assert part.content_type == "image/png"
        assert part.content_location == instance_rendered(stack, ds)
        assert Image.open(BytesIO(part.body)).size == (ds.Columns, ds.Rows)
        assert part.body == expected_image(stack, ds)


def test_study_spans_series(stack: Stack) -> None:
    study = store_study(stack, {"ct": ["CT_small.dcm"], "mr": ["MR_small.dcm", "MR_small_RLE.dcm"]})
    url = f"{stack.url}/studies/{study.uid}/rendered"

    parts = rendered_parts(requests.get(url, headers={"Accept": PNG_PARTS}, timeout=60))

    locations = sorted(part.content_location or "" for part in parts)
    expected = sorted(
        instance_rendered(stack, ds) for datasets in study.series.values() for ds in datasets
    )
    assert locations == expected


def test_series_takes_render_parameters(stack: Stack) -> None:
    study = store_study(stack, {"images": ["CT_small.dcm", "MR_small.dcm"]})
    ((series, datasets),) = study.series.items()
    query = "?viewport=32,32&window=100,400"
    url = f"{stack.url}/studies/{study.uid}/series/{series}/rendered{query}"

    parts = rendered_parts(requests.get(url, headers={"Accept": PNG_PARTS}, timeout=60))

    assert [part.body for part in parts] == [expected_image(stack, ds, query) for ds in datasets]
    assert all(Image.open(BytesIO(part.body)).size == (32, 32) for part in parts)


def test_default_media_type_is_jpeg(stack: Stack) -> None:
    study = store_study(stack, {"images": ["CT_small.dcm", "MR_small.dcm"]})
    ((series, _),) = study.series.items()
    url = f"{stack.url}/studies/{study.uid}/series/{series}/rendered"

    response = requests.get(url, timeout=60)

    assert response.status_code == 200, response.text
    parts = parse_multipart_related(response.headers["Content-Type"], response.content).parts
    assert [part.content_type for part in parts] == ["image/jpeg", "image/jpeg"]
    assert all(Image.open(BytesIO(part.body)).format == "JPEG" for part in parts)


def test_bare_type_one_image_single_part(stack: Stack) -> None:
    study = store_study(stack, {"images": ["CT_small.dcm", "rtplan.dcm"]})
    ((series, datasets),) = study.series.items()
    (ct,) = [ds for ds in datasets if "PixelData" in ds]
    url = f"{stack.url}/studies/{study.uid}/series/{series}/rendered"

    response = requests.get(url, headers={"Accept": "image/png"}, timeout=60)

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    assert response.content == expected_image(stack, ct)


def test_bare_type_two_images_multipart(stack: Stack) -> None:
    study = store_study(stack, {"images": ["CT_small.dcm", "MR_small.dcm"]})
    url = f"{stack.url}/studies/{study.uid}/rendered"

    parts = rendered_parts(requests.get(url, headers={"Accept": "image/png"}, timeout=60))

    assert len(parts) == 2


def test_unknown_study_and_series(stack: Stack) -> None:
    study = store_study(stack, {"images": ["CT_small.dcm"]})
    urls = [
        f"{stack.url}/studies/{generate_uid()}/rendered",
        f"{stack.url}/studies/{study.uid}/series/{generate_uid()}/rendered",
    ]

    for url in urls:
        response = requests.get(url, headers={"Accept": PNG_PARTS}, timeout=60)
        assert response.status_code == 404, url
        assert "not found" in response.json()["error"]


def test_no_image_instance_not_acceptable(stack: Stack) -> None:
    study = store_study(stack, {"plans": ["rtplan.dcm"]})
    ((series, _),) = study.series.items()
    url = f"{stack.url}/studies/{study.uid}/series/{series}/rendered"

    response = requests.get(url, headers={"Accept": PNG_PARTS}, timeout=60)

    assert response.status_code == 406
    assert "no image instance that can be rendered" in response.json()["error"]


def test_other_media_type_not_acceptable(stack: Stack) -> None:
    study = store_study(stack, {"images": ["CT_small.dcm"]})
    url = f"{stack.url}/studies/{study.uid}/rendered"

    response = requests.get(url, headers={"Accept": "application/pdf"}, timeout=60)

    assert response.status_code == 406
    assert "image/png" in response.json()["error"]


def test_invalid_parameter_rejected(stack: Stack) -> None:
    study = store_study(stack, {"images": ["CT_small.dcm"]})
    url = f"{stack.url}/studies/{study.uid}/rendered?quality=0"

    response = requests.get(url, timeout=60)

    assert response.status_code == 400
    assert "quality" in response.json()["error"]


def test_over_limit_redirects(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    study = store_study(stack, {"images": ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm"]})
    datasets = [ds for series in study.series.values() for ds in series]
    expected = {instance_rendered(stack, ds): expected_image(stack, ds) for ds in datasets}
    # Smaller than two of the PNG images, so rendering passes the limit before the last one.
    monkeypatch.setattr(dicomweb_app, "MAX_BUFFERED_BODY", 1000)
    url = f"{stack.url}/studies/{study.uid}/rendered"

    response = requests.get(url, headers={"Accept": PNG_PARTS}, allow_redirects=False, timeout=60)

    assert response.status_code == 303, response.text
    location = response.headers["Location"]
    assert location.startswith("http://127.0.0.1:")
    staged = requests.get(location, timeout=60)
    parts = rendered_parts(staged)
    assert {part.content_location: part.body for part in parts} == expected


def test_over_limit_without_transfers(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    study = store_study(stack, {"images": ["CT_small.dcm", "MR_small.dcm"]})
    monkeypatch.setattr(dicomweb_app, "MAX_BUFFERED_BODY", 1000)
    view = dataclasses.replace(dicomweb_services(stack.services), transfers=None)
    server = serve_http(functools.partial(handle, services=view), "127.0.0.1", 0)
    try:
        response = requests.get(
            f"http://127.0.0.1:{server.port}/dicomweb/studies/{study.uid}/rendered",
            headers={"Accept": PNG_PARTS},
            timeout=60,
        )
    finally:
        server.shutdown()

    assert response.status_code == 413
    assert "1000-byte limit" in response.json()["error"]
