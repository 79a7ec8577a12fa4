"""docs/conformance.md against the code: routes, media types, statuses, CORS and limits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cirrus.dicomweb import app as dicomweb_app
from cirrus.dicomweb import delete, errors, frames, negotiation, rendered, stow, uploads, wado
from cirrus.dicomweb.app import DicomwebServices, build_app, cors_config
from cirrus.dicomweb.native_xml import DICOM_XML_MEDIA_TYPE
from cirrus.local.http import MAX_REQUEST_BODY
from cirrus.query.params import MAX_LIMIT

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"
_ROW = re.compile(r"^\| `(?P<method>[A-Z]+)` \| `(?P<path>[^`]+)` \|", re.MULTILINE)
_PARAMETER = re.compile(r"<(\w+)>")
# The bulk data route matches paths of any depth with a regular expression.
_BULKDATA_RULE = "<first>(?:/[^/]+)*"


@pytest.fixture(scope="module")
def text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    """Return the body of the ``## title`` section, up to the next one."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def resolver_routes() -> set[tuple[str, str]]:
    services = DicomwebServices(store=None, reader=None, qido=None, site="default")  # type: ignore[arg-type]
    app = build_app(services)
    routes = set()
    for route in [*app._static_routes, *app._dynamic_routes]:
        path = route.path.replace(_BULKDATA_RULE, "<path>")
        routes.add((route.method, _PARAMETER.sub(r"{\1}", path)))
    return routes


def test_resource_table_matches_routes(text: str) -> None:
    documented = {(m["method"], m["path"]) for m in _ROW.finditer(section(text, "Resources"))}
    routes = resolver_routes()

    assert sorted(routes - documented) == [], "routes missing from the resource table"
    assert sorted(documented - routes) == [], "documented resources without a route"


def test_media_types_listed(text: str) -> None:
    media = section(text, "Media types")
    served = {
        stow.ACCEPTED_CONTENT_TYPE,
        wado.DICOM_JSON_MEDIA_TYPE,
        DICOM_XML_MEDIA_TYPE,
        errors.JSON_CONTENT_TYPE,
        *stow.RESPONSE_MEDIA_TYPES,
        *negotiation.FRAME_MEDIA_TYPES,
        rendered.JPEG,
        rendered.PNG,
        rendered.GIF,
    }

    for media_type in sorted(served):
        assert f"`{media_type}" in media, media_type
    assert f'`multipart/related; type="{negotiation.OCTET_STREAM}"`' in media


def test_failure_reasons_listed(text: str) -> None:
    table = section(text, "STOW-RS")
    documented = {int(code, 16) for code in re.findall(r"^\| `0x([0-9A-F]{4})` \|", table, re.M)}

    assert documented == {int(reason) for reason in stow.FailureReason}


def test_error_statuses_listed(text: str) -> None:
    table = section(text, "Errors")
    documented = {int(code) for code in re.findall(r"^\| (\d{3}) \|", table, re.MULTILINE)}
    raised = {int(status) for status in errors.HTTP_STATUS.values()}

    assert raised <= documented
    assert {405, 500} <= documented


def test_cors_headers_listed(text: str) -> None:
    cors = section(text, "CORS")
    allowed_text = cors.split("Request headers allowed:", 1)[1].split("\n\n", 1)[0]
    exposed_text = cors.split("Response headers exposed:", 1)[1].split("\n\n", 1)[0]
    config = cors_config(("https://viewer.example",))
    assert config is not None

    allowed = set(re.findall(r"`([A-Za-z0-9-]+)`", allowed_text))
    exposed = set(re.findall(r"`([A-Za-z0-9-]+)`", exposed_text.split("(", 1)[0]))

    assert allowed == set(config.allow_headers)
    assert exposed == set(config.expose_headers)
    assert f"cached for {dicomweb_app.CORS_MAX_AGE_SECONDS} s" in cors


def test_limits_stated(text: str) -> None:
    limits = section(text, "Limits")

    assert f"at most {MAX_REQUEST_BODY:,} bytes" in limits
    assert f"up to {uploads.MAX_UPLOAD_BYTES // 1024**2} MiB" in limits
    assert f"at most {MAX_LIMIT:,} matches" in limits
    assert f"at most {frames.MAX_FRAMES_PER_REQUEST:,} frames" in limits
    assert f"one batch of {delete.BATCH_SIZE}" in limits
    assert f"up to {stow.MAX_REPORTED_FAILURES} failed parts" in section(text, "STOW-RS")


def test_cache_control_stated(text: str) -> None:
    caching = section(text, "Caching")

    assert f"`Cache-Control: {dicomweb_app.DEFAULT_CACHE_CONTROL}`" in caching
    assert "`X-Content-Type-Options: nosniff`" in caching
