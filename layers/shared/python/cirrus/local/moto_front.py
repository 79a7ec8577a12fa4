"""A lean HTTP/1.1 server in front of moto's DynamoDB, SQS and EventBridge backends.

moto's own server runs each request through Werkzeug's development server and Flask: a new
TCP connection and a new thread per request, then Flask's dispatch. On the local stack those
cost more of moto's CPU than the DynamoDB and SQS actions themselves, and ingest and QIDO-RS
wait for them. This server keeps each client's connection open and hands the request to the
same backends, in the same process. Both servers share the backends' state, so a client may
use either. With one client sending Query, PutItem and SendMessage in turn, moto's CPU per
request was 2.6 ms here against 3.7 ms through its own server, when this server still used
the dispatch of moto's in-process mock (``BotocoreStubber.process_request``). It now runs
the actions through ``cirrus.local.moto_dispatch``, which sets up moto's response objects
directly, and ``bench/moto_front.py`` measures the difference.

It serves requests of AWS's JSON protocol only: the services are named by the SigV4
credential scope and the action by ``X-Amz-Target``. S3 and every other service stay on
moto's own server. Applied only in the moto child process of ``cirrus.local.moto_process``.
"""

from __future__ import annotations

import email.parser
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from moto.core.common_types import TYPE_RESPONSE

from cirrus.local.moto_dispatch import dispatch, dispatch_through_moto

logger = logging.getLogger(__name__)

# The services whose clients the local stack points at this server.
FRONT_SERVICES: Final = frozenset({"dynamodb", "sqs", "events"})
# Credential=KEY/DATE/REGION/SERVICE/aws4_request in a SigV4 Authorization header.
_SCOPE: Final = re.compile(r"Credential=[^/,]+/[^/,]+/([^/,]+)/([^/,]+)/aws4_request")
# Response headers that this server sets itself.
_OWN_HEADERS: Final = frozenset({"content-length", "connection", "transfer-encoding", "date"})
# A header field "name: value" whose name has the characters that the email parser accepts.
_HEADER_FIELD: Final = re.compile(rb"([!-9;-~]+):(.*)", re.DOTALL)
# The limits of http.client, which the base class's parser applies.
_MAX_HEADER_LINE: Final = 65536
_MAX_HEADERS: Final = 100
# How long a connection closed with an unread request body waits for the client to close.
_LINGER_SECONDS: Final = 1.0
# The largest request body that the front reads. DynamoDB's BatchWriteItem takes up to 16 MB
# in one request, and SQS and EventBridge much less.
MAX_BODY_BYTES: Final = 32 * 1024 * 1024


class RequestHeaders:
    """The header fields of a request as sent, looked up by name regardless of case.

    It replaces the ``http.client.HTTPMessage`` that the standard library parses with the
    email package, for the methods this server uses: ``get``, ``in`` and ``items``.
    """

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        self._first: dict[str, str] = {}
        for name, value in fields:
            self._first.setdefault(name.lower(), value)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)


