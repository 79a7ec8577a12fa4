"""The network time-out of accepted associations, and the record of whether it ended one.

pynetdicom 3.0.4 measures the network time-out with the idle timer of the DUL thread. The
timer restarts after each whole PDU, and the association's reactor aborts the association
when it finds the timer expired. That check alone does not cover two cases:

- pynetdicom sets no time-out on the sockets that it accepts, and Python's ``accept`` returns
  a blocking socket. A peer that stopped in the middle of a PDU would hold the DUL thread in
  ``recv`` for ever, and the reactor's abort cannot end that thread. So ``watch_network_timeout``
  gives the socket a read time-out a little longer than the idle timer.
- While the reactor runs a handler it checks no timer. A peer that stops in the middle of a
  PDU meanwhile (of a request sent before the response to the previous one, for one) is
  ended by the socket's read time-out when the handler outlasts it. The DUL thread then
  closes the connection, and the reactor finds the association aborted, not the timer
  expired.

``network_timed_out`` returns True when either the reactor found the idle timer expired or
a socket read timed out, so the log line of the abort names the cause in both cases.
"""

from __future__ import annotations

import logging
from typing import Final

from pynetdicom.association import Association

logger = logging.getLogger(__name__)

# How much longer a socket read waits than the association's network time-out, so that the
# reactor's check of the idle timer acts first when the reactor is free.
SOCKET_TIMEOUT_MARGIN_SECONDS: Final = 1.0


class _NetworkTimeout:
    """Whether the network time-out of one association has expired."""

    def __init__(self) -> None:
        self.expired = False


def _state_of(assoc: Association) -> _NetworkTimeout | None:
    state = getattr(assoc, "_cirrus_network_timeout", None)
    return state if isinstance(state, _NetworkTimeout) else None


def watch_network_timeout(assoc: Association) -> None:
    """Set the read time-out of the socket of ``assoc`` and record the network time-out.

    Must run before the association's threads start (EVT_CONN_OPEN), so that no read is
    already waiting when the socket's ``recv`` is replaced.
    """
    state = _NetworkTimeout()
    assoc._cirrus_network_timeout = state  # type: ignore[attr-defined]
    _watch_idle_timer(assoc, state)
    association_socket = assoc.dul.socket
    sock = association_socket.socket if association_socket is not None else None
    if association_socket is None or sock is None:
        return
    timeout = assoc.network_timeout
    try:
        sock.settimeout(None if timeout is None else timeout + SOCKET_TIMEOUT_MARGIN_SECONDS)
    except OSError as exc:
        # The peer has closed the connection already, so the association ends on its own.
        logger.debug("socket time-out not set: %s", exc)
        return
    read = association_socket.recv

    def recv(nr_bytes: int) -> bytearray:
        try:
            return read(nr_bytes)
        except TimeoutError:
            # The DUL thread logs the error and closes the connection.
            state.expired = True
            raise

    association_socket.recv = recv  # type: ignore[method-assign]


def record_read_timeout(assoc: Association) -> None:
    """Record that a read of the socket of ``assoc`` timed out.

    For readers of the socket other than ``AssociationSocket.recv``, which
    ``watch_network_timeout`` wraps: the PDU reader of ``cirrus.gateway.pdu_reads``.
    """
    state = _state_of(assoc)
    if state is not None:
        state.expired = True


def _watch_idle_timer(assoc: Association, state: _NetworkTimeout) -> None:
    """Record in ``state`` when the association's reactor finds its idle timer expired.

    The reactor aborts the association as soon as it finds the timer expired. The DUL thread
    restarts the timer after a read that failed, so when the abort handler runs, the timer may
    look fresh again. Wrapping the instance's check keeps the observation.
    """
    dul = assoc.dul
    check = dul.idle_timer_expired

    def idle_timer_expired() -> bool:
        expired = check()
        if expired:
            state.expired = True
        return expired

    dul.idle_timer_expired = idle_timer_expired  # type: ignore[method-assign]


def network_timed_out(assoc: Association) -> bool:
    """Return True if the network time-out of ``assoc`` expired: no data for that long."""
    state = _state_of(assoc)
    return state is not None and state.expired
