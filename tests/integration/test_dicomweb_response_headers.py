"""Headers that every DICOMweb response carries: Cache-Control and X-Content-Type-Options."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import requests

from cirrus.config import Settings
from cirrus.dicomweb.app import with_response_headers
from cirrus.query.qido import QidoService
from tests.integration.dicomweb_stack import Stack, encode, post_instances, read, start_stack

ORIGIN = "https://viewer.example.org"
METADATA_CACHE_CONTROL = "private, no-cache"


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    running = start_stack(dataclasses.replace(settings, cors_origins=(ORIGIN,)))
    yield running
    running.server.shutdown()


def assert_not_stored(response: requests.Response) -> None:
    assert response.headers.get("Cache-Control") == "no-store"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


def test_search_not_stored(stack: Stack) -> None:
    response = requests.get(f"{stack.url}/studies", timeout=30)

    assert response.status_code in (200, 204)
    assert_not_stored(response)


def test_errors_not_stored(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = requests.get(f"{stack.url}/studies/1.2.3/metadata", timeout=30)
    assert missing.status_code == 404
    assert_not_stored(missing)

    unsupported = requests.put(f"{stack.url}/studies", timeout=30)
    assert unsupported.status_code == 405
    assert_not_stored(unsupported)

    invalid = requests.get(f"{stack.url}/studies", params={"limit": "-1"}, timeout=30)
    assert invalid.status_code == 400
    assert_not_stored(invalid)

    def broken_search(self: QidoService, **kwargs: object) -> None:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(QidoService, "search", broken_search)
    failed = requests.get(f"{stack.url}/studies", timeout=30)
    assert failed.status_code == 500
    assert_not_stored(failed)


def test_preflight_not_sniffed(stack: Stack) -> None:
    response = requests.options(
        f"{stack.url}/studies",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
        timeout=30,
    )

    assert response.status_code == 204
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


def test_metadata_revalidated(stack: Stack) -> None:
    ds = read("CT_small.dcm")
    assert post_instances(f"{stack.url}/studies", [encode(ds)]).status_code == 200
    stack.index()
    study = f"{stack.url}/studies/{ds.StudyInstanceUID}"
    instance = f"{study}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"

    for url in (f"{study}/metadata", f"{instance}/metadata"):
        first = requests.get(url, timeout=30)
        assert first.status_code == 200, url
        assert first.headers.get("Cache-Control") == METADATA_CACHE_CONTROL, url
        assert first.headers.get("X-Content-Type-Options") == "nosniff", url

        again = requests.get(url, headers={"If-None-Match": first.headers["ETag"]}, timeout=30)
        assert again.status_code == 304, url
        assert again.headers.get("Cache-Control") == METADATA_CACHE_CONTROL, url
        assert again.headers.get("X-Content-Type-Options") == "nosniff", url


def test_instance_retrieve_not_stored(stack: Stack) -> None:
    ds = read("CT_small.dcm")
    assert post_instances(f"{stack.url}/studies", [encode(ds)]).status_code == 200
    stack.index()
    url = f"{stack.url}/studies/{ds.StudyInstanceUID}"

    retrieved = requests.get(url, timeout=30)
    assert retrieved.status_code == 200
    assert_not_stored(retrieved)

    head = requests.head(url, timeout=30)
    assert head.status_code == 200
    assert_not_stored(head)


def test_route_cache_control_kept() -> None:
    result = {
        "statusCode": 200,
        "headers": {"cache-control": "private, no-cache", "x-content-type-options": "other"},
        "multiValueHeaders": {"ETag": ['"a"']},
    }

    headers = with_response_headers(result)

    names = [*headers["headers"], *headers["multiValueHeaders"]]
    assert [name for name in names if name.lower() == "cache-control"] == ["cache-control"]
    assert headers["headers"]["cache-control"] == "private, no-cache"
    assert [name for name in names if name.lower() == "x-content-type-options"] == [
        "X-Content-Type-Options"
    ]
    assert headers["multiValueHeaders"]["X-Content-Type-Options"] == ["nosniff"]
    assert headers["multiValueHeaders"]["ETag"] == ['"a"']
