"""A fault-injecting HTTP proxy on 127.0.0.1 in front of moto, for S3 and DynamoDB faults.

Clients reach every AWS service through ``FaultProxy.endpoint_url``. The proxy names the
service and operation of each request (``ProxiedRequest``) and forwards it to moto unless a
rule matches it. A fault rule responds with the error response of the request's own service
(an S3 XML error, or a DynamoDB JSON error with ``__type``), or closes the connection
without a response (``DROP``). A fault may also forward the request to moto first and
discard moto's response, as when a service acted on a request but its response was lost.
botocore gets what a failing service sends, so its own retries run. A hold rule keeps one
request waiting until the test releases it, which gives a test a fixed point in the middle
of a batch.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final
from urllib.parse import parse_qs, urlsplit

from cirrus.local.moto_process import LOOPBACK

# The status of a fault that closes the connection instead of responding.
DROP: Final = 0
DYNAMODB_TARGET: Final = "DynamoDB_20120810."
S3: Final = "s3"
DYNAMODB: Final = "dynamodb"
# The error code of a fault that names none, by service and status.
_DEFAULT_CODES: Final = {
    S3: {500: "InternalError", 503: "SlowDown"},
    DYNAMODB: {400: "ThrottlingException", 500: "InternalServerError"},
}
# Headers that describe one hop and are not forwarded.
_HOP_HEADERS: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "expect"}
)


@dataclass(frozen=True)
class ProxiedRequest:
    """The service and operation of one request, as far as the proxy needs them."""

    method: str
    path: str
    query: dict[str, list[str]]
    # Header names in lower case.
    headers: dict[str, str]

    @property
    def service(self) -> str:
        """Name the service: from ``X-Amz-Target`` for DynamoDB, else the SigV4 scope."""
        if self.headers.get("x-amz-target", "").startswith(DYNAMODB_TARGET):
            return DYNAMODB
        # Authorization: AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, ...
        authorization = self.headers.get("authorization", "")
        credential = authorization.partition("Credential=")[2].split(",")[0]
        if not credential:
            credential = self.query.get("X-Amz-Credential", [""])[0]
        scope = credential.split("/")
        return scope[3] if len(scope) == 5 else "unknown"

    @property
    def operation(self) -> str:
        """Name the operation; a request that the proxy does not recognise is ``Other``."""
        target = self.headers.get("x-amz-target")
        if target:
            return target.rpartition(".")[2]
        if self.service == S3:
            return self._s3_operation()
        return "Other"

    @property
    def part_number(self) -> int | None:
        values = self.query.get("partNumber")
        return int(values[0]) if values else None

    def _s3_operation(self) -> str:
        # Path-style addressing, which botocore uses for an IP address endpoint: /bucket/key.
        has_key = bool(self.path.lstrip("/").partition("/")[2])
        query, method = self.query, self.method

        if method == "PUT" and "partNumber" in query:
            return "UploadPartCopy" if "x-amz-copy-source" in self.headers else "UploadPart"
        if method == "POST" and "uploads" in query:
            return "CreateMultipartUpload"
        if method == "POST" and "uploadId" in query:
            return "CompleteMultipartUpload"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        if method == "DELETE" and "uploadId" in query:
            return "AbortMultipartUpload"
        if method == "GET" and "uploadId" in query:
            return "ListParts"
        if method == "GET" and "uploads" in query:
            return "ListMultipartUploads"

        # Any other subresource (?acl, ?tagging, ...) is an operation that no test fails.
        if query and set(query) - {"list-type", "prefix", "start-after", "continuation-token"}:
            return "Other"
        if has_key:
            return {
                "PUT": "CopyObject" if "x-amz-copy-source" in self.headers else "PutObject",
                "GET": "GetObject",
                "HEAD": "HeadObject",
                "DELETE": "DeleteObject",
            }.get(method, "Other")
        if method == "GET":
            return "ListObjectsV2" if "list-type" in query else "ListObjects"
        return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(
            method, "Other"
        )


RequestRule = Callable[[ProxiedRequest], bool]


def s3(*operations: str) -> RequestRule:
    """Match the S3 requests of ``operations``, or every S3 request if none is named."""
    return lambda request: (
        request.service == S3 and (not operations or request.operation in operations)
    )


def dynamodb(*operations: str) -> RequestRule:
    """Match the DynamoDB requests of ``operations``, or every DynamoDB request."""
    return lambda request: (
        request.service == DYNAMODB and (not operations or request.operation in operations)
    )


def part_numbers(*numbers: int) -> RequestRule:
    """Match the UploadPart requests of the given part numbers."""
    return lambda request: request.operation == "UploadPart" and request.part_number in numbers


@dataclass
class Fault:
    """A response of ``status`` (or DROP) to matching requests, ``times`` times or always.

    With ``forward``, moto gets each matching request first and its response is discarded.
    """

    rule: RequestRule
    status: int
    code: str | None = None
    times: int | None = None
    forward: bool = False
    injected: int = 0

    def matches(self, request: ProxiedRequest) -> bool:
        return (self.times is None or self.injected < self.times) and self.rule(request)

    def error_code(self, service: str) -> str:
        return self.code or _DEFAULT_CODES.get(service, {}).get(self.status, "InternalError")


@dataclass
class Hold:
    """A rule that keeps the ``nth`` matching request waiting until ``release``."""

    rule: RequestRule
    nth: int
    seen: int = 0
    reached: threading.Event = field(default_factory=threading.Event)
    # Set once a released request has had moto's response, or was dropped.
    finished: threading.Event = field(default_factory=threading.Event)
    _released: threading.Event = field(default_factory=threading.Event)
    forward: bool = True

    def release(self, forward: bool) -> None:
        """Let the held request go on to moto, or drop it without a response."""
        self.forward = forward
        self._released.set()

    def wait(self) -> bool:
        """Block the request's thread until released; return whether to forward it."""
        self.reached.set()
        self._released.wait(timeout=60)
        return self.forward


