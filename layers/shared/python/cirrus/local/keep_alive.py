"""A werkzeug request handler that keeps HTTP/1.1 connections open after requests without a body.

werkzeug's development server (3.1) sends ``Connection: close`` with every response and then
waits up to 10 ms for more input to discard. A client that keeps its connection alive, as
browsers, requests sessions and dicomweb-client do, therefore opens a new TCP connection for
each request, and the server starts a new thread for it. ``KeepAliveRequestHandler`` serves a
request without a body itself and leaves the connection open when the response has a
``Content-Length`` or no body at all. Then the next request line is the next thing on the
connection. Every request with a body (``Content-Length`` above 0, ``Transfer-Encoding`` or
``Expect``) goes through werkzeug's own ``run_wsgi``. That path reads and discards what the
application left unread, and closes the connection as before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

from werkzeug.serving import WSGIRequestHandler

from cirrus.dicomweb.errors import exception_fields

logger = logging.getLogger(__name__)

# Statuses whose responses never have a body (RFC 9110, 6.4.1).
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_ERROR_BODY: Final = b'{"error": "Internal server error"}'
# The errors of a write to a client that has gone (socket.timeout is TimeoutError).
_DROPPED_ERRORS: Final = (ConnectionError, TimeoutError)


class KeepAliveRequestHandler(WSGIRequestHandler):
    """werkzeug's handler, with connections kept open after requests without a body."""

    def run_wsgi(self) -> None:
        if _has_body(self.headers):
            super().run_wsgi()
            return
        self._run_without_body()

    def _run_without_body(self) -> None:
        self.environ = environ = self.make_environ()
        self._head = environ["REQUEST_METHOD"] == "HEAD"
        # http.server set close_connection from the request's Connection header and version.
        self._keep_alive = not self.close_connection and self.request_version == "HTTP/1.1"
        self._started: tuple[int, str, list[tuple[str, str]]] | None = None
        self._headers_sent = False
        self._body_allowed = False
        self._expected_length: int | None = None
        self._written = 0

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):  # type: ignore[no-untyped-def]
            if exc_info and self._headers_sent:
                raise exc_info[1].with_traceback(exc_info[2])
            code, _, reason = status.partition(" ")
            self._started = (int(code), reason, headers)
            return self._write

        body: Iterable[bytes] = ()
        try:
            body = self.server.app(environ, start_response)
            for chunk in body:
                self._write(chunk)
            if not self._headers_sent:
                self._send_headers()
        except _DROPPED_ERRORS as exc:
            self.close_connection = True
            self.connection_dropped(exc, environ)
            return
        except Exception as exc:  # noqa: BLE001 (logged without its message)
            # The message can contain query values, which can be patient data.
            logger.error(
                "WSGI application failed", extra={**exception_fields(exc), "method": self.command}
            )
            self.close_connection = True
            if not self._headers_sent:
                self._send_error()
            return
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if self._expected_length is not None and self._written != self._expected_length:
            # The client would wait for bytes that never come, or read extra ones as the
            # next response.
            self.close_connection = True
        self.wfile.flush()

    def _send_headers(self) -> None:
        if self._started is None:
            raise RuntimeError("the WSGI application returned before calling start_response")
        code, reason, headers = self._started
        self.send_response(code, reason)
        length = None
        for name, value in headers:
            lower = name.lower()
            if lower == "connection":
                # Whether the connection stays open follows from the response's framing below.
                continue
            if lower == "content-length" and value.strip().isdigit():
                length = int(value)
            self.send_header(name, value)
        self._body_allowed = (
            not self._head and code not in _NO_BODY_STATUSES and not 100 <= code < 200
        )
        self._expected_length = length if self._body_allowed else None
        if self._keep_alive and (length is not None or not self._body_allowed):
            self.close_connection = False
        else:
            # Without a length, the end of the body is the end of the connection.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self._headers_sent = True

    def _write(self, data: bytes) -> None:
        """Write ``data`` of the response body, after the status line and headers."""
        if not self._headers_sent:
            self._send_headers()
        if data and self._body_allowed:
            self.wfile.write(data)
            self._written += len(data)

    def _send_error(self) -> None:
        self.send_response(500, "Internal Server Error")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(_ERROR_BODY)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(_ERROR_BODY)
        self.wfile.flush()


def _has_body(headers: object) -> bool:
    """Return whether a request with these headers has a body or announces one (``Expect``)."""
    get = headers.get  # type: ignore[attr-defined]
    if get("Transfer-Encoding") is not None or get("Expect") is not None:
        return True
    length = get("Content-Length")
    return length is not None and length.strip() != "0"
