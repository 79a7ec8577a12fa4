"""An HTTP/1.1 request handler with persistent connections for the local stack's moto server.

Werkzeug 3.1's development server, which moto 5.2.5 runs, sends ``Connection: close`` with
every response. Each request to moto then costs a new TCP connection, a new server thread, and
after the response a 10 ms wait in which that thread discards unread input. botocore keeps a
pool of connections that it cannot reuse. This handler keeps moto's request parsing (its
``make_environ`` preserves S3 metadata header names) and replaces Werkzeug's response writing:
it reads exactly the request body that ``Content-Length`` or chunked encoding announces,
frames every response with ``Content-Length`` and leaves the connection open for the next
request.

Applied only in the moto child process that ``cirrus.local.moto_process`` starts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.wsgi import LimitedStream

logger = logging.getLogger(__name__)

_DISCARD_CHUNK_BYTES: Final = 64 * 1024


class KeepAliveRequestHandler(MotoRequestHandler):
    """Serves many requests per connection; closes it only after an error or on request."""

    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes. With Nagle's algorithm on, the body
    # would wait for the client's delayed ACK of the headers (about 40 ms on Linux).
    disable_nagle_algorithm = True

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").strip().lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.make_environ()
        body = environ["wsgi.input"]
        if not environ.get("wsgi.input_terminated"):
            # Without chunked encoding the body is exactly Content-Length bytes (none without
            # the header), and a read past it would consume the next request.
            length = int(self.headers.get("Content-Length") or 0)
            body = LimitedStream(self.rfile, length)  # type: ignore[arg-type]
            environ["wsgi.input"] = body
        self.environ = environ
        try:
            status, headers, chunks = self._call_app(environ)
            _discard(body)
        except Exception:
            logger.exception("moto request failed", extra={"path": environ.get("PATH_INFO")})
            self.close_connection = True
            status, headers, chunks = "500 Internal Server Error", [], [b""]
        self._send(status, headers, chunks)

    def _call_app(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], list[bytes]]:
        """Run the WSGI application; return its status, headers and whole body."""
        response: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            response["status"], response["headers"] = status, headers
            return lambda data: response.setdefault("written", []).append(data)

        result: Iterable[bytes] = self.server.app(environ, start_response)
        try:
            chunks = [bytes(chunk) for chunk in result]
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return response["status"], response["headers"], response.get("written", []) + chunks

    def _send(self, status: str, headers: list[tuple[str, str]], chunks: list[bytes]) -> None:
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        body = b"".join(chunks)
        framing = {"content-length", "transfer-encoding", "connection"}
        for name, value in headers:
            if name.lower() not in framing:
                self.send_header(name, value)
        if self.command == "HEAD":
            # A HEAD response keeps the Content-Length that moto computed for the object.
            length = next((v for n, v in headers if n.lower() == "content-length"), "0")
            self.send_header("Content-Length", length)
        elif int(code) >= 200 and int(code) not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()


def _discard(body: Any) -> None:
    """Read what the application left of the request body, so the next request starts clean."""
    if isinstance(body, LimitedStream):
        body.exhaust()
        return
    while body.read(_DISCARD_CHUNK_BYTES):
        pass
