"""The DICOM gateway: the DIMSE services of the archive on one listening port.

``build_ae`` assembles the application entity from the services in ``cirrus.gateway``, each
of which adds its presentation contexts and event handlers. Every service reads and writes
through the same adapters as the DICOMweb Lambda (``cirrus.services.Services``), and the AE
configuration (``cirrus.gateway.aeconfig``) decides which callers are accepted and for which
site.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Callable
from ssl import SSLContext
from types import FrameType
from typing import Any, Final, TypeVar

from pynetdicom import AE, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from cirrus.config import Settings
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.audit import rejected_events
from cirrus.gateway.commitment import CommitmentService
from cirrus.gateway.connections import GatewayAssociationServer, PendingConnections
from cirrus.gateway.context import DimseService, GatewayContext, peer
from cirrus.gateway.event_waits import install_event_waits
from cirrus.gateway.find import FindService
from cirrus.gateway.health import HealthServer, HealthState
from cirrus.gateway.limits import GatewayLimits
from cirrus.gateway.metrics import GatewayMetrics
from cirrus.gateway.network_timeout import watch_network_timeout
from cirrus.gateway.pdu_reads import read_pdus_into_one_buffer
from cirrus.gateway.retrieve import RetrieveService
from cirrus.gateway.spool import Spool, install_spooling
from cirrus.gateway.store import STORAGE_TRANSFER_SYNTAXES, StoreService
from cirrus.gateway.store_requests import receive_store_requests_directly
from cirrus.gateway.store_responses import send_store_responses_directly
from cirrus.gateway.tls import TLSAssociationServer, TLSConfig
from cirrus.gateway.workers import with_reuse_port
from cirrus.services import Services

logger = logging.getLogger(__name__)

__all__ = ["STORAGE_TRANSFER_SYNTAXES", "Gateway", "GatewayAE", "build_ae", "run_gateway"]

# The default bound of simultaneous associations; ``GatewayLimits`` sets the bound in use.
# Received data sets go to files (``cirrus.gateway.spool``), so memory does not grow with
# their size.
MAX_ASSOCIATIONS: Final = GatewayLimits().max_associations

# Time that ``run_gateway`` gives open associations to finish after SIGTERM. It must stay
# below the time the orchestrator waits before SIGKILL: on ECS the container definition's
# stopTimeout, 30 s unless set.
SHUTDOWN_GRACE_SECONDS: Final = 20.0

# How often ``run_gateway`` checks whether a stop signal arrived.
_SIGNAL_POLL_SECONDS: Final = 0.1

# Time that ``Gateway.shutdown`` waits for aborted associations to end.
_ABORT_WAIT_SECONDS: Final = 5.0

# pynetdicom's default log handlers of every PDU and DIMSE message (pynetdicom 3.0 _handlers).
_PDU_LOG_HANDLERS: Final = (
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
)

_ServerT = TypeVar("_ServerT")

# The maximum PDU length that the gateway announces, as acceptor and as requestor. pynetdicom's
# default of 16,382 bytes splits a 512 KB instance into 32 PDUs, each a turn of both loops of
# the association. Memory stays bounded: the DUL thread reads one PDU at a time, and data sets
# go to the spool. An accepted association holds one buffer of one PDU (cirrus.gateway.pdu_reads).
# The associations that the gateway requests keep pynetdicom's few copies of one PDU (read,
# decoded, written).
MAX_PDU_BYTES: Final = 1_048_576


def _on_connection_open(event: Event) -> None:
    """Prepare a new connection, before its association negotiation starts.

    Turns off Nagle's algorithm, because with it every C-STORE response waits for the peer's
    delayed ACK. Unbinds pynetdicom's per-PDU log handlers, which each association binds for
    itself and which format every PDU and DIMSE message even when debug logging is off. Makes
    the association read PDUs without copying their values (``cirrus.gateway.pdu_reads``),
    decode its C-STORE requests (``cirrus.gateway.store_requests``) and encode its C-STORE
    responses itself (``cirrus.gateway.store_responses``).

    Sets the read time-out of the socket as well, which ends the DUL thread of a peer that
    stopped in the middle of a PDU (``cirrus.gateway.network_timeout``).
    """
    assoc = event.assoc
    for pdu_event, handler in _PDU_LOG_HANDLERS:
        assoc.unbind(pdu_event, handler)
    watch_network_timeout(assoc)
    read_pdus_into_one_buffer(assoc)
    receive_store_requests_directly(assoc)
    send_store_responses_directly(assoc)
    association_socket = assoc.dul.socket
    sock = association_socket.socket if association_socket is not None else None
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        # The peer has closed the connection already; the association ends on its own.
        logger.debug("TCP_NODELAY not set: %s", exc)


def _on_connection_close(event: Event) -> None:
    """End the acceptor thread of a connection that closed before its association request.

    pynetdicom 3.0.4 waits ``acse_timeout`` for the A-ASSOCIATE-RQ even after the connection
    has closed. A connection that closes after its first bytes would then keep its threads and
    its pending connection slot for that long. None on the DUL's queue is what the wait returns
    on a timeout, so the thread ends at once.
    """
    assoc = event.assoc
    if assoc.is_acceptor and assoc.requestor.primitive is None:
        # mypy infers the queue's item type only in some orders of checking modules.
        assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type, unused-ignore]


def _on_rejected(event: Event) -> None:
    """Log and audit a rejected association request."""
    assoc = event.assoc
    request = assoc.requestor.primitive
    response = assoc.acceptor.primitive
    log_keys = peer(assoc)
    called_ae = request.called_ae_title if request is not None else ""
    reason = response.reason_str if response is not None else "unknown"
    logger.warning(
        "association from %s at %s to %r rejected: %s",
        log_keys["calling_ae"],
        log_keys["peer"],
        called_ae,
        reason,
        extra={**log_keys, "called_ae": called_ae, "reason": reason},
    )
    ae = assoc.ae
    if isinstance(ae, GatewayAE):
        for audit_event in rejected_events(assoc, ae.context.config, reason):
            ae.context.audit.submit(audit_event)


class _SupportedContext(PresentationContext):
    """A supported presentation context whose deep copy shares its UIDs.

    pynetdicom 3.0.4 deep-copies the server's supported contexts for every association that
    it accepts (``RequestHandler._create_association``). For the gateway's 170 storage SOP
    classes with 16 transfer syntaxes each, ``deepcopy`` built and validated each of the 2,720
    UIDs again. That took 61 ms of thread CPU time per association, against 1.5 ms for this
    copy (timeit on a 2-vCPU machine at load average 10). A UID is an immutable ``str``, so
    only the list of transfer syntaxes needs a copy.
    The other attributes of ``PresentationContext`` (pynetdicom 3.0.4) are numbers, booleans,
    None and the abstract syntax UID.
    """

    @classmethod
    def from_context(cls, context: PresentationContext) -> _SupportedContext:
        supported = cls()
        supported.__dict__.update(vars(context))
        supported._transfer_syntax = list(context._transfer_syntax)
        return supported

    def __deepcopy__(self, memo: dict[int, Any]) -> _SupportedContext:
        return _SupportedContext.from_context(self)


class GatewayAE(AE):
    """The gateway's application entity, whose servers all run the same services.

    ``make_server`` binds the services' event handlers to every server, so ``start_server``
    needs no ``evt_handlers``.
    """

    def __init__(
        self,
        context: GatewayContext,
        services: list[DimseService],
        limits: GatewayLimits | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        super().__init__(context.config.ae_title)
        self.context = context
        self.dimse_services = services
        self.limits = limits if limits is not None else GatewayLimits()
        # Shared by the plain and the TLS listener.
        self.pending_connections = PendingConnections(self.limits.max_pending_connections)
        # Found through ``assoc.ae`` by cirrus.gateway.spool and cirrus.gateway.metrics.
        self.spool = Spool(self.limits)
        self.metrics = metrics
        # Set by ``Gateway.start`` for the worker processes of ``cirrus.gateway.workers``,
        # whose listening sockets all bind one port.
        self.reuse_port = False

    @property
    def active_associations(self) -> list[Association]:
        """Return the AE's associations, without connections still waiting for their request.

        pynetdicom counts the acceptors in this list against ``maximum_associations`` when it
        negotiates an association, so an idle connection takes no association slot.
        ``PendingConnections`` bounds those connections instead.
        """
        return [
            assoc
            for assoc in super().active_associations
            if not (assoc.is_acceptor and assoc.requestor.primitive is None)
        ]

    def _on_requested(self, event: Event) -> None:
        """Free the pending connection slot of a connection whose A-ASSOCIATE-RQ arrived."""
        association_socket = event.assoc.dul.socket
        if association_socket is not None and association_socket.socket is not None:
            self.pending_connections.discard(association_socket.socket)

    def event_handlers(self) -> list[EventHandlerType]:
        handlers: list[EventHandlerType] = [
            (evt.EVT_CONN_OPEN, _on_connection_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_CONN_CLOSE, _on_connection_close),
            (evt.EVT_REJECTED, _on_rejected),
            (evt.EVT_CONN_CLOSE, self._on_association_end),
        ]
        if self.metrics is not None:
            handlers.extend(self.metrics.event_handlers())
        for service in self.dimse_services:
            handlers.extend(service.event_handlers())
        return handlers

    def _on_association_end(self, event: Event) -> None:
        self.spool.discard(event.assoc)

    def make_server(
        self,
        address: tuple[str, int] | tuple[str, int, int, int],
        ae_title: str | None = None,
        contexts: list[PresentationContext] | None = None,
        ssl_context: SSLContext | None = None,
        evt_handlers: list[EventHandlerType] | None = None,
        server_class: type[_ServerT] | None = None,
        **kwargs: Any,
    ) -> _ServerT | ThreadedAssociationServer:
        handlers = [*self.event_handlers(), *(evt_handlers or [])]
        contexts = [
            _SupportedContext.from_context(context)
            for context in contexts or self.supported_contexts
        ]
        if server_class is ThreadedAssociationServer:
            # Both bound the connections that wait for their request. The TLS one also runs
            # each TLS handshake in the connection's thread instead of the accept loop.
            if ssl_context is not None:
                server_class = TLSAssociationServer  # type: ignore[assignment]
            else:
                server_class = GatewayAssociationServer  # type: ignore[assignment]
        if self.reuse_port and server_class is not None:
            server_class = with_reuse_port(server_class)
        server = super().make_server(
            address,
            ae_title=ae_title,
            contexts=contexts,
            ssl_context=ssl_context,
            evt_handlers=handlers,
            server_class=server_class,
            **kwargs,
        )
        if isinstance(server, GatewayAssociationServer):
            # Set before ``start_server`` starts the accept loop.
            server.pending = self.pending_connections
        return server


def dimse_services(context: GatewayContext) -> list[DimseService]:
    """Return the gateway's DIMSE services other than Verification, which pynetdicom answers."""
    return [
        StoreService(context),
        FindService(context),
        CommitmentService(context),
        RetrieveService(context),
    ]


