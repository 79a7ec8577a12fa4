"""The local API Gateway adapter: the proxy events it builds and the responses it returns.

A recording handler replaces the Lambda, except in the last tests, which call the real
``lambda_handler`` with settings on moto.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from cirrus.config import Settings
from cirrus.local.http import HttpServer, LocalContext, serve_http
from functions.dicomweb import handler as dicomweb_handler


@dataclass
class RecordingHandler:
    """Records each event and returns the configured proxy response."""

    response: dict[str, Any] = field(
        default_factory=lambda: {"statusCode": 200, "body": "ok", "isBase64Encoded": False}
    )
    error: Exception | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        if self.error is not None:
            raise self.error
        return self.response


@dataclass
class Adapter:
    server: HttpServer
    handler: RecordingHandler

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def raw_get(self, target: str) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        connection.request("GET", target)
        response = connection.getresponse()
        response.read()
        connection.close()
        return response


@pytest.fixture
def adapter() -> Iterator[Adapter]:
    handler = RecordingHandler()
    server = serve_http(handler, "127.0.0.1", 0, max_body=1024)
    yield Adapter(server, handler)
    server.shutdown()


# Events


def test_event_of_post(adapter: Adapter) -> None:
    body = bytes(range(256))

    response = requests.post(
        f"{adapter.url}/dicomweb/studies?x=1",
        data=body,
        headers={"Content-Type": "multipart/related; boundary=b", "X-Custom": "v"},
    )

    assert response.status_code == 200
    (event,) = adapter.handler.events
    assert event["httpMethod"] == "POST"
    assert event["path"] == "/studies"
    assert event["resource"] == "/{proxy+}"
    assert event["pathParameters"] == {"proxy": "studies"}
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body
    headers = event["headers"]
    assert headers["Content-Type"] == "multipart/related; boundary=b"
    assert headers["X-Custom"] == "v"
    assert headers["Host"] == f"127.0.0.1:{adapter.server.port}"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Port"] == str(adapter.server.port)
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert event["multiValueHeaders"]["X-Custom"] == ["v"]
    assert event["queryStringParameters"] == {"x": "1"}
    assert event["multiValueQueryStringParameters"] == {"x": ["1"]}
    context = event["requestContext"]
    assert context["stage"] == "dicomweb"
    assert context["path"] == "/dicomweb/studies"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["requestId"]


def test_event_without_body_or_query(adapter: Adapter) -> None:
    requests.get(f"{adapter.url}/dicomweb")

    (event,) = adapter.handler.events
    assert event["path"] == "/"
    assert event["pathParameters"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None


def test_event_path_keeps_encoding(adapter: Adapter) -> None:
    adapter.raw_get("/dicomweb/studies/1.2%2E3/series?PatientName=Doe%5EJ+x&PatientName=%2A")

    (event,) = adapter.handler.events
    assert event["path"] == "/studies/1.2%2E3/series"
    assert event["pathParameters"] == {"proxy": "studies/1.2.3/series"}
    assert event["queryStringParameters"] == {"PatientName": "*"}
    assert event["multiValueQueryStringParameters"] == {"PatientName": ["Doe^J x", "*"]}


def test_event_chunked_body(adapter: Adapter) -> None:
    chunks = [b"first chunk ", b"second chunk"]

    response = requests.post(f"{adapter.url}/dicomweb/studies", data=iter(chunks))

    assert response.status_code == 200
    (event,) = adapter.handler.events
    assert base64.b64decode(event["body"]) == b"".join(chunks)


def test_paths_outside_stage(adapter: Adapter) -> None:
    for path in ("/", "/studies", "/dicomwebx/studies", "/viewer/index.html"):
        response = requests.get(f"{adapter.url}{path}")
        assert response.status_code == 404, path
        assert "DICOMweb is under /dicomweb" in response.json()["error"], path
    assert adapter.handler.events == []


def test_body_over_limit(adapter: Adapter) -> None:
    response = requests.post(f"{adapter.url}/dicomweb/studies", data=b"x" * 1025)

    assert response.status_code == 413
    assert response.json() == {
        "error": "request body exceeds the API Gateway maximum of 1024 bytes; send larger "
        "STOW-RS bodies through POST /dicomweb/uploads"
    }
    assert adapter.handler.events == []


def test_event_over_lambda_limit() -> None:
    handler = RecordingHandler()
    server = serve_http(handler, "127.0.0.1", 0)
    # 4.8 MB is under API Gateway's 10 MB, but base64 makes the event larger than 6 MB.
    body = b"x" * 4_800_000
    try:
        response = requests.post(f"http://127.0.0.1:{server.port}/dicomweb/studies", data=body)
    finally:
        server.shutdown()

    assert response.status_code == 413
    assert "exceeds the Lambda payload maximum of 6000000 bytes" in response.json()["error"]
    assert handler.events == []


def test_result_over_lambda_limit(adapter: Adapter) -> None:
    adapter.handler.response = {"statusCode": 200, "body": "x" * 6_300_000}

    response = requests.get(f"{adapter.url}/dicomweb/studies")

    assert response.status_code == 502
    assert response.json() == {"error": "Internal server error"}


def test_chunked_body_over_limit(adapter: Adapter) -> None:
    chunks = [b"x" * 600, b"y" * 600]

    response = requests.post(f"{adapter.url}/dicomweb/studies", data=iter(chunks))

    assert response.status_code == 413
    assert adapter.handler.events == []


# Responses


def test_response_base64_body_and_headers(adapter: Adapter) -> None:
    body = bytes(range(256))
    adapter.handler.response = {
        "statusCode": 202,
        "headers": {"Content-Type": "ignored/when-multi", "X-Single": "1"},
        "multiValueHeaders": {"Content-Type": ["application/dicom"], "Warning": ["a", "b"]},
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }

    connection = http.client.HTTPConnection("127.0.0.1", adapter.server.port, timeout=10)
    connection.request("GET", "/dicomweb/studies")
    response = connection.getresponse()

    assert response.status == 202
    assert response.read() == body
    assert response.headers.get_all("Content-Type") == ["application/dicom"]
    assert response.headers.get_all("Warning") == ["a", "b"]
    assert response.headers["X-Single"] == "1"
    connection.close()


def test_response_text_body(adapter: Adapter) -> None:
    adapter.handler.response = {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"name": "Müller"}),
        "isBase64Encoded": False,
    }

    response = requests.get(f"{adapter.url}/dicomweb/studies")

    assert response.json() == {"name": "Müller"}


def test_response_no_body(adapter: Adapter) -> None:
    adapter.handler.response = {"statusCode": 204, "multiValueHeaders": {}, "body": None}

    response = requests.get(f"{adapter.url}/dicomweb/studies")

    assert response.status_code == 204
    assert response.content == b""


def test_handler_failure(adapter: Adapter, caplog: pytest.LogCaptureFixture) -> None:
    adapter.handler.error = RuntimeError("boom")

    response = requests.get(f"{adapter.url}/dicomweb/studies")

    assert response.status_code == 502
    assert response.json() == {"error": "Internal server error"}
    (record,) = [r for r in caplog.records if r.getMessage() == "handler failed"]
    assert record.levelno == logging.ERROR
    assert getattr(record, "error", None) == "RuntimeError"
    assert "in __call__" in getattr(record, "traceback", "")
    assert record.exc_info is None
    assert all("boom" not in str(value) for value in vars(record).values())


def wait_for_record(caplog: pytest.LogCaptureFixture, message: str) -> logging.LogRecord:
    """Return the first record with ``message``, waiting up to 10 s for the server thread."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for record in caplog.records:
            if record.getMessage() == message:
                return record
        time.sleep(0.02)
    raise AssertionError(f"no log record {message!r}")