class _FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cirrus-moto-front"
    # Set by the base class's handle_one_request before it calls parse_request.
    raw_requestline: bytes

    def parse_request(self) -> bool:
        """Parse an HTTP/1.1 POST without the email package; other requests as the base does.

        The base class parses the header fields with ``email.parser``, which took 6% of this
        process's CPU under a mix of DynamoDB, SQS and EventBridge requests. Header blocks
        that the simple form below does not cover (folded lines, names with other
        characters) still go to the email parser, so the fields come out the same.
        """
        words = self.raw_requestline.split()
        if len(words) != 3 or words[0] != b"POST" or words[2] != b"HTTP/1.1":
            return bool(super().parse_request())
        self.command = "POST"
        self.request_version = "HTTP/1.1"
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.close_connection = False
        path = words[1].decode("iso-8859-1")
        # The base class reduces a leading "//" so that the path cannot read as a host name.
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path

        lines = []
        while True:
            line = self.rfile.readline(_MAX_HEADER_LINE + 1)
            if len(line) > _MAX_HEADER_LINE:
                self.send_error(431, "Line too long", "header line")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            lines.append(line)
            if len(lines) >= _MAX_HEADERS:
                self.send_error(431, "Too many headers", f"got more than {_MAX_HEADERS} headers")
                return False
        self.headers = _parse_fields(lines, self.MessageClass)  # type: ignore[assignment]

        connection = (self.headers.get("Connection") or "").lower()
        if connection == "close":
            self.close_connection = True
        expect = self.headers.get("Expect") or ""
        if expect.lower() == "100-continue":
            return bool(self.handle_expect_100())
        return True

    def setup(self) -> None:
        super().setup()
        # A response goes out in one write; without this, a client's delayed ACK of an
        # earlier segment held each response for about 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._respond(411, _error("LengthRequired", "send the body with a Content-Length"))
            self._close_after_response()
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._respond(400, _error("InvalidRequest", "Content-Length is invalid"))
            self._close_after_response()
            return
        if length > MAX_BODY_BYTES:
            message = f"the body may have at most {MAX_BODY_BYTES} bytes"
            self._respond(413, _error("RequestEntityTooLarge", message))
            self._close_after_response()
            return
        body = self.rfile.read(length) if length else b""

        scope = _SCOPE.search(self.headers.get("Authorization", ""))
        if scope is None or scope.group(2) not in FRONT_SERVICES:
            message = f"this endpoint serves {', '.join(sorted(FRONT_SERVICES))} only"
            self._respond(400, _error("InvalidEndpoint", message))
            return
        region, service = scope.group(1), scope.group(2)

        url = f"https://{service}.{region}.amazonaws.com{self.path}"
        try:
            result = self.server.dispatch(url, list(self.headers.items()), body)  # type: ignore[attr-defined]
        except Exception:
            # moto raised outside its own error responses: a bug in moto or in a patch.
            logger.exception(
                "moto front: request failed",
                extra={"service": service, "target": self.headers.get("X-Amz-Target")},
            )
            self._respond(500, _error("InternalFailure", "moto raised an exception"))
            return
        if result is None:
            self._respond(404, _error("UnknownOperationException", f"no route for {service}"))
            return
        status, response_headers, response_body = result
        self._respond(status, response_body, response_headers)

    def _close_after_response(self) -> None:
        """Close a connection whose request body is left unread, without losing the response.

        A close with unread bytes, or with bytes that arrive later, makes the kernel reset the
        connection, and the reset can discard the response before the client reads it. So the
        server ends its side first and reads until the client closes, for at most a second.
        """
        self.close_connection = True
        self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(_LINGER_SECONDS)
            while self.connection.recv(65536):
                pass
        except OSError:
            pass

    def _reject_method(self) -> None:
        # Only the JSON protocol's POST is served: an S3 GET, PUT or HEAD was sent here by
        # mistake. The connection is closed after the response, because a HEAD client reads no body.
        self.close_connection = True
        message = f"{self.command} is not served; this endpoint serves JSON-protocol POSTs only"
        self._respond(400, _error("InvalidEndpoint", message))

    do_GET = do_PUT = do_DELETE = do_HEAD = _reject_method

    def _respond(
        self, status: int, body: str | bytes, headers: dict[str, Any] | None = None
    ) -> None:
        data = body.encode() if isinstance(body, str) else bytes(body)
        self.send_response_only(status)
        for name, value in (headers or {}).items():
            if name.lower() not in _OWN_HEADERS:
                self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Date", self.date_time_string())
        # Headers and body in one write, as the comment in ``setup`` explains.
        self._headers_buffer.append(b"\r\n" + data)  # type: ignore[attr-defined]
        self.flush_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


class _FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    # Runs a request in moto: (URL, header items, body) to (status, headers, body) or None.
    dispatch: Callable[[str, list[tuple[str, str]], bytes], TYPE_RESPONSE | None]


def _parse_fields(lines: list[bytes], message_class: type[Any]) -> RequestHeaders | Any:
    """Return the header fields of ``lines``, as the base class's email parser reads them."""
    fields = []
    for line in lines:
        match = _HEADER_FIELD.match(line)
        if match is None:
            text = b"".join([*lines, b"\r\n"]).decode("iso-8859-1")
            return email.parser.Parser(_class=message_class).parsestr(text)
        value = match.group(2).lstrip(b" \t").rstrip(b"\r\n")
        fields.append((match.group(1).decode("iso-8859-1"), value.decode("iso-8859-1")))
    return RequestHeaders(fields)


def _error(code: str, message: str) -> str:
    return json.dumps({"__type": code, "message": message})


def start_front(host: str, *, through_moto: bool = False) -> tuple[ThreadingHTTPServer, int]:
    """Serve on ``host`` at a free port on a thread of its own; return the server and port.

    With ``through_moto``, every request takes moto's own dispatch instead of the direct one
    of ``cirrus.local.moto_dispatch``, which benchmarks and tests compare it with.
    """
    server = _FrontServer((host, 0), _FrontHandler)
    server.dispatch = dispatch_through_moto if through_moto else dispatch
    threading.Thread(target=server.serve_forever, name="moto-front", daemon=True).start()
    return server, int(server.server_address[1])
