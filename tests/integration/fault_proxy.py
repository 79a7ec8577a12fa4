"""An HTTP proxy on 127.0.0.1 in front of moto that fails or holds chosen DynamoDB requests.

Clients reach every AWS service through ``url`` as their endpoint. The proxy passes each
request on to moto unless a rule matches it: a DynamoDB request is recognised by its
``X-Amz-Target`` header (``DynamoDB_20120810.{operation}``). A failing rule returns the
error response that DynamoDB sends, so botocore's own retry logic runs on it. A holding rule
keeps one request waiting until the test releases it, which gives a test a fixed point in
the middle of a batch.
"""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final
from urllib.parse import urlsplit

DYNAMODB_TARGET: Final = "DynamoDB_20120810."
# Response headers that the proxy sets itself.
_HOP_HEADERS: Final = frozenset({"connection", "transfer-encoding", "content-length", "keep-alive"})


@dataclass
class Fault:
    """Answer matching DynamoDB requests with an error, ``times`` times or, if None, always."""

    status: int
    code: str
    operation: str | None = None
    times: int | None = None
    injected: int = 0

    def matches(self, operation: str) -> bool:
        if self.operation is not None and operation != self.operation:
            return False
        return self.times is None or self.injected < self.times

    def response_body(self) -> bytes:
        document = {
            "__type": f"com.amazonaws.dynamodb.v20120810#{self.code}",
            "message": f"fault injected by the test proxy: {self.code}",
        }
        return json.dumps(document).encode()


@dataclass
class Hold:
    """Keep the ``nth`` request of ``operation`` waiting until ``release``."""

    operation: str
    nth: int
    seen: int = 0
    reached: threading.Event = field(default_factory=threading.Event)
    # Set once a released request has had moto's answer, or was dropped.
    finished: threading.Event = field(default_factory=threading.Event)
    _released: threading.Event = field(default_factory=threading.Event)
    forward: bool = True

    def release(self, forward: bool) -> None:
        """Let the held request go on to moto, or drop it without an answer."""
        self.forward = forward
        self._released.set()

    def wait(self) -> bool:
        """Block the request's thread until released; tell whether to pass it on."""
        self.reached.set()
        self._released.wait(timeout=60)
        return self.forward


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self.faults: list[Fault] = []
        self.holds: list[Hold] = []
        # The DynamoDB operations that reached the proxy, in order.
        self.operations: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(
        self, status: int, code: str, *, operation: str | None = None, times: int | None = None
    ) -> Fault:
        fault = Fault(status, code, operation, times)
        with self._lock:
            self.faults.append(fault)
        return fault

    def hold(self, operation: str, nth: int) -> Hold:
        hold = Hold(operation, nth)
        with self._lock:
            self.holds.append(hold)
        return hold

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.holds.clear()

    def close(self) -> None:
        with self._lock:
            for hold in self.holds:
                hold.release(forward=False)
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, operation: str | None) -> Fault | Hold | None:
        if operation is None:
            return None
        with self._lock:
            self.operations.append(operation)
            for fault in self.faults:
                if fault.matches(operation):
                    fault.injected += 1
                    return fault
            for hold in self.holds:
                if hold.operation == operation:
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
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = self.headers.get("X-Amz-Target", "")
                operation = (
                    target[len(DYNAMODB_TARGET) :] if target.startswith(DYNAMODB_TARGET) else None
                )
                decision = proxy._decide(operation)
                if isinstance(decision, Fault):
                    self._reply(decision.status, decision.response_body(), decision.code)
                    return
                if isinstance(decision, Hold):
                    try:
                        if decision.wait():
                            self._forward(body)
                        else:
                            self.close_connection = True
                    finally:
                        decision.finished.set()
                    return
                self._forward(body)

            def _reply(self, status: int, body: bytes, code: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("x-amzn-ErrorType", code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body: bytes) -> None:
                connection = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                except OSError:
                    # moto closed the connection: the client sees it closed too.
                    connection.close()
                    self.close_connection = True
                    return
                try:
                    self.send_response(response.status, response.reason)
                    for name, value in response.getheaders():
                        if name.lower() not in _HOP_HEADERS:
                            self.send_header(name, value)
                    if self.command == "HEAD":
                        length = response.getheader("Content-Length") or "0"
                    else:
                        length = str(len(payload))
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                except OSError:
                    # The client is gone, killed while its request was held.
                    self.close_connection = True
                finally:
                    connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        return Handler
