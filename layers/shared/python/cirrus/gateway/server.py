"""The DICOM gateway: a Verification and Storage SCP that writes every instance to the archive.

A C-STORE request gets the Success status only once ``archive_instance`` has returned, that is
once S3 has acknowledged the object. The data set is stored as received, without decoding it,
behind the File Meta Information that pynetdicom builds from the request.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass
from ssl import SSLContext
from types import FrameType
from typing import Any, Final, TypeVar, cast
from weakref import WeakKeyDictionary

from pydicom.dataset import Dataset
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from cirrus.archive import archive_instance, check_instance
from cirrus.aws import AwsClients
from cirrus.config import DEFAULT_AE_TITLE, Settings
from cirrus.dicom.instance import InstanceHeader
from cirrus.errors import CirrusError
from cirrus.gateway.status import (
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH,
    StoreFailure,
    failure_for_error,
    failure_status,
    internal_failure,
    success_status,
)
from cirrus.index.claims import InstanceClaims
from cirrus.index.models import bind_index_model
from cirrus.storage.keys import validate_site
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

# Accepted for every storage SOP class, most preferred first. pynetdicom 3.0 accepts, for each
# requested presentation context, the first syntax of this list that the context proposes
# (presentation.negotiate_as_acceptor). Lossless compressed syntaxes come first, so a sender
# with compressed data sends it compressed. Syntaxes that may be lossy come last, so an
# archive preference never makes a sender compress with loss.
STORAGE_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    JPEGLSLossless,
    JPEG2000Lossless,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEGLosslessSV1,
    JPEGLossless,
    RLELossless,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEG2000,
    HTJ2K,
    JPEGLSNearLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
)

# NOTE: pynetdicom keeps each received data set in memory, and ``encoded_dataset`` copies it
# once more with the file meta, so one C-STORE needs about twice the object size. The
# gateway therefore needs up to about 2 x MAX_ASSOCIATIONS x (largest object) of memory. No
# limit on the object size is enforced: a sender of multi-gigabyte objects can exhaust memory.
# pynetdicom's STORE_RECV_CHUNKED_DATASET would spool to a temporary file, but
# ``archive_instance`` takes the object as bytes, so it would save nothing.
MAX_ASSOCIATIONS: Final = 25

# Time a new connection has to send its A-ASSOCIATE-RQ (pynetdicom's default is 30 s). An idle
# connection holds one of MAX_ASSOCIATIONS until then, so a short wait keeps a few idle
# clients from locking modalities out for long.
ACSE_TIMEOUT_SECONDS: Final = 10.0

# Time that ``run_gateway`` gives open associations to finish after SIGTERM. It must stay
# below the time the orchestrator waits before SIGKILL: on ECS the container definition's
# stopTimeout, 30 s unless set.
SHUTDOWN_GRACE_SECONDS: Final = 20.0

# Time that ``Gateway.shutdown`` waits for aborted associations to end.
_ABORT_WAIT_SECONDS: Final = 5.0

# pynetdicom's default log handlers of every PDU and DIMSE message (pynetdicom 3.0 _handlers).
_PDU_LOG_HANDLERS: Final = (
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
)

# Statuses that blame the data set. The other failures are the archive's own.
_SENDER_ERRORS: Final = frozenset({DATA_SET_DOES_NOT_MATCH, CANNOT_UNDERSTAND})

_ServerT = TypeVar("_ServerT")


class _UnparsableDataSetError(Exception):
    """The instance parser raised an error other than ``InvalidInstanceError``."""


@dataclass
class _AssociationCounts:
    stored: int = 0
    rejected: int = 0


class StoreSCP:
    """The event handlers of the gateway: C-STORE into ``store`` and association logging."""

    def __init__(self, store: ObjectStore, site: str, claims: InstanceClaims | None = None) -> None:
        self._store = store
        self._claims = claims
        self._site = validate_site(site)
        self._counts: WeakKeyDictionary[Association, _AssociationCounts] = WeakKeyDictionary()
        self._counts_lock = threading.Lock()

    def event_handlers(self) -> list[EventHandlerType]:
        return [
            (evt.EVT_CONN_OPEN, _on_connection_open),
            (evt.EVT_CONN_CLOSE, _on_connection_close),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, _on_rejected),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_STORE, self.handle_store),
        ]

    def handle_store(self, event: Event) -> Dataset:
        """Archive the instance of a C-STORE request and return the response status.

        Returns Success only after S3 has acknowledged the object. Never raises, because for an
        exception pynetdicom sends its own status without a reason. Each failure is logged
        once.
        """
        request = cast(C_STORE, event.request)
        try:
            failure = self._archive(event, request)
        except _UnparsableDataSetError as exc:
            # A retry of the same bytes fails the same way, so the status is Cannot understand.
            ids = _ids(event)
            logger.exception(
                "C-STORE of %s rejected: the parser failed", ids["sop_instance_uid"], extra=ids
            )
            failure = StoreFailure(CANNOT_UNDERSTAND, str(exc), str(exc))
        except Exception:
            # After the check, an error comes from the S3 client or from a bug in Cirrus, not
            # from the data set, so the A7xx status lets the sender retry.
            ids = _ids(event)
            logger.exception(
                "C-STORE of %s failed with an unexpected error", ids["sop_instance_uid"], extra=ids
            )
            failure = internal_failure("unexpected error")
        else:
            if failure is not None:
                _log_failure(event, failure)
        counts = self._counts_of(event.assoc)
        if failure is None:
            counts.stored += 1
            return success_status()
        counts.rejected += 1
        return failure_status(failure)

    def _archive(self, event: Event, request: C_STORE) -> StoreFailure | None:
        """Check and archive the instance. Return the failure, or None once it is stored."""
        part10 = event.encoded_dataset(include_meta=True)
        try:
            checked = check_instance(part10, self._site)
        except CirrusError as exc:
            return failure_for_error(exc)
        except Exception as exc:
            message = f"data set could not be parsed: {type(exc).__name__}"
            raise _UnparsableDataSetError(message) from exc
        mismatch = _check_request_uids(request, checked.header, checked.sop_class_uid)
        if mismatch is not None:
            return mismatch
        try:
            # archive_instance logs the one INFO line per stored instance.
            archive_instance(self._store, self._site, part10, checked, self._claims)
        except CirrusError as exc:
            return failure_for_error(exc)
        return None

    def _counts_of(self, assoc: Association) -> _AssociationCounts:
        with self._counts_lock:
            return self._counts.setdefault(assoc, _AssociationCounts())

    def _on_accepted(self, event: Event) -> None:
        assoc = event.assoc
        self._counts_of(assoc)
        peer = _peer(assoc)
        logger.info(
            "association accepted from %s at %s",
            peer["calling_ae"],
            peer["peer"],
            extra={**peer, "accepted_contexts": len(assoc.accepted_contexts)},
        )

    def _on_released(self, event: Event) -> None:
        self._log_end(event.assoc, "released", logging.INFO)

    def _on_aborted(self, event: Event) -> None:
        self._log_end(event.assoc, "aborted", logging.WARNING)

    def _log_end(self, assoc: Association, outcome: str, level: int) -> None:
        """Log the end of an accepted association, but not the abort of a rejected one."""
        with self._counts_lock:
            counts = self._counts.pop(assoc, None)
        if counts is None:
            return
        peer = _peer(assoc)
        logger.log(
            level,
            "association %s: %s at %s, %d stored, %d rejected",
            outcome,
            peer["calling_ae"],
            peer["peer"],
            counts.stored,
            counts.rejected,
            extra={**peer, "stored": counts.stored, "rejected": counts.rejected},
        )


def _check_request_uids(
    request: C_STORE, header: InstanceHeader, sop_class: str
) -> StoreFailure | None:
    """Check that the data set is the instance that the C-STORE command names."""
    sop_instance = str(header.dataset.get("SOPInstanceUID", ""))
    if sop_instance != str(request.AffectedSOPInstanceUID):
        return StoreFailure(
            DATA_SET_DOES_NOT_MATCH,
            f"SOPInstanceUID (0008,0018) {sop_instance} differs from the request's "
            f"AffectedSOPInstanceUID {request.AffectedSOPInstanceUID}",
            "SOPInstanceUID (0008,0018) differs from AffectedSOPInstanceUID",
            offending_elements=(0x00080018,),
        )
    if sop_class != str(request.AffectedSOPClassUID):
        return StoreFailure(
            DATA_SET_DOES_NOT_MATCH,
            f"SOPClassUID (0008,0016) {sop_class} differs from the request's "
            f"AffectedSOPClassUID {request.AffectedSOPClassUID}",
            "SOPClassUID (0008,0016) differs from AffectedSOPClassUID",
            offending_elements=(0x00080016,),
        )
    return None


def _log_failure(event: Event, failure: StoreFailure) -> None:
    """Log a rejected instance as a WARNING, and a failure of the archive as an ERROR."""
    status = f"0x{failure.status:04X}"
    extra = {**_ids(event), "status": status, "reason": failure.reason}
    level = logging.WARNING if failure.status in _SENDER_ERRORS else logging.ERROR
    logger.log(
        level,
        "C-STORE of %s failed with status %s: %s",
        extra["sop_instance_uid"],
        status,
        failure.reason,
        extra=extra,
    )


def _ids(event: Event) -> dict[str, Any]:
    """Return the log keys of a C-STORE request: the peer and the UIDs of the command."""
    request = cast(C_STORE, event.request)
    return {
        **_peer(event.assoc),
        "sop_instance_uid": str(request.AffectedSOPInstanceUID),
        "sop_class_uid": str(request.AffectedSOPClassUID),
    }


def _peer(assoc: Association) -> dict[str, Any]:
    requestor = assoc.requestor
    return {"calling_ae": requestor.ae_title, "peer": f"{requestor.address}:{requestor.port}"}


def _on_connection_open(event: Event) -> None:
    """Prepare a new connection, before its association negotiation starts.

    Turns off Nagle's algorithm, because with it every C-STORE response waits for the peer's
    delayed ACK. Unbinds pynetdicom's per-PDU log handlers, which each association binds for
    itself and which format every PDU and DIMSE message even when debug logging is off.
    """
    assoc = event.assoc
    for pdu_event, handler in _PDU_LOG_HANDLERS:
        assoc.unbind(pdu_event, handler)
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

    pynetdicom 3.0.4 waits ``acse_timeout`` (30 s) for the A-ASSOCIATE-RQ even after the
    connection has closed, and counts the waiting thread against ``maximum_associations``.
    Load balancer health checks, which connect and close, could then fill that limit and make
    the gateway reject modalities. None on the DUL's queue is what the wait returns on a
    timeout, so the thread ends at once.
    """
    assoc = event.assoc
    if assoc.is_acceptor and assoc.requestor.primitive is None:
        assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]


