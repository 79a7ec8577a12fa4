"""Connections that never send an A-ASSOCIATE-RQ: they take no association slot and are bounded.

Each test opens plain TCP connections to the gateway that send nothing, as a port scanner or a
stuck client does, and then checks that modalities still get associations.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from cirrus.config import DEFAULT_AE_TITLE, Settings
from cirrus.gateway.limits import DEFAULT_MAX_ASSOCIATIONS, GatewayLimits
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import SUCCESS
from cirrus.local.moto_process import LOOPBACK
from cirrus.services import Services
from tests.gateway.gateways import OPEN_CONFIG
from tests.gateway.scu import run_dcmtk, wait_until

IDLE_CONNECTIONS = 60
# The maximum time for an association to be accepted while idle connections are open.
PROMPT_SECONDS = 3.0


def start_limited(settings: Settings, limits: GatewayLimits | None = None) -> Gateway:
    return Gateway.start(Services(settings), OPEN_CONFIG, LOOPBACK, 0, limits=limits)


@contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """Open ``count`` TCP connections to ``port`` that send nothing; close them at the end."""
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection((LOOPBACK, port), timeout=5))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_peer(sock: socket.socket) -> bool:
    """Tell whether the gateway has closed ``sock``: it reads as end of stream, or resets."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def association_threads() -> int:
    """Count pynetdicom's association threads in this process, those without a request too."""
    return sum(isinstance(thread, Association) for thread in threading.enumerate())


def echo_status(port: int) -> int | None:
    """Send one C-ECHO from pynetdicom; return its status, or None without an association."""
    ae = AE("PENDINGSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, port, ae_title=DEFAULT_AE_TITLE)
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def test_idle_connections_leave_association_slots(gateway_settings: Settings) -> None:
    assert IDLE_CONNECTIONS > DEFAULT_MAX_ASSOCIATIONS
    with (
        start_limited(gateway_settings) as gateway,
        idle_connections(gateway.port, IDLE_CONNECTIONS),
    ):
        pending = gateway.ae.pending_connections
        assert wait_until(lambda: len(pending) == IDLE_CONNECTIONS), f"{len(pending)} pending"
        counted = len(gateway.active_associations())

        started = time.monotonic()
        result = run_dcmtk("echoscu", "-aec", DEFAULT_AE_TITLE, LOOPBACK, str(gateway.port))
        echoscu_seconds = time.monotonic() - started
        started = time.monotonic()
        status = echo_status(gateway.port)
        pynetdicom_seconds = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert "Local Limit Exceeded" not in result.stderr
    assert echoscu_seconds < PROMPT_SECONDS
    assert status == SUCCESS
    assert pynetdicom_seconds < PROMPT_SECONDS
    # The idle connections are not associations.
    assert counted == 0


def test_partial_requests_leave_association_slots(gateway_settings: Settings) -> None:
    # Each connection sends the first byte of an A-ASSOCIATE-RQ PDU and stops, so pynetdicom
    # serves it and waits for the rest.
    with (
        start_limited(gateway_settings) as gateway,
        idle_connections(gateway.port, IDLE_CONNECTIONS) as sockets,
    ):
        for sock in sockets:
            sock.sendall(b"\x01")
        pending = gateway.ae.pending_connections
        assert wait_until(lambda: len(pending) == IDLE_CONNECTIONS), f"{len(pending)} pending"
        assert wait_until(lambda: association_threads() >= IDLE_CONNECTIONS)
        counted = len(gateway.active_associations())
        started = time.monotonic()
        status = echo_status(gateway.port)
        seconds = time.monotonic() - started

    assert counted == 0
    assert status == SUCCESS
    assert seconds < PROMPT_SECONDS


def test_idle_connections_closed_after_request_timeout(gateway_settings: Settings) -> None:
    with start_limited(gateway_settings) as gateway:
        gateway.ae.acse_timeout = 1.0
        threads_before = threading.active_count()
        with idle_connections(gateway.port, 20) as sockets:
            pending = gateway.ae.pending_connections
            assert wait_until(lambda: len(pending) == 20), f"{len(pending)} pending"
            opened = time.monotonic()
            # One thread watches every idle connection.
            added_threads = threading.active_count() - threads_before
            all_closed = wait_until(lambda: all(closed_by_peer(s) for s in sockets), timeout=10)
            closed_after = time.monotonic() - opened
            pending_after = len(pending)

    assert added_threads <= 1
    assert all_closed, "the gateway kept idle connections open past the request timeout"
    # The gateway waits its request timeout of 1 s before it closes them.
    assert closed_after >= 0.5
    assert pending_after == 0


def test_pending_connections_over_limit_close_oldest(gateway_settings: Settings) -> None:
    limit = 10
    limits = GatewayLimits(max_pending_connections=limit)
    with start_limited(gateway_settings, limits) as gateway:
        with idle_connections(gateway.port, 3 * limit) as sockets:
            pending = gateway.ae.pending_connections
            oldest, newest = sockets[: 2 * limit], sockets[2 * limit :]
            oldest_closed = wait_until(lambda: all(closed_by_peer(s) for s in oldest))
            newest_closed = [closed_by_peer(s) for s in newest]
            pending_count = len(pending)
            status = echo_status(gateway.port)

    assert oldest_closed, "connections beyond the limit stayed open"
    assert newest_closed == [False] * limit
    assert pending_count == limit
    assert status == SUCCESS
