"""A fault-injecting HTTP proxy on 127.0.0.1 in front of moto's S3, for the write-failure tests.

An S3 client whose endpoint is ``S3FaultProxy.endpoint_url`` reaches moto through the proxy.
A test programs a fault for the requests of chosen S3 operations: the proxy responds to them
with an S3 error (503 SlowDown, 500 InternalError) or closes the connection without a
response. botocore sees what it would see from a failing S3, so its own retries run and then
give up. Every other request is forwarded unchanged.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final
from urllib.parse import parse_qs, urlsplit

from cirrus.local.moto_process import LOOPBACK

# The status of a fault that closes the connection instead of responding.
DROP: Final = 0
_ERROR_CODES: Final = {500: "InternalError", 503: "SlowDown"}
# Headers that describe one hop and are not forwarded.
_HOP_HEADERS: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "expect"}
)


@dataclass(frozen=True)
class S3Request:
    """The S3 operation of one request, as far as the proxy needs it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    @property
    def operation(self) -> str:
        """Name the S3 operation of a write request; other requests are ``Other``."""
        if self.method == "PUT" and "partNumber" in self.query:
            return "UploadPart"
        if self.method == "PUT" and "x-amz-copy-source" not in self.headers:
            return "PutObject"
        if self.method == "POST" and "uploads" in self.query:
            return "CreateMultipartUpload"
        if self.method == "POST" and "uploadId" in self.query:
            return "CompleteMultipartUpload"
        if self.method == "DELETE" and "uploadId" in self.query:
            return "AbortMultipartUpload"
        return "Other"

    @property
    def part_number(self) -> int | None:
        values = self.query.get("partNumber")
        return int(values[0]) if values else None


FaultRule = Callable[[S3Request], bool]


def operations(*names: str) -> FaultRule:
    """Match the requests of the S3 operations ``names``."""
    return lambda request: request.operation in names


def part_numbers(*numbers: int) -> FaultRule:
    """Match the UploadPart requests of the given part numbers."""
    return lambda request: request.operation == "UploadPart" and request.part_number in numbers


class S3FaultProxy:
    """The proxy server and its fault program; use it as a context manager."""

    def __init__(self, upstream_url: str) -> None:
        upstream = urlsplit(upstream_url)
        assert upstream.hostname == LOOPBACK, "the proxy forwards only to 127.0.0.1"
        self._upstream = (upstream.hostname, upstream.port or 80)
        self._lock = threading.Lock()
        self._rule: FaultRule | None = None
        self._status = DROP
        # The operation of every request that arrived, and of every one that got a fault.
        self.requests: list[str] = []
        self.faults: list[str] = []
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def fail(self, rule: FaultRule, status: int) -> None:
        """Respond to requests that ``rule`` matches with ``status``, or drop them (DROP)."""
        with self._lock:
            self._rule, self._status = rule, status

    def heal(self) -> None:
        """Forward every request from now on."""
        with self._lock:
            self._rule = None

    def count(self, operation: str) -> int:
        with self._lock:
            return self.requests.count(operation)

    def fault_count(self, operation: str) -> int:
        with self._lock:
            return self.faults.count(operation)

    def __enter__(self) -> S3FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _fault_for(self, request: S3Request) -> int | None:
        with self._lock:
            self.requests.append(request.operation)
            if self._rule is None or not self._rule(request):
                return None
            self.faults.append(request.operation)
            return self._status

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._proxy()

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

            def _proxy(self) -> None:
                body = self._read_body()
                url = urlsplit(self.path)
                headers = {name.lower(): value for name, value in self.headers.items()}
                request = S3Request(self.command, url.path, parse_qs(url.query, True), headers)
                status = proxy._fault_for(request)
                if status == DROP:
                    self.close_connection = True
                    return
                if status is not None:
                    self._send_error(status)
                    return
                self._forward(body)

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = bytearray()
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send_error(self, status: int) -> None:
                code = _ERROR_CODES.get(status, "InternalError")
                body = (
                    f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                    f"<Message>injected by the test proxy</Message></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self, body: bytes) -> None:
                connection = http.client.HTTPConnection(*proxy._upstream, timeout=30)
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() not in _HOP_HEADERS
                }
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    content = response.read()
                finally:
                    connection.close()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_HEADERS:
                        self.send_header(name, value)
                length = response.getheader("Content-Length")
                if self.command == "HEAD" and length is not None:
                    self.send_header("Content-Length", length)
                else:
                    self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

        return Handler
