"""STOW-RS clients that send their body slowly or stop: time-outs end them, others are served.

The DICOMweb handler runs on moto behind the local HTTP adapter. A raw socket sends a STOW-RS
body a few bytes at a time, which only the body time-out of 2 s ends, or half of it and then
nothing, which the idle time-out of 1 s ends. Each test sets the other time-out to 30 s, so
that a pause on a loaded machine cannot end its request by the wrong one. Each request is
ended by its time-out and logged, its thread ends, nothing of it is stored, and a normal
STOW-RS sent meanwhile is stored.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from pydicom.uid import generate_uid

from cirrus.config import Settings
from cirrus.local.http import HttpServer, serve_http
from cirrus.services import Services
from cirrus.storage.keys import site_prefix
from cirrus.storage.objects import ObjectStore
from functions.dicomweb.handler import dicomweb_services, handle
from tests.gateway.scu import wait_until
from tests.integration.test_dicomweb_stow_wado import (
    STOW_TYPE,
    encode,
    post_parts,
    read_test_file,
)

pytestmark = pytest.mark.timeout(60)

IDLE_TIMEOUT_SECONDS = 1.0
BODY_TIMEOUT_SECONDS = 2.0
# The time-out that a test does not check.
LONG_TIMEOUT_SECONDS = 30.0
# The trickling client sends this many bytes at this interval, which the idle time-out
# alone would never end.
TRICKLE_BYTES = 16
TRICKLE_INTERVAL_SECONDS = 0.2


@pytest.fixture
def server(settings: Settings, request: pytest.FixtureRequest) -> Iterator[HttpServer]:
    """Serve DICOMweb with the time-outs that the test's ``timeouts`` mark names."""
    idle_timeout, body_timeout = request.node.get_closest_marker("timeouts").args
    view = dicomweb_services(Services(settings))
    running = serve_http(
        functools.partial(handle, services=view),
        "127.0.0.1",
        0,
        idle_timeout=idle_timeout,
        body_timeout=body_timeout,
    )
    yield running
    running.shutdown()


def fresh_part() -> bytes:
    ds = read_test_file("CT_small.dcm")
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return encode(ds)


def request_bytes(port: int) -> tuple[bytes, bytes]:
    """Return the head and body of a STOW-RS request of one new instance."""
    body = b"--slow\r\nContent-Type: application/dicom\r\n\r\n" + fresh_part() + b"\r\n--slow--"
    head = (
        f"POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {STOW_TYPE}; boundary=slow\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def trickle(port: int, head: bytes, body: bytes, outcome: dict[str, object]) -> None:
    """Send ``body`` a few bytes at a time until the server responds or closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(head)
        client.settimeout(TRICKLE_INTERVAL_SECONDS)
        started = time.monotonic()
        try:
            for start in range(0, len(body), TRICKLE_BYTES):
                client.sendall(body[start : start + TRICKLE_BYTES])
                try:
                    answer = client.recv(4096)
                except TimeoutError:
                    continue
                outcome["answer"] = answer
                break
        except (ConnectionResetError, BrokenPipeError):
            outcome["answer"] = b""
        outcome["seconds"] = time.monotonic() - started


def handler_threads() -> int:
    return sum(t.name.startswith("Thread-") and t.is_alive() for t in threading.enumerate())


def stored_keys(object_store: ObjectStore, settings: Settings) -> list[str]:
    return [obj.key for obj in object_store.list_keys(site_prefix(settings.default_site))]


@pytest.fixture
def threads_before(server: HttpServer, caplog: pytest.LogCaptureFixture) -> int:
    """Capture INFO logs, and return the number of handler threads before the test's requests."""
    caplog.set_level(logging.INFO)
    return handler_threads()


def threads_freed(before: int) -> bool:
    return wait_until(lambda: handler_threads() <= before, timeout=10)


def logged_once(caplog: pytest.LogCaptureFixture, message: str) -> logging.LogRecord:
    (record,) = [r for r in caplog.records if r.getMessage() == message]
    return record


@pytest.mark.timeouts(LONG_TIMEOUT_SECONDS, BODY_TIMEOUT_SECONDS)
def test_trickling_body_ended_by_body_timeout(
    server: HttpServer,
    settings: Settings,
    object_store: ObjectStore,
    caplog: pytest.LogCaptureFixture,
    threads_before: int,
) -> None:
    head, body = request_bytes(server.port)
    outcome: dict[str, object] = {}
    sender = threading.Thread(target=trickle, args=(server.port, head, body, outcome))

    sender.start()
    normal = post_parts(f"{server.url}/studies", [fresh_part()])
    sender.join(timeout=30)
    freed = threads_freed(threads_before)

    assert not sender.is_alive()
    answer = outcome["answer"]
    assert isinstance(answer, bytes)
    # The server sends 408 and closes. A close with unread bytes may reset the connection
    # before the client reads the response.
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
    assert freed
    message = "request body not received within the body time-out of 2 s"
    record = logged_once(caplog, message)
    assert record.levelno == logging.WARNING
    assert 0 < getattr(record, "bytes_read", 0) < len(body)
    assert normal.status_code == 200, normal.text
    assert len(stored_keys(object_store, settings)) == 1


@pytest.mark.timeouts(IDLE_TIMEOUT_SECONDS, LONG_TIMEOUT_SECONDS)
def test_stalled_body_ended_by_idle_timeout(
    server: HttpServer,
    settings: Settings,
    object_store: ObjectStore,
    caplog: pytest.LogCaptureFixture,
    threads_before: int,
) -> None:
    head, body = request_bytes(server.port)

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(head + body[: len(body) // 2])
        normal = post_parts(f"{server.url}/studies", [fresh_part()])
        answer = client.recv(4096)
    freed = threads_freed(threads_before)

    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert freed
    message = "request body incomplete: the client disconnected or timed out"
    record = logged_once(caplog, message)
    # werkzeug drops the bytes of a read that times out, so fewer may be counted.
    assert getattr(record, "bytes_read", -1) <= len(body) // 2
    assert normal.status_code == 200, normal.text
    assert len(stored_keys(object_store, settings)) == 1
