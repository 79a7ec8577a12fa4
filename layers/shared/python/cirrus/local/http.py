"""A local stand-in for API Gateway REST: HTTP requests under /dicomweb to Lambda proxy events.

``ApiGatewayAdapter`` is a WSGI app that turns each request into the event an API Gateway REST
API with one greedy ``/{proxy+}`` resource and Lambda proxy integration sends, calls the
handler with it and turns the proxy response back into HTTP. The stage is ``dicomweb``, so
http://127.0.0.1:8080/dicomweb/studies reaches the handler as path ``/studies``. Other paths
go to the ``site`` app of ``serve_http`` (the viewer, ``cirrus.local.viewer``), or get 404
without one.

What the adapter reproduces of API Gateway:

- ``path`` keeps the percent-encoding the client sent, as API Gateway REST does.
- Query parameters are decoded once, '+' as a space and %XX escapes, as API Gateway REST does
  before it fills ``queryStringParameters`` (the last value of each name) and
  ``multiValueQueryStringParameters`` (every value in order).
- Every non-empty body is passed base64-encoded with ``isBase64Encoded`` set, as API Gateway
  does for binary media types. API Gateway sends text bodies of other types unencoded.
- A base64 response body is always decoded. API Gateway decodes it only when the request's
  Accept matches a binary media type of the API.
- ``X-Forwarded-Proto``, ``X-Forwarded-Port`` and ``X-Forwarded-For`` are set as API Gateway
  sets them, here for plain HTTP on the local port.
- The payload limits: a body over API Gateway's 10 MB, or an event over Lambda's 6 MB, gets
  413 without reaching the handler. A result over Lambda's 6 MB gets 502, as on AWS. So a
  request that works locally fits the buffered integration on AWS as well. Larger bodies
  travel through transfer objects on both (``cirrus.dicomweb.delivery``,
  ``cirrus.dicomweb.uploads``): S3 on AWS, and files served under ``/transfers/`` on the
  local stack's HTTP port (``cirrus.local.transfers``).
- Time-outs, which API Gateway has its own of: a connection that sends nothing for
  ``idle_timeout`` seconds is closed, and a request whose body has not arrived whole
  ``body_timeout`` seconds after the body started gets 408 and is closed, so that a client
  that sends a few bytes at a time cannot hold a thread. Neither emulates API Gateway,
  whose own time-outs apply on AWS.
- IAM authorization, when given a ``LocalAuthentication``: every request but a CORS
  preflight (OPTIONS, which browsers never sign) must carry a valid SigV4 signature
  (``cirrus.local.sigv4``), else it gets 403 without reaching the handler. A verified request
  gets the ``requestContext.identity`` that API Gateway gives an IAM caller: ``userArn``,
  ``accessKey``, ``accountId``, ``sourceIp`` and ``userAgent``. Without one, the adapter is
  open, and no request has a ``userArn``.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, unquote

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response as WsgiResponse

from cirrus.dicomweb.delivery import API_GATEWAY_PAYLOAD_LIMIT, LAMBDA_PAYLOAD_LIMIT, payload_size
from cirrus.dicomweb.errors import exception_fields
from cirrus.local.keep_alive import KeepAliveRequestHandler
from cirrus.local.sigv4 import (
    LocalAuthentication,
    SignatureError,
    SignedRequest,
    VerifiedCaller,
    identity_of,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger(__name__)

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]

STAGE: Final = "dicomweb"
MAX_REQUEST_BODY: Final = API_GATEWAY_PAYLOAD_LIMIT
# How often the serving thread checks for shutdown, so shutdown() waits up to this long.
SHUTDOWN_POLL_SECONDS: Final = 0.1
# Seconds a connection may stay silent, so that idle or half-open clients do not hold a
# thread each for ever (socketserver applies it to every read of the connection).
IDLE_TIMEOUT_SECONDS: Final = 60.0
# Seconds to receive a whole request body. API Gateway takes at most 10 MB, which arrives in
# this time at 90 kB/s or more.
BODY_TIMEOUT_SECONDS: Final = 120.0
# The size of each read of a request body.
_READ_SIZE: Final = 64 * 1024
_RESOURCE: Final = "/{proxy+}"
_UPLOAD_HINT: Final = "send larger STOW-RS bodies through POST /dicomweb/uploads"


@dataclass
class LocalContext:
    """The attributes of a Lambda context object that handlers and powertools read."""

    aws_request_id: str
    function_name: str = "cirrus-dicomweb-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:cirrus-dicomweb"
    log_group_name: str = "/aws/lambda/cirrus-dicomweb-local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


class ApiGatewayAdapter:
    """A WSGI app that serves ``handler`` under ``/{stage}`` as API Gateway REST would."""

    def __init__(
        self,
        handler: LambdaHandler,
        stage: str = STAGE,
        max_body: int = MAX_REQUEST_BODY,
        max_payload: int = LAMBDA_PAYLOAD_LIMIT,
        authentication: LocalAuthentication | None = None,
        body_timeout: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        self._handler = handler
        self._body_timeout = body_timeout
        self.stage = stage
        self._prefix = f"/{stage}"
        self._max_body = max_body
        self._max_payload = max_payload
        self._authentication = authentication

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = self._max_body
        response = self._respond(request)
        return response(environ, start_response)

    def _respond(self, request: Request) -> WsgiResponse:
        raw_path = raw_request_path(request.environ)
        if raw_path != self._prefix and not raw_path.startswith(f"{self._prefix}/"):
            return _json_response(
                404, f"no resource at {request.path}; DICOMweb is under /{self.stage}"
            )
        try:
            body = self._read_body(request)
        except RequestEntityTooLarge:
            return _json_response(
                413,
                f"request body exceeds the API Gateway maximum of {self._max_body} bytes; "
                f"{_UPLOAD_HINT}",
            )
        except BodyTimeoutError as exc:
            _log_incomplete_body(request, raw_path, exc.bytes_read, self._body_timeout)
            response = _json_response(
                408,
                f"request body not received within {self._body_timeout:g} s; send it again "
                "faster, or send large bodies through POST /dicomweb/uploads",
            )
            # Closes the connection after the response, because the rest of the body would
            # otherwise be read as the next request.
            response.headers["Connection"] = "close"
            return response
        except IncompleteBodyError as exc:
            # The client is usually gone, so this response is seldom delivered.
            _log_incomplete_body(request, raw_path, exc.bytes_read)
            response = _json_response(
                400,
                f"request body incomplete or malformed after {exc.bytes_read} bytes; "
                "send the whole body again",
            )
            # The connection cannot carry another request after a body that was cut short.
            response.headers["Connection"] = "close"
            return response
        path = raw_path.removeprefix(self._prefix) or "/"
        caller = None
        if self._authentication is not None and request.method != "OPTIONS":
            try:
                caller = self._authentication.verifier.verify(
                    _signed_request(request, raw_path, body)
                )
            except SignatureError as exc:
                self._authentication.record_rejection(
                    exc, request.method, path, request.remote_addr, request.user_agent.string
                )
                return _json_response(403, f"access denied: {exc}")
        event = self.to_event(request, path, body, caller)
        del body
        event_size = len(json.dumps(event))
        if event_size > self._max_payload:
            # NOTE: on AWS, Lambda rejects the invocation and API Gateway returns an
            # error of its own; which status it is was not verified, so 413 is an assumption.
            return _json_response(
                413,
                f"request event of {event_size} bytes exceeds the Lambda payload maximum of "
                f"{self._max_payload} bytes; {_UPLOAD_HINT}",
            )
        context = LocalContext(aws_request_id=event["requestContext"]["requestId"])
        try:
            result = self._handler(event, context)
        except Exception as exc:  # noqa: BLE001 (logged without its message)
            # API Gateway returns 502 when the integration fails.
            logger.error(
                "handler failed", extra={**exception_fields(exc), "method": request.method}
            )
            return _json_response(502, "Internal server error")
        result_size = payload_size(result)
        if result_size > self._max_payload:
            # Lambda fails such an invocation, and API Gateway then returns 502.
            logger.error(
                "handler result exceeds the Lambda payload maximum",
                extra={"size": result_size, "maximum": self._max_payload},
            )
            return _json_response(502, "Internal server error")
        return self.to_response(result)

    def _read_body(self, request: Request) -> bytes:
        """Read the whole request body, at most ``max_body`` bytes.

        Raises ``RequestEntityTooLarge`` for a longer body, ``BodyTimeoutError`` when the body
        is not complete after ``body_timeout`` seconds, and ``IncompleteBodyError`` when the
        connection ends or stays silent for the idle time-out before the body is complete, or
        a chunk header is malformed.
        """
        chunked = request.content_length is None and request.environ.get("wsgi.input_terminated")
        if chunked:
            # A chunked body has no length to check in advance, and werkzeug's own limit would
            # cut it short without an error. So the raw input is read one byte past the maximum.
            stream = request.environ["wsgi.input"]
        else:
            # werkzeug raises RequestEntityTooLarge here when Content-Length exceeds the maximum.
            stream = request.stream
        if not chunked and not request.content_length:
            return b""
        body = bytearray()
        deadline = _BodyDeadline(request.environ.get("werkzeug.socket"), self._body_timeout)
        try:
            self._read_chunks(stream, body)
        except IncompleteBodyError as exc:
            if deadline.expired:
                raise BodyTimeoutError(exc.bytes_read) from exc
            raise
        finally:
            deadline.cancel()
        # A body read whole is used even when the time-out ended just after its last byte.
        # Once the read side is shut, a read before the end of the body fails, so a body that
        # the time-out cut never reads as whole.
        if len(body) > self._max_body:
            raise RequestEntityTooLarge()
        return bytes(body)

    def _read_chunks(self, stream: Any, body: bytearray) -> None:
        while len(body) <= self._max_body:
            try:
                chunk = stream.read(min(_READ_SIZE, self._max_body + 1 - len(body)))
            except (ClientDisconnected, OSError) as exc:
                # werkzeug raises ClientDisconnected for a body shorter than its Content-Length,
                # and OSError for a chunked body that ends before its last chunk or has a
                # malformed chunk header.
                # NOTE: werkzeug drops the bytes of a chunked read that fails, so up to
                # _READ_SIZE bytes received are not counted in bytes_read.
                raise IncompleteBodyError(len(body)) from exc
            if not chunk:
                break
            body += chunk

    def to_event(
        self, request: Request, path: str, body: bytes, caller: VerifiedCaller | None = None
    ) -> dict[str, Any]:
        """Build the REST proxy event (payload format 1.0) of ``request`` at ``path``.

        ``caller`` is the verified signer of the request, which sets the IAM identity.
        """
        headers, multi_headers = _headers(request)
        query, multi_query = _query(request.environ)
        request_id = str(uuid.uuid4())
        proxy = unquote(path.lstrip("/"))
        identity: dict[str, Any] = {
            "sourceIp": request.remote_addr,
            "userAgent": request.user_agent.string,
        }
        if caller is not None:
            identity = identity_of(caller, request.remote_addr, request.user_agent.string)
        return {
            "resource": _RESOURCE,
            "path": path,
            "httpMethod": request.method,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "pathParameters": {"proxy": proxy} if proxy else None,
            "stageVariables": None,
            "requestContext": {
                "resourcePath": _RESOURCE,
                "httpMethod": request.method,
                "path": f"{self._prefix}{path}",
                "stage": self.stage,
                "requestId": request_id,
                "requestTimeEpoch": int(time.time() * 1000),
                "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                "domainName": request.host,
                "identity": identity,
            },
            "body": base64.b64encode(body).decode("ascii") if body else None,
            "isBase64Encoded": bool(body),
        }

    @staticmethod
    def to_response(result: dict[str, Any]) -> WsgiResponse:
        """Turn a proxy response (statusCode, headers, multiValueHeaders, body) into HTTP.

        As in API Gateway, ``headers`` and ``multiValueHeaders`` are merged, and a name in
        both takes its values from ``multiValueHeaders``.
        """
        body = result.get("body") or ""
        content = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
        response = WsgiResponse(content, status=int(result.get("statusCode", 200)))
        response.headers.clear()
        multi = result.get("multiValueHeaders") or {}
        for name, values in multi.items():
            for value in values:
                response.headers.add(name, str(value))
        lower_multi = {name.lower() for name in multi}
        for name, value in (result.get("headers") or {}).items():
            if name.lower() not in lower_multi:
                response.headers.add(name, str(value))
        return response


class IncompleteBodyError(Exception):
    """A request body cut short, timed out or malformed in its chunks after ``bytes_read`` bytes."""

    def __init__(self, bytes_read: int) -> None:
        super().__init__(f"request body incomplete after {bytes_read} bytes")
        self.bytes_read = bytes_read


class BodyTimeoutError(IncompleteBodyError):
    """A request body still incomplete when the body time-out ended."""


class _BodyDeadline:
    """The body time-out of one request, as a timer that stops reading from its socket.

    A client that sends a few bytes at a time never leaves a read waiting for the idle
    time-out, so the timer shuts the read side of the socket when the body time-out ends.
    A waiting read then returns end of stream, and the response can still be sent. werkzeug
    puts the socket in ``werkzeug.socket``; without one, only the idle time-out applies.
    """

    def __init__(self, sock: socket.socket | None, seconds: float) -> None:
        self._socket = sock
        self.expired = False
        self._timer: threading.Timer | None = None
        if sock is not None:
            self._timer = threading.Timer(seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        assert self._socket is not None  # the timer runs only with a socket
        try:
            self._socket.shutdown(socket.SHUT_RD)
        except OSError:
            # The connection has ended already.
            pass

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class StageDispatcher:
    """A WSGI app that sends the stage's paths to the adapter and every other path to ``site``.

    ``site`` receives no request under the stage, so its responses never carry DICOMweb data,
    and the adapter's authentication and audit apply to DICOMweb requests only.
    """

    def __init__(self, adapter: ApiGatewayAdapter, site: WSGIApplication) -> None:
        self._adapter = adapter
        self._site = site
        self._prefix = f"/{adapter.stage}"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = raw_request_path(environ)
        if path == self._prefix or path.startswith(f"{self._prefix}/"):
            return self._adapter(environ, start_response)
        return self._site(environ, start_response)


@dataclass
class HttpServer:
    """A running adapter server. ``shutdown`` stops it and waits for its thread."""

    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.port}/{STAGE}"

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class _RequestHandler(KeepAliveRequestHandler):
    """The keep-alive handler with Nagle's algorithm off and request lines kept out of the log."""

    # ``serve_http`` sets the time-out of each server in a subclass.
    timeout = IDLE_TIMEOUT_SECONDS

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request line carries the query string, which can hold patient names.
        logger.debug("HTTP request", extra={"method": self.command, "status": str(code)})

    def log_error(self, format: str, *args: Any) -> None:
        # http.server passes the request line in ``args`` of a malformed request ("code %d,
        # message %s"), so only the status code and the constant format are logged.
        status = args[0] if format.startswith("code ") and args else None
        logger.warning("HTTP request rejected", extra={"status": status, "detail": format})