def build_ae(
    services: Services,
    config: AEConfig,
    limits: GatewayLimits | None = None,
    metrics: GatewayMetrics | None = None,
    tls: TLSConfig | None = None,
) -> GatewayAE:
    """Build the AE: Verification and the contexts of every service in ``dimse_services``.

    Association requests whose Called AE Title is not ``config.ae_title`` are rejected with
    A-ASSOCIATE-RJ, reason "called AE title not recognised" (PS3.8 9.3.4). Unless the
    configuration is open, so are calling AE titles that it does not list ("calling AE title
    not recognised"). ``limits`` bound the associations and the spooled data sets, and
    ``metrics`` counts what the AE does. ``tls`` is the TLS configuration that services use
    for outgoing associations.
    """
    install_spooling()
    install_event_waits()
    context = GatewayContext(services, config, tls)
    context.audit.failures = metrics
    ae = GatewayAE(context, dimse_services(context), limits, metrics)
    ae.require_called_aet = True
    if not config.open:
        ae.require_calling_aet = config.known_callers()
    ae.maximum_associations = ae.limits.max_associations
    # A new connection takes one of the pending connection slots of
    # ``cirrus.gateway.connections`` until its request starts or the ACSE time-out ends.
    ae.acse_timeout = ae.limits.acse_timeout_seconds
    ae.network_timeout = ae.limits.network_timeout_seconds
    ae.maximum_pdu_size = MAX_PDU_BYTES
    ae.add_supported_context(Verification)
    for service in ae.dimse_services:
        service.add_contexts(ae)
    return ae


