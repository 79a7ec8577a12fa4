"""The viewer's files beside DICOMweb on one ``serve_http`` server, over real HTTP.

A small build folder replaces viewer/dist: index.html, hashed assets of each content
type, and a secret file and symbolic links outside or pointing outside the folder, which no
request may read. Requests go through http.client on a raw connection where the path must
reach the server as written (requests and curl remove dot segments before they send).
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cirrus.local.http import HttpServer, serve_http
from cirrus.local.sigv4 import LocalAuthentication, LocalCredential, SigV4Verifier
from cirrus.local.viewer import IMMUTABLE, NO_CACHE, ViewerSite, viewer_config

INDEX = b"<!doctype html><title>Cirrus</title><div id=app></div>"
SECRET = b"secret outside the viewer folder"
ASSETS = {
    "index-Bx1c2d3e.js": (b"export const a = 1;\n", "text/javascript; charset=utf-8"),
    "decoder-9f8e7d6c.wasm": (b"\x00asm\x01\x00\x00\x00", "application/wasm"),
    "index-4a5b6c7d.css": (b"body { margin: 0 }\n", "text/css; charset=utf-8"),
    "logo-1a2b3c4d.svg": (
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        "image/svg+xml; charset=utf-8",
    ),
    "icon-5e6f7a8b.png": (b"\x89PNG\r\n\x1a\n", "image/png"),
    "data-0c1d2e3f.json": (b'{"a": 1}', "application/json"),
    "blob-00000000.bin": (b"\x01\x02", "application/octet-stream"),
}
PATIENT_QUERY = "PatientName=Doe%5EJane&PatientID=PID-4711"
CREDENTIAL = LocalCredential(
    "AKIALOCALVIEWER00001",
    "local-viewer-secret-0123",
    "arn:aws:iam::111122223333:role/viewer-reader",
)


@dataclass
class RecordingAudit:
    """An audit log that keeps the events it is given."""

    events: list[Any] = field(default_factory=list)

    def record(self, event: Any) -> None:
        self.events.append(event)


@dataclass
class Handler:
    """A DICOMweb handler that counts its calls and returns 200."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "[]"}


@dataclass
class Server:
    http: HttpServer
    handler: Handler
    audit: RecordingAudit

    def request(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.http.port, timeout=10)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response, response.read()
        finally:
            connection.close()


def build_folder(root: Path) -> Path:
    """Write a viewer build folder under ``root`` and a secret file beside it."""
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_bytes(INDEX)
    (dist / "favicon.svg").write_bytes(b"<svg/>")
    for name, (content, _) in ASSETS.items():
        (dist / "assets" / name).write_bytes(content)
    (root / "secret.txt").write_bytes(SECRET)
    (dist / ".env").write_bytes(SECRET)
    (dist / "linked.txt").symlink_to(root / "secret.txt")
    (dist / "assets" / "linked-00000000.js").symlink_to(root / "secret.txt")
    (dist / "outside").symlink_to(root, target_is_directory=True)
    return dist


def start(folder: Path | None, *, closed: bool = False) -> Server:
    handler = Handler()
    audit = RecordingAudit()
    authentication = None
    if closed:
        verifier = SigV4Verifier({CREDENTIAL.access_key: CREDENTIAL}, "us-east-1")
        authentication = LocalAuthentication(verifier, audit)  # type: ignore[arg-type]
    config = viewer_config("/dicomweb", closed=closed, region="us-east-1")
    site = ViewerSite(folder, config, ["http://127.0.0.1:5000"])
    http_server = serve_http(handler, "127.0.0.1", 0, authentication=authentication, site=site)
    return Server(http_server, handler, audit)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_folder(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="module")
def server(dist: Path) -> Iterator[Server]:
    running = start(dist)
    yield running
    running.http.shutdown()


@pytest.fixture(scope="module")
def closed_server(dist: Path) -> Iterator[Server]:
    running = start(dist, closed=True)
    yield running
    running.http.shutdown()


# Files


def test_index_at_root(server: Server) -> None:
    response, body = server.request("/")
    assert response.status == 200
    assert body == INDEX
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert response.getheader("Cache-Control") == NO_CACHE


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_asset_content_type(server: Server, name: str) -> None:
    content, content_type = ASSETS[name]
    response, body = server.request(f"/assets/{name}")
    assert response.status == 200
    assert body == content
    assert response.getheader("Content-Type") == content_type
    assert response.getheader("Cache-Control") == IMMUTABLE
    assert response.getheader("Content-Length") == str(len(content))


def test_file_outside_assets_revalidated(server: Server) -> None:
    response, body = server.request("/favicon.svg")
    assert response.status == 200
    assert body == b"<svg/>"
    assert response.getheader("Content-Type") == "image/svg+xml; charset=utf-8"
    assert response.getheader("Cache-Control") == NO_CACHE


def test_head_has_no_body(server: Server) -> None:
    response, body = server.request("/assets/decoder-9f8e7d6c.wasm", method="HEAD")
    assert response.status == 200
    assert body == b""
    assert response.getheader("Content-Length") == "8"
    assert response.getheader("Content-Type") == "application/wasm"


@pytest.mark.parametrize("path", ["/", "/assets/index-Bx1c2d3e.js", "/config.json"])
def test_etag_not_modified(server: Server, path: str) -> None:
    first, _ = server.request(path)
    etag = first.getheader("ETag")
    assert etag

    response, body = server.request(path, headers={"If-None-Match": etag})

    assert response.status == 304
    assert body == b""
    assert response.getheader("ETag") == etag


def test_other_methods_rejected(server: Server) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        response, _ = server.request("/index.html", method=method)
        assert response.status == 405, method
        assert response.getheader("Allow") == "GET, HEAD", method


