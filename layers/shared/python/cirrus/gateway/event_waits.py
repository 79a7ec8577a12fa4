"""Event-driven waits in pynetdicom's two loops of each association, in place of 1 ms sleeps.

Written for pynetdicom 3.0.4 (``pynetdicom.dul`` and ``pynetdicom.association``), whose two
threads per association poll:

- the DUL thread (``DULServiceProvider.run_reactor``) sleeps ``_run_loop_delay`` (1 ms) each
  time it finds no event, so a PDU that arrives, or a response that the service user queues,
  waits for the end of that sleep;
- the association reactor (``Association._run_reactor``) sleeps 1 ms before each look at the
  DIMSE message queue, so every received request waits for it as well.

A C-STORE of a 512 KB instance in 16 KB PDUs meets several of those sleeps, and they, not the
work, set the rate of a pynetdicom Storage SCP. An idle association still turns both loops
1,000 times a second.

``install_event_waits`` replaces both loops with versions that block until there is work:

- the DUL thread waits in ``select`` on the association's socket and on a wake-up socket pair,
  which a put on its event queue or its provider queue, or a request to stop, writes to;
- the reactor waits on a ``threading.Event``. A put on the DIMSE message queue or on the
  queue of primitives for the service user sets it, and so do the end of the DUL thread, a
  kill and a request to pause the reactor.

Both waits end when the loop's timer (ARTIM, network idle) may expire, because the loops check
the timers, and after ``IDLE_WAIT_SECONDS`` at the latest. The loops keep pynetdicom's order
of checks and its pause protocol (``_reactor_checkpoint``, ``_is_paused``), so other threads
that send DIMSE messages over the association work as before. The patch is process-wide and
applies to the associations created after it is installed, of the gateway and of every other
AE in the process.

In state Sta6, where a P-DATA-TF PDU neither changes the state nor depends on other events,
two shortcuts skip the DUL thread's queues (``receive_p_data_now``, ``send_p_data_now``). The
DUL thread passes a received P-DATA-TF PDU to DIMSE as soon as it has decoded it, and the
reactor sends a C-STORE response itself instead of waking the DUL thread to send it. Each
applies only when no event or primitive is queued ahead of it. The DUL thread runs every
state machine action under a lock that the reactor's send takes too, so the state does not
change while the reactor sends. They trigger the same
EVT_FSM_TRANSITION as the state machine. With two associations in one process, each wake-up
of the other thread also hands over the interpreter lock, and those hand-overs cost as much
CPU time as the decoding they surround.

One behaviour differs from pynetdicom 3.0.4: the reactor restarts the network idle timer once
it has served a request. pynetdicom restarts the timer only when a PDU arrives, so the time
that a handler takes counts as idle time of the peer, which is waiting for the response.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.timer import Timer

logger = logging.getLogger(__name__)

# The maximum time that either loop blocks without an event, so that an idle association wakes up
# twice per period (once in each loop). A loop waits less when its timer (ARTIM for the DUL
# thread, the network idle timer for the reactor) expires sooner.
IDLE_WAIT_SECONDS: Final = 0.5
# Added to a timer's remaining time, because pynetdicom's Timer expires only once the
# remaining time is below zero.
_TIMER_MARGIN_SECONDS: Final = 0.001

_install_lock = threading.Lock()
_installed = False
_LOCK_TYPE: Final = type(_install_lock)


class _NotifyingQueue(queue.Queue[Any]):
    """A ``queue.Queue`` that calls ``notify`` after every put."""

    def __init__(self, notify: Callable[[], None]) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


class _Checkpoint(threading.Event):
    """The reactor's ``_reactor_checkpoint``, whose ``clear`` also wakes the reactor."""

    def __init__(self, activity: threading.Event) -> None:
        super().__init__()
        self._activity = activity

    def clear(self) -> None:
        super().clear()
        self._activity.set()