class FaultProxy:
    """The proxy server and its rules; it runs from construction until ``close``."""

    def __init__(self, upstream_url: str) -> None:
        upstream = urlsplit(upstream_url)
        assert upstream.hostname == LOOPBACK, "the proxy forwards only to 127.0.0.1"
        self._upstream = (LOOPBACK, upstream.port or 80)
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._holds: list[Hold] = []
        # The operation of every request that arrived, and of every one that got a fault.
        self.requests: list[str] = []
        self.faulted: list[str] = []
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def fail(
        self,
        rule: RequestRule,
        status: int,
        code: str | None = None,
        *,
        times: int | None = None,
        forward: bool = False,
    ) -> Fault:
        """Respond to requests that ``rule`` matches with ``status`` and ``code``, or DROP them.

        Without ``code`` the service's usual code for ``status`` is sent (S3: 503 SlowDown,
        500 InternalError; DynamoDB: 400 ThrottlingException, 500 InternalServerError).
        With ``forward``, moto carries out each matching request before the fault is sent.
        """
        fault = Fault(rule, status, code, times, forward)
        with self._lock:
            self._faults.append(fault)
        return fault

    def hold(self, rule: RequestRule, nth: int) -> Hold:
        """Keep the ``nth`` request that ``rule`` matches waiting until the test releases it."""
        hold = Hold(rule, nth)
        with self._lock:
            self._holds.append(hold)
        return hold

    def clear(self) -> None:
        """Remove every fault and hold, so that every request from now on is forwarded."""
        with self._lock:
            self._faults.clear()
            self._holds.clear()

    def count(self, operation: str) -> int:
        with self._lock:
            return self.requests.count(operation)

    def fault_count(self, operation: str) -> int:
        with self._lock:
            return self.faulted.count(operation)

    def close(self) -> None:
        with self._lock:
            for hold in self._holds:
                hold.release(forward=False)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _decide(self, request: ProxiedRequest) -> Fault | Hold | None:
        with self._lock:
            self.requests.append(request.operation)
            for fault in self._faults:
                if fault.matches(request):
                    fault.injected += 1
                    self.faulted.append(request.operation)
                    return fault
            for hold in self._holds:
                if hold.rule(request):
                    hold.seen += 1
                    if hold.seen == hold.nth:
                        return hold
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                body = self._read_body()
                url = urlsplit(self.path)
                headers = {name.lower(): value for name, value in self.headers.items()}
                request = ProxiedRequest(self.command, url.path, parse_qs(url.query, True), headers)
                decision = proxy._decide(request)
                if isinstance(decision, Fault):
                    if decision.forward:
                        self._forward_discarding_response(body)
                    self._send_fault(decision, request.service)
                elif isinstance(decision, Hold):
                    try:
                        if decision.wait():
                            self._forward(body)
                        else:
                            self.close_connection = True
                    finally:
                        decision.finished.set()
                else:
                    self._forward(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

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

            def _send_fault(self, fault: Fault, service: str) -> None:
                if fault.status == DROP:
                    self.close_connection = True
                    return
                code = fault.error_code(service)
                if service == DYNAMODB:
                    document = {
                        "__type": f"com.amazonaws.dynamodb.v20120810#{code}",
                        "message": f"fault injected by the test proxy: {code}",
                    }
                    body = json.dumps(document).encode()
                    content_type = "application/x-amz-json-1.0"
                else:
                    body = (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                        f"<Message>fault injected by the test proxy</Message></Error>"
                    ).encode()
                    content_type = "application/xml"
                self.send_response(fault.status)
                self.send_header("Content-Type", content_type)
                self.send_header("x-amzn-ErrorType", code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward_discarding_response(self, body: bytes) -> None:
                connection = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                try:
                    connection.request(
                        self.command, self.path, body=body, headers=self._upstream_headers(body)
                    )
                    connection.getresponse().read()
                finally:
                    connection.close()

            def _upstream_headers(self, body: bytes) -> dict[str, str]:
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() not in _HOP_HEADERS
                }
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                return headers

            def _forward(self, body: bytes) -> None:
                connection = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                headers = self._upstream_headers(body)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    content = response.read()
                except OSError:
                    # moto closed the connection, so the client sees it closed too.
                    connection.close()
                    self.close_connection = True
                    return
                try:
                    self.send_response(response.status, response.reason)
                    for name, value in response.getheaders():
                        if name.lower() not in _HOP_HEADERS:
                            self.send_header(name, value)
                    length = response.getheader("Content-Length")
                    if self.command != "HEAD" or length is None:
                        length = str(len(content))
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(content)
                except OSError:
                    # The client is gone, for example killed while its request was held.
                    self.close_connection = True
                finally:
                    connection.close()

        return Handler