def serve_http(
    handler: LambdaHandler,
    host: str = "127.0.0.1",
    port: int = 0,
    max_body: int = MAX_REQUEST_BODY,
    authentication: LocalAuthentication | None = None,
    idle_timeout: float = IDLE_TIMEOUT_SECONDS,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    site: WSGIApplication | None = None,
) -> HttpServer:
    """Serve ``handler`` behind the adapter on a threaded werkzeug server in a thread.

    Port 0 picks a free port, which ``.port`` returns. Bodies over ``max_body`` bytes get 413,
    as do events over Lambda's payload maximum. With ``authentication``, only SigV4-signed
    requests reach the handler. A connection silent for ``idle_timeout`` seconds is closed,
    and a body not received whole within ``body_timeout`` seconds gets 408. ``site``, such as
    the viewer's ``ViewerSite``, serves every path outside the stage, without authentication.
    """
    adapter = ApiGatewayAdapter(
        handler, max_body=max_body, authentication=authentication, body_timeout=body_timeout
    )
    app: WSGIApplication = adapter if site is None else StageDispatcher(adapter, site)
    request_handler = type("RequestHandler", (_RequestHandler,), {"timeout": idle_timeout})
    server = make_server(host, port, app, threaded=True, request_handler=request_handler)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
        name="cirrus-http",
        daemon=True,
    )
    thread.start()
    logger.info("HTTP server started", extra={"address": f"{host}:{server.server_port}"})
    return HttpServer(server, thread)