class _DULWaker:
    """The wake-up socket pair of one DUL thread, open while the thread runs its loop.

    ``notify`` writes only while the thread is about to block or is blocked in ``select``
    (``waiting``). The thread sets ``waiting`` before it checks its queues a last time, so a
    put either comes before that check or finds ``waiting`` set and writes.
    """

    def __init__(self) -> None:
        self.waiting = False
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None

    def open(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def close(self) -> None:
        self.waiting = False
        for end in (self._reader, self._writer):
            if end is not None:
                end.close()
        self._reader = self._writer = None

    def notify(self) -> None:
        writer = self._writer
        if not self.waiting or writer is None:
            return
        try:
            writer.send(b"\0")
        except OSError:
            # A full buffer already wakes the reader, and a closed pair has no reader left.
            pass

    def wait(self, association_socket: socket.socket | None, timeout: float) -> None:
        """Block until ``association_socket`` or the wake-up pair can be read, or ``timeout``."""
        reader = self._reader
        if reader is None:
            time.sleep(timeout)
            return
        readable: list[Any] = [reader]
        if association_socket is not None:
            # An SSL socket can hold decrypted bytes that select does not see.
            if isinstance(association_socket, ssl.SSLSocket) and association_socket.pending():
                return
            readable.append(association_socket)
        try:
            ready, _, _ = select.select(readable, [], [], timeout)
        except (OSError, ValueError):
            # The association socket closed meanwhile, which the next turn of the loop handles.
            return
        if reader in ready:
            # One read takes every wake-up byte written so far, because ``notify`` writes only
            # while this thread waits. A byte left over wakes the next wait for one more turn.
            try:
                reader.recv(4096)
            except OSError:
                pass


def _waker_of(dul: DULServiceProvider) -> _DULWaker | None:
    waker = getattr(dul, "_cirrus_waker", None)
    return waker if isinstance(waker, _DULWaker) else None


def _action_lock_of(dul: DULServiceProvider) -> threading.Lock | None:
    lock = getattr(dul, "_cirrus_action_lock", None)
    return lock if isinstance(lock, _LOCK_TYPE) else None


def send_p_data_now(dul: DULServiceProvider, primitive: P_DATA) -> bool:
    """Send ``primitive`` from the calling thread as the DUL thread would; return whether it did.

    Only in state Sta6 with no primitive and no event ahead of it in the DUL's queues. There
    the DUL thread would take event Evt9 and action DT-1, which sends the P-DATA-TF PDU and
    stays in Sta6, so this sends the PDU, triggers the same events and leaves the state alone.
    The DUL thread holds the same lock while it runs an action, so the state cannot change
    meanwhile. Saves waking the DUL thread, which waits for the peer's next PDU. Not for a
    TLS socket, which only the DUL thread reads and writes, as in pynetdicom. Returns
    False, having done nothing, otherwise, and the caller then queues ``primitive``.
    """
    lock = _action_lock_of(dul)
    if lock is None or isinstance(_raw_socket(dul), ssl.SSLSocket):
        # One TLS connection is not written while another thread may be reading it.
        return False
    with lock:
        if dul.state_machine.current_state != "Sta6":
            return False
        if dul.to_provider_queue.qsize() or dul.event_queue.qsize():
            return False
        # A failed send puts Evt17 on the DUL's event queue, as it does in the DUL thread.
        dul._send(P_DATA_TF(primitive))
        evt.trigger(
            dul.assoc,
            evt.EVT_FSM_TRANSITION,
            {"action": "DT-1", "current_state": "Sta6", "fsm_event": "Evt9", "next_state": "Sta6"},
        )
    return True


def receive_p_data_now(dul: DULServiceProvider, pdu: P_DATA_TF) -> bool:
    """Pass a received P-DATA-TF ``pdu`` to DIMSE as the DUL thread's state machine would.

    Only in state Sta6 with no event and no PDU ahead of it in the DUL's queues. There the
    state machine would take event Evt10 and action DT-2, which passes the P-DATA primitive
    to DIMSE and stays in Sta6. This does the same and triggers the same transition event,
    without the two queues and the turn of the loop in between. Returns False, having done
    nothing, otherwise, and the caller then queues ``pdu``. Only for the DUL thread, the one
    thread that changes the state, so the state cannot change meanwhile.
    """
    if _action_lock_of(dul) is None or dul.state_machine.current_state != "Sta6":
        return False
    if dul.event_queue.qsize() or dul._recv_pdu.qsize():
        return False
    dul.assoc.dimse.receive_primitive(pdu.to_primitive())
    evt.trigger(
        dul.assoc,
        evt.EVT_FSM_TRANSITION,
        {"action": "DT-2", "current_state": "Sta6", "fsm_event": "Evt10", "next_state": "Sta6"},
    )
    return True


def _activity_of(assoc: Association) -> threading.Event | None:
    activity = getattr(assoc, "_cirrus_activity", None)
    return activity if isinstance(activity, threading.Event) else None


def _raw_socket(dul: DULServiceProvider) -> socket.socket | None:
    association_socket = dul.socket
    return association_socket.socket if association_socket is not None else None


def _wait_for(timer: Timer) -> float:
    """Return how long a loop may block before ``timer`` can expire, at most the idle wait.

    A timer that is not running cannot expire before the loop's next turn, because only the
    DUL thread starts the ARTIM timer and a restart of the idle timer only delays its expiry.
    """
    running = timer.timeout is not None and timer._start_time is not None
    if not running or timer._end_time is not None:
        return IDLE_WAIT_SECONDS
    return max(0.0, min(IDLE_WAIT_SECONDS, timer.remaining + _TIMER_MARGIN_SECONDS))


def _dul_has_work(dul: DULServiceProvider) -> bool:
    return bool(dul._kill_thread or dul.event_queue.qsize() or dul.to_provider_queue.qsize())


def _abort_after_error(dul: DULServiceProvider) -> None:
    """Send an A-ABORT outside the state machine and stop both loops, as pynetdicom does."""
    abort_pdu = A_ABORT_RQ()
    abort_pdu.source = 0x02
    abort_pdu.reason_diagnostic = 0x00
    if dul.socket is not None:
        dul.socket.send(abort_pdu.encode())
    assoc = dul.assoc
    assoc.is_aborted = True
    assoc.is_established = False
    assoc._kill = True
    dul._kill_thread = True


def _run_dul_loop(dul: DULServiceProvider, waker: _DULWaker) -> None:
    """Turn the DUL state machine until ``_kill_thread`` is set.

    Each turn handles one outgoing primitive or one incoming PDU, then one event. Only a turn
    that finds no event blocks, in ``waker.wait``. Each action runs under the lock of
    ``send_p_data_now``.
    """
    action_lock = _action_lock_of(dul) or threading.Lock()
    dul._idle_timer.start()
    while True:
        if not dul.assoc._dul_ready.is_set():
            dul.assoc._dul_ready.set()
        if dul._kill_thread:
            return
        # The ARTIM event goes on the queue ahead of any event of this turn.
        if dul.artim_timer.expired:
            dul.event_queue.put("Evt18")
        received = False
        try:
            if dul._process_recv_primitive():
                pass
            elif dul._is_transport_event():
                dul._idle_timer.restart()
                received = True
        except Exception:
            logger.exception("DUL thread failed, aborting the association")
            with action_lock:
                _abort_after_error(dul)
            return
        try:
            event = dul.event_queue.get(block=False)
        except queue.Empty:
            if received:
                # More of the peer's bytes may have arrived already, and the next turn's read
                # finds them without a wait. A read that finds none costs what a wait does.
                continue
            waker.waiting = True
            if not _dul_has_work(dul):
                waker.wait(_raw_socket(dul), _wait_for(dul.artim_timer))
            waker.waiting = False
            continue
        with action_lock:
            dul.state_machine.do_action(event)


def _dul_run_reactor(self: DULServiceProvider) -> None:
    waker = _waker_of(self)
    if waker is None:
        _original["dul_run_reactor"](self)
        return
    waker.open()
    try:
        _run_dul_loop(self, waker)
    finally:
        waker.close()
        # The association reactor checks whether this thread is alive.
        activity = _activity_of(self.assoc)
        if activity is not None:
            activity.set()


def _dul_kill(self: DULServiceProvider) -> None:
    self._kill_thread = True
    waker = _waker_of(self)
    if waker is not None:
        waker.notify()


def _dul_stop(self: DULServiceProvider) -> bool:
    """Stop the DUL thread if the state machine is idle (Sta1); return whether it stopped."""
    if self.state_machine.current_state != "Sta1":
        return False
    _dul_kill(self)
    while self.is_alive():
        time.sleep(self._run_loop_delay)
    return True


def _association_init(self: Association, *args: Any, **kwargs: Any) -> None:
    _original["association_init"](self, *args, **kwargs)
    activity = threading.Event()
    self._cirrus_activity = activity  # type: ignore[attr-defined]
    dul = self.dul
    waker = _DULWaker()
    dul._cirrus_waker = waker  # type: ignore[attr-defined]
    # The queues are still empty, and every other object reaches them through these
    # attributes, so replacing them loses nothing.
    dul.event_queue = _NotifyingQueue(waker.notify)
    dul.to_provider_queue = _NotifyingQueue(waker.notify)
    dul.to_user_queue = _NotifyingQueue(activity.set)
    dul._cirrus_action_lock = threading.Lock()  # type: ignore[attr-defined]
    self.dimse.msg_queue = _NotifyingQueue(activity.set)
    checkpoint = _Checkpoint(activity)
    checkpoint.set()
    self._reactor_checkpoint = checkpoint


def _association_kill(self: Association) -> None:
    activity = _activity_of(self)
    if activity is not None:
        self._kill = True
        activity.set()
    _original["association_kill"](self)


def _serve_turn(assoc: Association) -> bool:
    """Do one turn of the reactor's checks after a wait; return False when the reactor ends.

    The checks and their order are those of pynetdicom 3.0.4's ``Association._run_reactor``.
    """
    context_id, message = assoc.dimse.get_msg(block=False)
    if message:
        assoc._serve_request(message, context_id)  # type: ignore[arg-type]
        # The peer waits for the response while the handler runs, so that time is not idle.
        # Without the restart, a handler that took longer than the network time-out would
        # make the check below abort the association before the peer could send its next PDU.
        assoc.dul._idle_timer.restart()

    if assoc.is_established and assoc.acse.is_release_requested():
        assoc.acse.send_release(is_response=True)
        logger.debug("association released by the peer")
        assoc.is_released = True
        assoc.is_established = False
        evt.trigger(assoc, evt.EVT_RELEASED, {})
        assoc.kill()
        return False

    if assoc.acse.is_aborted():
        # pynetdicom fires EVT_ACSE_RECV when the abort primitive is taken off the queue.
        assoc.dul.receive_pdu(wait=False)
        assoc.is_aborted = True
        assoc.is_established = False
        evt.trigger(assoc, evt.EVT_ABORTED, {})
        assoc.kill()
        return False

    if not assoc.dul.is_alive():
        assoc.kill()
        return False

    if assoc.dul.idle_timer_expired():
        # The gateway logs the time-out itself, with the association's peer.
        logger.debug("network time-out reached, ending the association")
        if assoc.network_timeout_response == "A-RELEASE":
            assoc._is_paused = True
            assoc._reactor_checkpoint.wait()
            assoc.release()
            assoc._is_paused = False
        else:
            assoc.abort()
        assoc.kill()
        return False
    return True


def _association_run_loop(self: Association) -> None:
    activity = _activity_of(self)
    if activity is None:
        _original["association_run_loop"](self)
        return
    self._is_paused = False
    while not self._kill:
        if not self.dimse.msg_queue.qsize():
            activity.wait(_wait_for(self.dul._idle_timer))
        # Cleared before the checks, so a put during them makes the next wait return at once.
        activity.clear()
        # As in pynetdicom, the reactor counts as paused only at the checkpoint. A thread that
        # sends DIMSE messages itself (``send_c_store`` and the like) clears the checkpoint,
        # which also ends the wait above, and waits for ``_is_paused``.
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False
        if not _serve_turn(self):
            return


_original: dict[str, Callable[..., Any]] = {}


def install_event_waits() -> None:
    """Replace pynetdicom's polling loops with the event-driven ones; idempotent."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _original["dul_run_reactor"] = DULServiceProvider.run_reactor
        _original["association_init"] = Association.__init__
        _original["association_kill"] = Association.kill
        _original["association_run_loop"] = Association._run_reactor
        setattr(DULServiceProvider, "run_reactor", _dul_run_reactor)  # noqa: B010
        setattr(DULServiceProvider, "kill_dul", _dul_kill)  # noqa: B010
        setattr(DULServiceProvider, "stop_dul", _dul_stop)  # noqa: B010
        setattr(Association, "__init__", _association_init)  # noqa: B010
        setattr(Association, "kill", _association_kill)  # noqa: B010
        setattr(Association, "_run_reactor", _association_run_loop)  # noqa: B010
        _installed = True