def _on_rejected(event: Event) -> None:
    assoc = event.assoc
    request = assoc.requestor.primitive
    response = assoc.acceptor.primitive
    peer = _peer(assoc)
    called_ae = request.called_ae_title if request is not None else ""
    reason = response.reason_str if response is not None else "unknown"
    logger.warning(
        "association from %s at %s to %r rejected: %s",
        peer["calling_ae"],
        peer["peer"],
        called_ae,
        reason,
        extra={**peer, "called_ae": called_ae, "reason": reason},
    )


class GatewayAE(AE):
    """The gateway's application entity, whose servers all archive into one store.

    ``make_server`` binds the gateway's event handlers to every server, so ``start_server``
    needs no ``evt_handlers``.
    """

    def __init__(self, scp: StoreSCP, ae_title: str) -> None:
        super().__init__(ae_title)
        self.scp = scp

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
        handlers = [*self.scp.event_handlers(), *(evt_handlers or [])]
        return super().make_server(
            address,
            ae_title=ae_title,
            contexts=contexts,
            ssl_context=ssl_context,
            evt_handlers=handlers,
            server_class=server_class,
            **kwargs,
        )


def build_ae(
    store: ObjectStore,
    site: str,
    ae_title: str = DEFAULT_AE_TITLE,
    claims: InstanceClaims | None = None,
) -> GatewayAE:
    """Build the AE: Verification and every SOP class of ``AllStoragePresentationContexts``.

    Association requests whose Called AE Title is not ``ae_title`` are rejected with
    A-ASSOCIATE-RJ, reason "called AE title not recognised" (PS3.8 9.3.4).
    """
    ae = GatewayAE(StoreSCP(store, site, claims), ae_title)
    ae.require_called_aet = True
    ae.maximum_associations = MAX_ASSOCIATIONS
    ae.acse_timeout = ACSE_TIMEOUT_SECONDS
    ae.add_supported_context(Verification)
    # As SCP the AE may support more than the 128 contexts that one association can request.
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None  # every predefined context has one
        ae.add_supported_context(context.abstract_syntax, list(STORAGE_TRANSFER_SYNTAXES))
    return ae