def _log_incomplete_body(
    request: Request, raw_path: str, bytes_read: int, body_timeout: float | None = None
) -> None:
    """Log one warning for a body cut short, with the path but not the query string.

    ``body_timeout`` is given when the body time-out ended it. The query string is left out
    because it can carry patient data.
    """
    if body_timeout is not None:
        message = f"request body not received within the body time-out of {body_timeout:g} s"
    elif request.content_length is None:
        message = "chunked request body incomplete or malformed"
    else:
        message = "request body incomplete: the client disconnected or timed out"
    logger.warning(
        message,
        extra={
            "method": request.method,
            "path": raw_path,
            "bytes_read": bytes_read,
            "content_length": request.content_length,
        },
    )


def _signed_request(request: Request, raw_path: str, body: bytes) -> SignedRequest:
    """Return what a SigV4 signature of ``request`` covers: path and query as sent."""
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    environ = request.environ
    query = str(environ.get("QUERY_STRING", "")).encode("latin-1").decode("utf-8", "replace")
    return SignedRequest(request.method, request.scheme, raw_path, query, headers, body)


def raw_request_path(environ: WSGIEnvironment) -> str:
    """Return the path as the client sent it, still percent-encoded."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        path = str(raw).encode("latin-1").decode("utf-8", "replace").split("?", 1)[0]
        if path.startswith("/"):
            return path
    return str(environ.get("PATH_INFO") or "/")


def _headers(request: Request) -> tuple[dict[str, str], dict[str, list[str]]]:
    headers: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers[name] = value
        multi.setdefault(name, []).append(value)
    forwarded = {
        "X-Forwarded-Proto": request.scheme,
        "X-Forwarded-Port": str(request.environ.get("SERVER_PORT", "")),
        "X-Forwarded-For": request.remote_addr or "",
    }
    for name, value in forwarded.items():
        if value and name not in headers:
            headers[name] = value
            multi[name] = [value]
    return headers, multi


def _query(environ: WSGIEnvironment) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    raw = _query_string(environ)
    pairs = parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="replace")
    if not pairs:
        return None, None
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return single, multi


def _query_string(environ: WSGIEnvironment) -> str:
    """Return the query string that the client sent, with raw bytes decoded as UTF-8.

    werkzeug's server (3.1) reads the request line as Latin-1 through http.server and then
    applies the WSGI encoding (UTF-8 bytes as Latin-1 characters) to that text. Raw non-ASCII
    bytes are thus encoded twice and are undone twice here. Percent-encoded text is ASCII and
    passes unchanged.
    """
    text = str(environ.get("QUERY_STRING", ""))
    try:
        sent = text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        # Not encoded twice, so it is the Latin-1 view of the bytes already.
        sent = text
    return sent.encode("latin-1", "replace").decode("utf-8", "replace")


def _json_response(status: int, message: str) -> WsgiResponse:
    return WsgiResponse(
        json.dumps({"error": message}), status=status, content_type="application/json"
    )
