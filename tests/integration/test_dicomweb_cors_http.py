"""CORS over HTTP: the preflight, and CORS headers on success and on every kind of error."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import requests

from cirrus.config import Settings
from cirrus.dicomweb.app import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS
from cirrus.query.qido import QidoService
from tests.integration.dicomweb_stack import (
    STOW_TYPE,
    Stack,
    encode,
    post_instances,
    read,
    start_stack,
)

ORIGIN = "https://viewer.example.org"


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    running = start_stack(dataclasses.replace(settings, cors_origins=(ORIGIN,)))
    yield running
    running.server.shutdown()


def header_list(response: requests.Response, name: str) -> set[str]:
    return {value.strip().lower() for value in response.headers.get(name, "").split(",") if value}


def assert_cors(response: requests.Response) -> None:
    assert response.headers.get("Access-Control-Allow-Origin") == ORIGIN
    exposed = header_list(response, "Access-Control-Expose-Headers")
    for name in ("etag", "content-range", "warning", "location"):
        assert name in exposed, name


def test_preflight_lists_methods_and_headers(stack: Stack) -> None:
    response = requests.options(
        f"{stack.url}/studies/1.2.3/series/4.5.6",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "authorization,if-none-match,range",
        },
        timeout=30,
    )

    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    methods = header_list(response, "Access-Control-Allow-Methods")
    assert {"get", "post", "delete", "options"} <= methods
    allowed = header_list(response, "Access-Control-Allow-Headers")
    for name in ("accept", "authorization", "content-type", "if-none-match", "range"):
        assert name in allowed, name
    assert {name.lower() for name in CORS_ALLOW_HEADERS} <= allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0


def test_preflight_other_origin(stack: Stack) -> None:
    response = requests.options(
        f"{stack.url}/studies",
        headers={"Origin": "https://other.example", "Access-Control-Request-Method": "GET"},
        timeout=30,
    )

    assert "Access-Control-Allow-Origin" not in response.headers


def test_success_exposes_etag(stack: Stack) -> None:
    ds = read("CT_small.dcm")
    assert post_instances(f"{stack.url}/studies", [encode(ds)]).status_code == 200
    stack.index()

    response = requests.get(
        f"{stack.url}/studies/{ds.StudyInstanceUID}/metadata",
        headers={"Origin": ORIGIN},
        timeout=30,
    )

    assert response.status_code == 200
    assert response.headers["ETag"]
    assert_cors(response)
    assert {name.lower() for name in CORS_EXPOSE_HEADERS} <= header_list(
        response, "Access-Control-Expose-Headers"
    )


def test_errors_carry_cors(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_search(self: QidoService, **kwargs: object) -> None:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(QidoService, "search", broken_search)
    origin = {"Origin": ORIGIN}
    cases = [
        (400, "POST", "/studies", {"Content-Type": STOW_TYPE}),
        (404, "GET", "/studies/1.2.3/metadata", {}),
        (405, "PUT", "/studies", {}),
        (406, "GET", "/studies/1.2.3/metadata", {"Accept": "application/dicom+xml"}),
        (415, "POST", "/studies", {"Content-Type": "application/dicom"}),
        (500, "GET", "/studies", {}),
    ]

    for status, method, path, headers in cases:
        response = requests.request(
            method, f"{stack.url}{path}", headers={**origin, **headers}, data=b"x", timeout=30
        )
        assert response.status_code == status, (method, path, response.text)
        assert_cors(response)
