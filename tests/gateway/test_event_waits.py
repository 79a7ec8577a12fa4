"""The event-driven loops of ``cirrus.gateway.event_waits`` in the gateway's associations.

An idle association blocks in both loops instead of turning them, messages still flow both
ways over one association, and a release or an abort from either side ends both threads.
The stalled-peer, time-out and abort tests of this folder run on the same loops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.timer import Timer

from cirrus.gateway.event_waits import IDLE_WAIT_SECONDS, _DULWaker, _wait_for
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import SUCCESS
from tests.gateway.scu import associate, wait_until

# An idle association whose loops blocked turns each loop about twice a second; one that
# polled like pynetdicom 3.0.4 would turn them about 1,000 times.
IDLE_SECONDS = 1.0
MAX_IDLE_TURNS = 10
VERIFICATION = [(Verification, ImplicitVRLittleEndian)]


def gateway_side(gateway: Gateway, scu: Association) -> Association:
    """Return the gateway's association whose peer is ``scu``."""
    assert scu.dul.socket is not None and scu.dul.socket.socket is not None
    local_port = scu.dul.socket.socket.getsockname()[1]
    for assoc in gateway.active_associations():
        sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
        if sock is not None and sock.getpeername()[1] == local_port:
            return assoc
    raise AssertionError(f"no gateway association from port {local_port}")


class CallCounter:
    """Counts the calls of one method of one object, which it replaces for the instance."""

    def __init__(self, owner: Any, name: str) -> None:
        self.calls = 0
        original: Callable[..., Any] = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        setattr(owner, name, counted)


def test_idle_association_loops_block(gateway: Gateway) -> None:
    with associate(gateway.port, VERIFICATION) as scu:
        served = gateway_side(gateway, scu)
        reactor_turns = CallCounter(served.dimse, "get_msg")
        dul_turns = CallCounter(served.dul, "_is_transport_event")
        time.sleep(IDLE_SECONDS)
        idle_reactor_turns = reactor_turns.calls
        idle_dul_turns = dul_turns.calls
        status = scu.send_c_echo()

    assert idle_reactor_turns <= MAX_IDLE_TURNS
    assert idle_dul_turns <= MAX_IDLE_TURNS
    assert status.Status == SUCCESS
    # The echo woke the reactor for its request.
    assert reactor_turns.calls > idle_reactor_turns


def test_many_echoes_over_one_association(gateway: Gateway) -> None:
    with associate(gateway.port, VERIFICATION) as scu:
        statuses = [int(scu.send_c_echo().Status) for _ in range(100)]

    assert statuses == [SUCCESS] * 100


def test_release_ends_gateway_threads(gateway: Gateway) -> None:
    with associate(gateway.port, VERIFICATION) as scu:
        served = gateway_side(gateway, scu)
        waker = served.dul._cirrus_waker  # type: ignore[attr-defined]

    assert isinstance(waker, _DULWaker)
    assert wait_until(lambda: not served.is_alive())
    assert wait_until(lambda: not served.dul.is_alive())
    assert served.is_released
    # The DUL thread closes its wake-up socket pair when it ends.
    assert waker._reader is None
    assert waker._writer is None


def test_gateway_abort_reaches_peer(gateway: Gateway) -> None:
    with associate(gateway.port, VERIFICATION) as scu:
        served = gateway_side(gateway, scu)
        # From this thread, as Gateway.shutdown aborts associations.
        served.abort()
        assert wait_until(lambda: scu.is_aborted)

    assert wait_until(lambda: not served.is_alive())
    assert wait_until(lambda: not served.dul.is_alive())
    assert served.is_aborted


def test_peer_abort_ends_gateway_threads(gateway: Gateway) -> None:
    with associate(gateway.port, VERIFICATION) as scu:
        served = gateway_side(gateway, scu)
        scu.abort()

    assert wait_until(lambda: not served.is_alive())
    assert wait_until(lambda: not served.dul.is_alive())
    assert served.is_aborted


def test_wait_for_stopped_timer() -> None:
    timer = Timer(30)
    assert _wait_for(timer) == IDLE_WAIT_SECONDS
    timer.start()
    timer.stop()
    assert _wait_for(timer) == IDLE_WAIT_SECONDS


def test_wait_for_timer_without_timeout() -> None:
    timer = Timer(None)
    timer.start()
    assert _wait_for(timer) == IDLE_WAIT_SECONDS


def test_wait_for_running_timer_ends_at_expiry() -> None:
    timer = Timer(0.2)
    timer.start()
    wait = _wait_for(timer)
    assert wait > 0
    assert wait <= 0.2 + 0.001


def test_wait_for_expired_timer_is_zero() -> None:
    timer = Timer(0)
    timer.start()
    time.sleep(0.01)
    assert timer.expired
    assert _wait_for(timer) == 0