class Gateway:
    """A running gateway server, started by ``Gateway.start``."""

    def __init__(
        self,
        ae: GatewayAE,
        server: ThreadedAssociationServer,
        tls_server: ThreadedAssociationServer | None = None,
    ) -> None:
        self.ae = ae
        self._server = server
        self._tls_server = tls_server
        # Set once shutdown begins; the health check then returns 503.
        self.draining = False
        self._health: HealthServer | None = None

    @classmethod
    def start(
        cls,
        services: Services,
        config: AEConfig,
        host: str,
        port: int,
        tls: TLSConfig | None = None,
        *,
        limits: GatewayLimits | None = None,
        metrics: GatewayMetrics | None = None,
        health_address: tuple[str, int] | None = None,
        reuse_port: bool = False,
    ) -> Gateway:
        """Start serving on ``host`` and ``port`` in a background thread (port 0: any free one).

        With ``tls``, a second listener on ``tls.port`` serves the same services over TLS.
        Raises ``TLSConfigError`` before listening when a TLS file is unusable. ``metrics``
        starts flushing at once, and with ``health_address`` (host, port) the HTTP health
        check (``cirrus.gateway.health``) listens there. With ``reuse_port``, the listeners set
        SO_REUSEPORT, so that other processes can listen on the same ports.
        """
        ssl_context = tls.server_context() if tls is not None else None
        ae = build_ae(services, config, limits, metrics, tls)
        ae.reuse_port = reuse_port
        if config.open:
            logger.warning(
                "gateway %s is open: it accepts every calling AE title, for site %s",
                config.ae_title,
                config.default_site,
                extra={"ae_title": config.ae_title, "site": config.default_site},
            )
        server = ae.start_server((host, port), block=False)
        assert server is not None  # start_server returns the server when block is False
        tls_server = None
        if tls is not None:
            try:
                tls_server = ae.start_server((host, tls.port), block=False, ssl_context=ssl_context)
            except BaseException:
                server.shutdown()
                raise
        gateway = cls(ae, server, tls_server)
        try:
            gateway._start_operations(health_address)
        except BaseException:
            gateway.shutdown()
            raise
        logger.info(
            "gateway %s listening on %s:%d",
            config.ae_title,
            gateway.host,
            gateway.port,
            extra={"ae_title": config.ae_title, "host": gateway.host, "port": gateway.port},
        )
        if gateway.tls_port is not None:
            assert tls is not None  # tls_port is set only with a TLS listener
            logger.info(
                "gateway %s listening for TLS on %s:%d, client certificates %s",
                config.ae_title,
                gateway.host,
                gateway.tls_port,
                _client_certificates(tls),
                extra={"ae_title": config.ae_title, "tls_port": gateway.tls_port},
            )
        return gateway

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The bound port, read back from the listening socket."""
        return int(self._server.server_address[1])

    @property
    def tls_port(self) -> int | None:
        """The bound port of the TLS listener, or None without one."""
        if self._tls_server is None:
            return None
        return int(self._tls_server.server_address[1])

    @property
    def health_port(self) -> int | None:
        return self._health.port if self._health is not None else None

    def active_associations(self) -> list[Association]:
        return [assoc for assoc in self.ae.active_associations if assoc.is_acceptor]

    def health_state(self) -> HealthState:
        return HealthState(serving=not self.draining, associations=len(self.active_associations()))

    def _start_operations(self, health_address: tuple[str, int] | None) -> None:
        metrics = self.ae.metrics
        if metrics is not None:
            metrics.gauges = self._gauges
            metrics.start()
        if health_address is not None:
            self._health = HealthServer(*health_address, self.health_state)
            self._health.start()

    def _gauges(self) -> dict[str, int]:
        return {
            "ActiveAssociations": len(self.active_associations()),
            "SpoolBytes": self.ae.spool.used_bytes,
        }

    def shutdown(self, grace_seconds: float = 0.0) -> None:
        """Stop accepting associations, let open ones finish for ``grace_seconds``, abort the rest.

        An association aborted during a C-STORE gets no response, so its sender resends the
        instance, and the resent object replaces the first under the same key. Storage
        Commitment reports that are still pending get what remains of ``grace_seconds``. The
        queued audit records are written next (``cirrus.gateway.audit``). The health check
        returns 503 from the start of the shutdown until it stops at the end, after the last
        flush of the metrics.
        """
        self.draining = True
        self._server.shutdown()
        if self._tls_server is not None:
            self._tls_server.shutdown()
        self.ae.pending_connections.close()
        deadline = time.monotonic() + grace_seconds
        while self.active_associations() and time.monotonic() < deadline:
            time.sleep(0.05)
        for service in self.ae.dimse_services:
            if isinstance(service, CommitmentService):
                service.drain(max(0.0, deadline - time.monotonic()))
        remaining = self.active_associations()
        if remaining:
            logger.warning(
                "aborting %d associations at shutdown",
                len(remaining),
                extra={"count": len(remaining)},
            )
        self.ae.shutdown()
        deadline = time.monotonic() + _ABORT_WAIT_SECONDS
        for assoc in remaining:
            assoc.join(timeout=max(0.0, deadline - time.monotonic()))
        # After the associations, whose ends queue their records, and before the metrics,
        # which count the records that fail.
        self.ae.context.audit.close()
        if self.ae.metrics is not None:
            self.ae.metrics.stop()
        if self._health is not None:
            self._health.stop()
        self.ae.spool.remove()
        logger.info("gateway on port %d stopped", self.port, extra={"port": self.port})

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def _client_certificates(tls: TLSConfig) -> str:
    if tls.require_client_certificate:
        return "required"
    return "verified when sent" if tls.ca_file is not None else "not requested"


def run_gateway(
    settings: Settings,
    config: AEConfig,
    host: str,
    port: int,
    tls: TLSConfig | None = None,
    *,
    limits: GatewayLimits | None = None,
    metrics: GatewayMetrics | None = None,
    health_address: tuple[str, int] | None = None,
    grace_seconds: float = SHUTDOWN_GRACE_SECONDS,
    services: Services | None = None,
    reuse_port: bool = False,
    on_ready: Callable[[Gateway], None] | None = None,
) -> None:
    """Serve the gateway until SIGTERM or SIGINT, then drain it for ``grace_seconds``.

    Must run in the main thread, which alone can install signal handlers. ``services`` are the
    adapters, by default those of ``settings``. ``on_ready`` is called once the gateway
    listens. The other keyword arguments are those of ``Gateway.start``.
    """
    services = services if services is not None else Services(settings)
    # pynetdicom logs every association and message at INFO, which repeats the gateway's log.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    received: list[str] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only append, which takes no lock. The handler runs in the main thread between two
        # bytecodes, so taking a lock that the interrupted code holds would deadlock: logging's,
        # or that of a threading.Event that the main thread is waiting on.
        received.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        gateway = Gateway.start(
            services,
            config,
            host,
            port,
            tls,
            limits=limits,
            metrics=metrics,
            health_address=health_address,
            reuse_port=reuse_port,
        )
        try:
            if on_ready is not None:
                on_ready(gateway)
            while not received:
                time.sleep(_SIGNAL_POLL_SECONDS)
            name = received[0]
            logger.info("%s received, stopping the gateway", name, extra={"signal": name})
        finally:
            gateway.shutdown(grace_seconds=grace_seconds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
