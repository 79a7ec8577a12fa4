"""Connections that have not sent their A-ASSOCIATE-RQ yet, and the server that bounds them.

pynetdicom 3.0.4 starts an acceptor thread and a DUL thread for each accepted connection,
copies the AE's presentation contexts for it, and counts every acceptor thread against
``maximum_associations``, including one that still waits for its association request. The
copy of the gateway's 170 storage contexts took about 35 ms of CPU time when timed once with
``copy.deepcopy`` on one development machine, so that is an estimate. Idle connections, from
a port scanner or a client that never speaks, could take every association slot and have
modalities rejected with "local limit exceeded".

``GatewayAssociationServer`` therefore hands a new connection to pynetdicom only once it has
data to read. Until then ``PendingConnections`` watches it in one thread with a selector, so an
idle connection costs a file descriptor and nothing else. It closes a connection that sends
nothing within the request timeout (the AE's ACSE timeout), and when a connection arrives with
``limit`` connections pending, it closes the oldest. A modality sends its request within
milliseconds of connecting, so idle connections cannot keep it out unless they are opened
faster than that. A connection stays pending, and counts against ``limit``, until its
A-ASSOCIATE-RQ has arrived. ``GatewayAE`` counts only associations whose request has arrived
against ``maximum_associations``.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from pynetdicom.transport import ThreadedAssociationServer

logger = logging.getLogger(__name__)

# The most often that closing pending connections over the limit is logged; repeats in
# between are counted in the next message.
_LOG_INTERVAL_SECONDS: Final = 60.0

_Request = socket.socket | tuple[bytes, socket.socket]


@dataclass
class _Pending:
    server: GatewayAssociationServer
    # As the accept loop returned it, for pynetdicom's request handler.
    client_address: Any
    deadline: float
    # True until the connection has data to read and goes to a pynetdicom thread.
    watching: bool = True


class PendingConnections:
    """The accepted connections of one gateway process that have not sent their request yet.

    Connections that send nothing are watched by one thread, which alone registers, closes
    and hands them on. Other threads pass new connections to it through ``add`` and remove
    connections that pynetdicom serves through ``discard``.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"pending connection limit is {limit}; it must be 1 or more")
        self.limit = limit
        self._lock = threading.Lock()
        # Oldest first.
        self._connections: OrderedDict[socket.socket, _Pending] = OrderedDict()
        self._arrivals: list[tuple[socket.socket, _Pending]] = []
        self._selector: selectors.BaseSelector | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._watcher: threading.Thread | None = None
        self._stopping = False
        # Set when the watcher thread has failed; connections then go to pynetdicom at once.
        self._failed = False
        self._evicted_unlogged = 0
        self._logged_at: float | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._connections) + len(self._arrivals)

    def add(
        self, server: GatewayAssociationServer, sock: socket.socket, client_address: Any
    ) -> bool:
        """Watch a new connection until it has data, then hand it to ``server``.

        Returns False when the connection is not taken, because the watcher thread failed, so
        that the server serves it at once.
        """
        timeout = server.ae.acse_timeout
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        with self._lock:
            if self._failed:
                return False
            stopping = self._stopping
            if not stopping:
                self._arrivals.append((sock, _Pending(server, client_address, deadline)))
                self._start_watcher()
        if stopping:
            server.shutdown_request(sock)
        else:
            self._wake()
        return True

    def discard(self, sock: socket.socket) -> None:
        """Forget a connection that pynetdicom serves, once its request arrived or it ended."""
        with self._lock:
            pending = self._connections.get(sock)
            if pending is not None and not pending.watching:
                del self._connections[sock]

    def close(self) -> None:
        """Close every pending connection and stop watching, when the gateway stops."""
        with self._lock:
            self._stopping = True
            watcher = self._watcher
        self._wake()
        if watcher is not None:
            watcher.join()
        self._wake_reader.close()
        self._wake_writer.close()

    def _start_watcher(self) -> None:
        # Called with the lock held.
        if self._watcher is None:
            self._selector = selectors.DefaultSelector()
            self._selector.register(self._wake_reader, selectors.EVENT_READ)
            self._watcher = threading.Thread(
                target=self._watch, name="pending-connections", daemon=True
            )
            self._watcher.start()

    def _wake(self) -> None:
        try:
            self._wake_writer.send(b"\0")
        except OSError:
            # The buffer is full, so the watcher wakes anyway, or the socket was closed at stop.
            pass

    def _watch(self) -> None:
        selector = self._selector
        assert selector is not None  # set before the thread starts
        try:
            while True:
                with self._lock:
                    stopping = self._stopping
                    arrivals, self._arrivals = self._arrivals, []
                if stopping:
                    return
                for sock, pending in arrivals:
                    self._admit(selector, sock, pending)
                self._close_expired(selector)
                for key, _ in selector.select(self._seconds_to_next_deadline()):
                    if key.fileobj is self._wake_reader:
                        self._drain_wake()
                    else:
                        self._on_readable(selector, key.fileobj)  # type: ignore[arg-type]
        except Exception:
            logger.exception(
                "watching connections without an association request failed; new connections "
                "now get their pynetdicom threads at once"
            )
            with self._lock:
                self._failed = True
        finally:
            self._close_all(selector)

    def _admit(
        self, selector: selectors.BaseSelector, sock: socket.socket, pending: _Pending
    ) -> None:
        with self._lock:
            self._forget_closed()
            evicted = []
            while len(self._connections) >= self.limit:
                evicted.append(self._connections.popitem(last=False))
            self._connections[sock] = pending
        for old_sock, old in evicted:
            logger.debug("pending connection from %s closed", _address(old.client_address))
            self._end(selector, old_sock, old)
        if evicted:
            self._log_evicted(len(evicted))
        try:
            selector.register(sock, selectors.EVENT_READ)
        except (ValueError, OSError):
            # Closed by its peer already.
            with self._lock:
                self._connections.pop(sock, None)
            pending.server.shutdown_request(sock)

    def _on_readable(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        selector.unregister(sock)
        # A connection that closes before it sends anything, as a load balancer's TCP health
        # check does, ends here without a pynetdicom thread.
        ended = _closed_by_peer(sock)
        with self._lock:
            pending = self._connections.get(sock)
            if pending is None:
                return
            if ended:
                del self._connections[sock]
            else:
                pending.watching = False
        if ended:
            logger.debug(
                "connection from %s closed before it sent anything",
                _address(pending.client_address),
            )
            pending.server.shutdown_request(sock)
        else:
            pending.server.serve_connection(sock, pending.client_address)

    def _close_expired(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [
                (sock, pending)
                for sock, pending in self._connections.items()
                if pending.watching and pending.deadline <= now
            ]
            for sock, _ in expired:
                del self._connections[sock]
        for sock, pending in expired:
            logger.debug(
                "connection from %s sent no association request in time",
                _address(pending.client_address),
            )
            self._end(selector, sock, pending)

    def _seconds_to_next_deadline(self) -> float | None:
        with self._lock:
            deadlines = [p.deadline for p in self._connections.values() if p.watching]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _drain_wake(self) -> None:
        try:
            self._wake_reader.recv(4096)
        except OSError:
            pass

    def _end(
        self, selector: selectors.BaseSelector, sock: socket.socket, pending: _Pending
    ) -> None:
        """Close a pending connection. One that a pynetdicom thread serves is only shut down."""
        if pending.watching:
            try:
                selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            pending.server.shutdown_request(sock)
        else:
            _shut_down(sock)

    def _close_all(self, selector: selectors.BaseSelector) -> None:
        with self._lock:
            connections = [*self._connections.items(), *self._arrivals]
            self._connections.clear()
            self._arrivals = []
        for sock, pending in connections:
            self._end(selector, sock, pending)
        selector.close()

    def _forget_closed(self) -> None:
        # pynetdicom closes the socket of a connection that ends before its request without
        # always calling ``shutdown_request``, so closed sockets are dropped here. Callers
        # hold the lock.
        for sock in [sock for sock in self._connections if sock.fileno() == -1]:
            del self._connections[sock]

    def _log_evicted(self, count: int) -> None:
        now = time.monotonic()
        self._evicted_unlogged += count
        if self._logged_at is not None and now - self._logged_at < _LOG_INTERVAL_SECONDS:
            return
        evicted, self._evicted_unlogged = self._evicted_unlogged, 0
        self._logged_at = now
        logger.warning(
            "%d connections without an association request closed, because %d connections "
            "were waiting for theirs (logged at most every %g s)",
            evicted,
            self.limit,
            _LOG_INTERVAL_SECONDS,
            extra={"count": evicted, "limit": self.limit},
        )


def _closed_by_peer(sock: socket.socket) -> bool:
    """Tell whether a readable connection has ended rather than sent data.

    ``socket.socket.recv`` is called unbound because ``ssl.SSLSocket.recv`` rejects flags,
    and the bytes before the TLS handshake are what is peeked at.
    """
    try:
        return socket.socket.recv(sock, 1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _shut_down(sock: socket.socket) -> None:
    """End a connection that a pynetdicom thread serves; that thread then closes the socket.

    ``socket.socket.shutdown`` is called unbound because ``ssl.SSLSocket.shutdown`` would also
    drop the TLS state that a handshake in that thread is using.
    """
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        # Closed already.
        pass


class GatewayAssociationServer(ThreadedAssociationServer):
    """A threaded association server that starts a connection's thread once it sends data.

    ``GatewayAE.make_server`` sets ``pending``. Without it, each connection gets its thread at
    once, as in pynetdicom.
    """

    pending: PendingConnections | None = None
    # The listen backlog. socketserver's default of 5 overflows when a few connections arrive
    # at once, and Linux then drops their SYNs, which the clients resend only after 1 s. The
    # kernel caps the value at net.core.somaxconn.
    request_queue_size = socket.SOMAXCONN

    def process_request(self, request: _Request, client_address: Any) -> None:
        pending = self.pending
        if pending is not None and isinstance(request, socket.socket):
            if pending.add(self, request, client_address):
                return
        super().process_request(request, client_address)

    def serve_connection(self, request: socket.socket, client_address: Any) -> None:
        """Start the thread that runs pynetdicom's association on a connection with data."""
        try:
            super().process_request(request, client_address)
        except Exception:
            logger.exception("connection from %s could not be served", _address(client_address))
            self.shutdown_request(request)

    def shutdown_request(self, request: _Request) -> None:
        # pynetdicom calls this when a connection ends, whether an association ran on it or not.
        if self.pending is not None and isinstance(request, socket.socket):
            self.pending.discard(request)
        super().shutdown_request(request)


def _address(client_address: Any) -> str:
    if isinstance(client_address, tuple):
        return f"{client_address[0]}:{client_address[1]}"
    return str(client_address)