# Single-page app


@pytest.mark.parametrize("path", ["/studies/1.2.3", "/worklist", "/favicon.ico", "/dicomwebx"])
def test_unknown_path_gets_index(server: Server, path: str) -> None:
    response, body = server.request(path)
    assert response.status == 200
    assert body == INDEX
    assert response.getheader("Cache-Control") == NO_CACHE


@pytest.mark.parametrize("path", ["/assets/missing-00000000.js", "/assets/", "/assets/sub/x.js"])
def test_missing_asset_not_found(server: Server, path: str) -> None:
    response, body = server.request(path)
    assert response.status == 404
    assert INDEX not in body


# Paths that must not leave the folder


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%5csecret.txt",
        "/index.html%00.js",
        "/%00",
        "/.env",
        "/%2eenv",
        "/assets//index-Bx1c2d3e.js",
        "/./index.html",
        "/%ff%fe",
    ],
)
def test_traversal_rejected(server: Server, path: str) -> None:
    response, body = server.request(path)
    assert response.status == 400, body
    assert SECRET not in body


@pytest.mark.parametrize(
    "path", ["/linked.txt", "/assets/linked-00000000.js", "/outside/secret.txt"]
)
def test_symlink_out_of_folder_rejected(server: Server, path: str) -> None:
    response, body = server.request(path)
    assert SECRET not in body
    assert response.status in (200, 404)
    if response.status == 200:
        # Outside /assets/, a rejected file is a missing one: the single-page app's index.
        assert body == INDEX


@pytest.mark.parametrize("path", ["//etc/passwd", "/etc/passwd", "/%2Fetc%2Fpasswd"])
def test_absolute_path_stays_inside(server: Server, path: str) -> None:
    response, body = server.request(path)
    assert b"root:" not in body
    assert response.status in (200, 400)
    if response.status == 200:
        assert body == INDEX


def test_absolute_form_target_stays_inside(server: Server) -> None:
    response, body = server.request(f"http://127.0.0.1:{server.http.port}/../secret.txt")
    assert SECRET not in body
    assert response.status in (200, 400)


# Headers


@pytest.mark.parametrize("path", ["/", "/assets/index-Bx1c2d3e.js", "/config.json", "/%00"])
def test_security_headers(server: Server, path: str) -> None:
    response, _ = server.request(path)
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert response.getheader("X-Frame-Options") == "DENY"
    assert response.getheader("Referrer-Policy") == "no-referrer"
    csp = dict(
        (directive.split()[0], directive.split()[1:])
        for directive in response.getheader("Content-Security-Policy", "").split("; ")
    )
    assert csp["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert csp["worker-src"] == ["'self'", "blob:"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["connect-src"] == ["'self'", "http://127.0.0.1:5000"]
    assert csp["object-src"] == ["'none'"]


def test_dicomweb_keeps_its_headers(server: Server) -> None:
    response, body = server.request("/dicomweb/studies")
    assert response.status == 200
    assert body == b"[]"
    assert response.getheader("Content-Security-Policy") is None


# config.json


def test_config_open(server: Server) -> None:
    response, body = server.request("/config.json")
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("Cache-Control") == NO_CACHE
    assert json.loads(body) == {"dicomweb": "/dicomweb", "auth": {"mode": "none"}}


def test_config_closed(closed_server: Server) -> None:
    response, body = closed_server.request("/config.json")
    assert response.status == 200
    assert json.loads(body) == {
        "dicomweb": "/dicomweb",
        "auth": {"mode": "keys", "region": "us-east-1"},
    }


# Closed DICOMweb


def test_closed_viewer_files_unsigned(closed_server: Server) -> None:
    for path in ("/", "/assets/index-Bx1c2d3e.js", "/config.json", "/studies/1.2.3"):
        response, _ = closed_server.request(path)
        assert response.status == 200, path
    assert closed_server.audit.events == []
    assert closed_server.handler.events == []


def test_closed_dicomweb_still_signed(closed_server: Server) -> None:
    response, _ = closed_server.request("/dicomweb/studies")
    assert response.status == 403
    assert len(closed_server.audit.events) == 1
    closed_server.audit.events.clear()


# Logs


def test_no_query_or_path_logged(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for path in (f"/?{PATIENT_QUERY}", f"/assets/index-Bx1c2d3e.js?{PATIENT_QUERY}",
                 f"/studies/Doe%5EJane?{PATIENT_QUERY}", f"/assets/PID-4711.js?{PATIENT_QUERY}",
                 "/linked.txt?PatientID=PID-4711"):  # fmt: skip
        response, _ = server.request(path)
        assert response.status in (200, 404), path
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "Doe" not in logged
    assert "PID-4711" not in logged


# Not built


def test_not_built_page(tmp_path: Path) -> None:
    running = start(tmp_path / "missing")
    try:
        response, body = running.request("/")
        config, config_body = running.request("/config.json")
        asset, _ = running.request("/assets/index-Bx1c2d3e.js")
    finally:
        running.http.shutdown()
    assert response.status == 404
    assert b"npm run build" in body
    assert response.getheader("Content-Security-Policy")
    assert config.status == 200
    assert json.loads(config_body)["auth"] == {"mode": "none"}
    assert asset.status == 404


def test_without_site_only_dicomweb(tmp_path: Path) -> None:
    http_server = serve_http(Handler(), "127.0.0.1", 0)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=10)
        connection.request("GET", "/config.json")
        response = connection.getresponse()
        body = response.read()
        connection.close()
    finally:
        http_server.shutdown()
    assert response.status == 404
    assert "DICOMweb is under /dicomweb" in json.loads(body)["error"]