def test_chunked_body_cut_short(adapter: Adapter, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    head = (
        b"POST /dicomweb/studies?PatientName=Quartermaine HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", adapter.server.port), timeout=10) as client:
        client.sendall(head + b"100\r\n" + b"x" * 40)

    record = wait_for_record(caplog, "chunked request body incomplete or malformed")
    assert record.levelno == logging.WARNING
    assert getattr(record, "path", None) == "/dicomweb/studies"
    assert getattr(record, "bytes_read", None) == 0
    assert adapter.handler.events == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert all("Quartermaine" not in str(vars(r)) for r in caplog.records)


def test_malformed_request_line_not_logged(
    adapter: Adapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The space in the query makes the request line invalid, so http.server rejects it.
    request_line = b"GET /dicomweb/studies?PatientName=Quartermaine Eudora HTTP/1.1\r\n\r\n"

    with socket.create_connection(("127.0.0.1", adapter.server.port), timeout=10) as client:
        client.sendall(request_line)
        status_line = client.recv(12)

    assert status_line == b"HTTP/1.1 400"
    record = wait_for_record(caplog, "HTTP request rejected")
    assert record.levelno == logging.WARNING
    assert getattr(record, "status", None) == 400
    assert adapter.handler.events == []
    for logged in caplog.records:
        assert "Quartermaine" not in logged.getMessage(), logged.name
        assert "Quartermaine" not in str(vars(logged)), logged.name


def test_server_shutdown() -> None:
    server = serve_http(RecordingHandler(), "127.0.0.1", 0)
    port = server.port
    assert port > 0
    server.shutdown()

    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


# The Lambda entry point


def proxy_event(
    method: str, path: str, query: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Host": "api.example.com", "X-Forwarded-Proto": "https"},
        "multiValueHeaders": {"Host": ["api.example.com"], "X-Forwarded-Proto": ["https"]},
        "queryStringParameters": {name: values[-1] for name, values in (query or {}).items()},
        "multiValueQueryStringParameters": query,
        "pathParameters": {"proxy": path.lstrip("/")},
        "requestContext": {"stage": "prod", "requestId": "r-1", "path": f"/prod{path}"},
        "body": None,
        "isBase64Encoded": False,
    }


@pytest.fixture
def lambda_environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    # The first invocation sends the "cirrus" logger to powertools, which is undone after.
    cirrus_logger = logging.getLogger("cirrus")
    handlers = cirrus_logger.handlers[:]
    propagate, level = cirrus_logger.propagate, cirrus_logger.level
    dicomweb_handler._lambda_services.cache_clear()
    yield
    dicomweb_handler._lambda_services.cache_clear()
    cirrus_logger.handlers[:] = handlers
    cirrus_logger.propagate = propagate
    cirrus_logger.setLevel(level)


@pytest.fixture
def lambda_output(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Collect what the Lambda's powertools handler writes.

    The handler keeps the sys.stdout of the time it was created, so capsys does not see it.
    """
    output = io.StringIO()
    monkeypatch.setattr(dicomweb_handler.logger.registered_handler, "stream", output)
    return output


def test_lambda_handler_unknown_study(lambda_environment: None, lambda_output: io.StringIO) -> None:
    event = proxy_event("GET", "/studies/1.2.3/metadata", {"PatientName": ["Secret^Name"]})

    result = dicomweb_handler.lambda_handler(event, LocalContext(aws_request_id="r-1"))

    assert result["statusCode"] == 404
    assert json.loads(result["body"]) == {"error": "study 1.2.3 not found"}
    assert result["multiValueHeaders"]["Content-Type"] == ["application/json"]
    output = lambda_output.getvalue()
    assert '"message":"request failed"' in output
    assert "Secret" not in output


def test_lambda_handler_invalid_query_not_logged(
    lambda_environment: None, lambda_output: io.StringIO
) -> None:
    query = {"PatientName": ["Quartermaine^Eudora"], "PatientBirthDate": ["19710123-19700101"]}
    event = proxy_event("GET", "/studies", query)

    result = dicomweb_handler.lambda_handler(event, LocalContext(aws_request_id="r-3"))

    assert result["statusCode"] == 400
    assert "'19710123-19700101' ends before it starts" in json.loads(result["body"])["error"]
    output = lambda_output.getvalue()
    (line,) = [json.loads(line) for line in output.splitlines() if "request failed" in line]
    assert line["status"] == 400
    assert line["parameter"] == "PatientBirthDate"
    assert line["kind"] == "DA range ends before it starts"
    for value in ("19710123", "19700101", "Quartermaine"):
        assert value not in output, value


def test_lambda_handler_builds_services_once(lambda_environment: None) -> None:
    context = LocalContext(aws_request_id="r-2")
    dicomweb_handler.lambda_handler(proxy_event("GET", "/studies/1/metadata"), context)
    dicomweb_handler.lambda_handler(proxy_event("GET", "/studies/2/metadata"), context)

    assert dicomweb_handler._lambda_services.cache_info().misses == 1


def test_idle_connection_closed() -> None:
    import socket
    import time

    from cirrus.local import http

    server = http.serve_http(
        lambda event, context: {"statusCode": 200, "body": ""}, idle_timeout=0.5
    )
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            client.sendall(b"GET /dicomweb/studies HTTP/1.1\r\n")  # never finished
            started = time.monotonic()
            assert client.recv(100) == b""
            assert time.monotonic() - started < 5
    finally:
        server.shutdown()


# Connections


def test_connection_kept_alive_without_body(adapter: Adapter) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", adapter.server.port, timeout=10)
    ports = []
    try:
        for target in ("/dicomweb/studies?PatientID=A", "/dicomweb/studies", "/elsewhere"):
            connection.request("GET", target)
            response = connection.getresponse()
            response.read()
            assert response.getheader("Connection") is None
            assert connection.sock is not None
            ports.append(connection.sock.getsockname()[1])
        connection.request("HEAD", "/dicomweb/studies")
        head = connection.getresponse()
        assert head.read() == b""
        assert head.getheader("Content-Length") == "2"
        assert connection.sock is not None
        ports.append(connection.sock.getsockname()[1])
    finally:
        connection.close()

    assert len(set(ports)) == 1
    assert len(adapter.handler.events) == 3


def test_connection_closed_after_body(adapter: Adapter) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", adapter.server.port, timeout=10)
    try:
        connection.request("POST", "/dicomweb/studies", body=b"abc")
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()

    assert response.status == 200
    assert response.getheader("Connection") == "close"
    assert adapter.handler.events[0]["body"] == base64.b64encode(b"abc").decode()


def test_connection_closed_on_request(adapter: Adapter) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", adapter.server.port, timeout=10)
    try:
        connection.request("GET", "/dicomweb/studies", headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()

    assert response.getheader("Connection") == "close"


def test_connection_closed_without_length() -> None:
    def streamed(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first "
        yield b"second"

    server = serve_http(RecordingHandler(), site=streamed)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            client.sendall(b"GET /viewer HTTP/1.1\r\nHost: local\r\n\r\n")
            received = b""
            while chunk := client.recv(4096):
                received += chunk
    finally:
        server.shutdown()

    head, _, body = received.partition(b"\r\n\r\n")
    assert b"Connection: close" in head
    assert body == b"first second"


def test_site_failure_closes_connection(caplog: pytest.LogCaptureFixture) -> None:
    message = "PatientName=SECRET"

    def failing(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        # The traceback in the log quotes this line, so the value is not written on it.
        raise RuntimeError(message)

    server = serve_http(RecordingHandler(), site=failing)
    try:
        response = requests.get(f"http://127.0.0.1:{server.port}/viewer", timeout=10)
    finally:
        server.shutdown()

    assert response.status_code == 500
    assert response.headers["Connection"] == "close"
    assert response.json() == {"error": "Internal server error"}
    (record,) = [r for r in caplog.records if r.getMessage() == "WSGI application failed"]
    assert getattr(record, "error", None) == "RuntimeError"
    assert all("SECRET" not in str(value) for value in vars(record).values())