class Gateway:
    """A running gateway server, started by ``Gateway.start``."""

    def __init__(self, ae: GatewayAE, server: ThreadedAssociationServer) -> None:
        self.ae = ae
        self._server = server

    @classmethod
    def start(
        cls,
        store: ObjectStore,
        site: str,
        host: str,
        port: int,
        ae_title: str = DEFAULT_AE_TITLE,
        claims: InstanceClaims | None = None,
    ) -> Gateway:
        """Start serving on ``host`` and ``port`` in a background thread (port 0: any free one)."""
        ae = build_ae(store, site, ae_title, claims)
        server = ae.start_server((host, port), block=False)
        assert server is not None  # start_server returns the server when block is False
        gateway = cls(ae, server)
        logger.info(
            "gateway %s listening on %s:%d",
            ae_title,
            gateway.host,
            gateway.port,
            extra={"ae_title": ae_title, "host": gateway.host, "port": gateway.port},
        )
        return gateway

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The bound port, read back from the listening socket."""
        return int(self._server.server_address[1])

    def active_associations(self) -> list[Association]:
        return [assoc for assoc in self.ae.active_associations if assoc.is_acceptor]

    def shutdown(self, grace_seconds: float = 0.0) -> None:
        """Stop accepting associations, let open ones finish for ``grace_seconds``, abort the rest.

        An association aborted during a C-STORE gets no response, so its sender resends the
        instance, and the resent object replaces the first under the same key.
        """
        self._server.shutdown()
        deadline = time.monotonic() + grace_seconds
        while self.active_associations() and time.monotonic() < deadline:
            time.sleep(0.05)
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
        logger.info("gateway on port %d stopped", self.port, extra={"port": self.port})

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def run_gateway(settings: Settings, host: str, port: int, ae_title: str = DEFAULT_AE_TITLE) -> None:
    """Serve the gateway for ``settings.default_site`` until SIGTERM or SIGINT.

    Must run in the main thread, which alone can install signal handlers.
    """
    clients = AwsClients(settings)
    store = ObjectStore(clients.s3, settings.bucket, settings.kms_key_id)
    # pynetdicom logs every association and message at INFO, which repeats the gateway's log.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    stop = threading.Event()
    received: list[str] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only set the event, because logging here could wait for a lock of the interrupted code.
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        claims = InstanceClaims(bind_index_model(settings))
        gateway = Gateway.start(store, settings.default_site, host, port, ae_title, claims)
        try:
            stop.wait()
            name = received[0]
            logger.info("%s received, stopping the gateway", name, extra={"signal": name})
        finally:
            gateway.shutdown(grace_seconds=SHUTDOWN_GRACE_SECONDS)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
