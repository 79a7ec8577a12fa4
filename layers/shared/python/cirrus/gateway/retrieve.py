"""The Query/Retrieve C-MOVE and C-GET SCP: archived instances sent as C-STORE sub-operations.

Patient Root and Study Root, MOVE and GET, at every level (``cirrus.gateway.selection``). A
request selects instances of the caller's site from the index. Each instance is then read from
S3, one at a time, and sent. C-MOVE sends over a new association to a destination of the
caller's site (``AEConfig.destination``), and C-GET over the requesting association. After each
sub-operation a Pending response carries the remaining, completed, failed and warning counts.
The final response is Success, Warning 0xB000 when some sub-operations failed or warned, or
0xA702 when all failed; the last two list the failed instances in Failed SOP Instance UID List
(0008,0058). A C-CANCEL stops the sub-operations with 0xFE00 and the counts so far. Each request
gets one audit record, after its final response, naming the instances sent.

pynetdicom 3.0.4 runs C-MOVE and C-GET through generator handlers that can return no failure
before the sub-operations other than 0xA801 (its own C5xx statuses stand for an exception), and
that count a failure of the gateway's own without the instance's UID. So this module implements
the two operations itself: ``RetrieveServiceClass`` takes the C-MOVE and C-GET requests of a
``GatewayAE`` and leaves C-FIND, and every other AE, to pynetdicom's Query/Retrieve class.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Final, cast

import pynetdicom.association
from botocore.exceptions import BotoCoreError
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from pynamodb.exceptions import PynamoDBException
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import QueryRetrieveServiceClass, ServiceClass
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from cirrus.audit import AuditAction, AuditEvent, AuditOutcome, StudyAccess
from cirrus.dicom.instance import DECODING_ERRORS
from cirrus.dicom.transcode import CODEC_ERRORS
from cirrus.errors import CirrusError
from cirrus.gateway.aeconfig import Destination
from cirrus.gateway.audit import actor_of, outcome_of_status, site_of
from cirrus.gateway.context import GatewayContext, peer
from cirrus.gateway.encoded import IncompleteDataSetError, check_complete
from cirrus.gateway.responses import return_responses_to_sender
from cirrus.gateway.selection import (
    PATIENT_ROOT,
    STUDY_ROOT,
    IdentifierError,
    RetrieveKeys,
    parse_identifier,
    select_instances,
)
from cirrus.gateway.status import NOT_AUTHORIZED, error_comment
from cirrus.gateway.store import STORAGE_TRANSFER_SYNTAXES
from cirrus.gateway.suboperations import (
    SubOperationError,
    accepted_syntaxes,
    load_for_sending,
    proposed_contexts,
)
from cirrus.index.reader import InstanceRef

logger = logging.getLogger(__name__)

_install_lock = threading.Lock()

# Response statuses of C-MOVE and C-GET (PS3.4 C.4.2.1.5 and C.4.3.1.4).
SUCCESS: Final = 0x0000
PENDING: Final = 0xFF00
CANCEL: Final = 0xFE00
SUBOPERATIONS_WARNING: Final = 0xB000
UNABLE_TO_CALCULATE_MATCHES: Final = 0xA701
UNABLE_TO_PERFORM_SUBOPERATIONS: Final = 0xA702
MOVE_DESTINATION_UNKNOWN: Final = 0xA801
IDENTIFIER_DOES_NOT_MATCH: Final = 0xA900
# Failed: Unable to process (Cxxx). The identifier cannot be decoded.
UNABLE_TO_DECODE_IDENTIFIER: Final = 0xC000
# Also Unable to process: the destination needs TLS, and the gateway has no TLS configuration.
DESTINATION_NOT_SUPPORTED: Final = 0xC001
# Also Unable to process: an error that the gateway did not expect.
INTERNAL_ERROR: Final = 0xC002

# Number of Remaining, Completed, Failed and Warning Sub-operations have VR US (PS3.7 E.1).
MAX_SUBOPERATIONS: Final = 65535

MODELS: Final[dict[str, str]] = {
    PatientRootQueryRetrieveInformationModelMove: PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelMove: STUDY_ROOT,
    PatientRootQueryRetrieveInformationModelGet: PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelGet: STUDY_ROOT,
}
# Transfer syntaxes of the C-MOVE and C-GET requests themselves (the identifiers).
RETRIEVE_TRANSFER_SYNTAXES: Final = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")

_PDU_LOG_HANDLERS: Final = (
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
)


class RetrieveService:
    """C-MOVE and C-GET of archived instances, for callers with the ``retrieve`` permission."""

    def __init__(self, context: GatewayContext) -> None:
        self._context = context
        install_service_class()

    def add_contexts(self, ae: AE) -> None:
        """Add the four retrieve models, and the SCP role for C-GET on every storage context."""
        for sop_class in MODELS:
            ae.add_supported_context(sop_class, list(RETRIEVE_TRANSFER_SYNTAXES))
        # A C-GET requester proposes the storage SOP classes it accepts with itself as SCP
        # (SCP/SCU Role Selection, PS3.7 D.3.3.4). The syntaxes stay those of the Storage SCP.
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None  # every predefined context has one
            ae.add_supported_context(
                context.abstract_syntax,
                list(STORAGE_TRANSFER_SYNTAXES),
                scu_role=True,
                scp_role=True,
            )

    def event_handlers(self) -> list[EventHandlerType]:
        # The requests arrive through RetrieveServiceClass, not through events.
        return []

    def serve(self, operation: RetrieveOperation) -> None:
        """Run one C-MOVE or C-GET to its final response.

        Catches every exception, because pynetdicom would otherwise end the association without
        a response. An unexpected one is logged and answered with 0xC002.
        """
        try:
            self._serve(operation)
        except Exception:
            logger.exception(
                "%s failed with an unexpected error", operation.name, extra=operation.log_keys()
            )
            if operation.assoc.is_established and not operation.finished:
                operation.fail(INTERNAL_ERROR, "internal error in the archive; retry later")
        self._audit(operation)

    def _audit(self, operation: RetrieveOperation) -> None:
        """Queue the audit record of one request: the instances sent and the final status."""
        context = self._context
        status = operation.status
        if status is None:
            # The requester ended the association before the final response.
            outcome, detail = AuditOutcome.MINOR_FAILURE, f"{operation.name} ended by the requester"
        else:
            outcome = outcome_of_status(status, _REQUESTER_ERRORS)
            detail = None
            if outcome is not AuditOutcome.SUCCESS:
                counts = operation.counts
                detail = (
                    f"{operation.name} ended with status 0x{status:04X}: {counts.completed} "
                    f"completed, {counts.failed} failed, {counts.warning} warning"
                )
        destination = None
        if isinstance(operation.request, C_MOVE):
            destination = str(operation.request.MoveDestination or "").strip() or None
        context.audit.submit(
            AuditEvent(
                action=AuditAction.RETRIEVE,
                outcome=outcome,
                actor=actor_of(operation.assoc),
                site=site_of(context.config, operation.assoc),
                request_id=(
                    f"{context.audit.association_id(operation.assoc)}-{operation.request.MessageID}"
                ),
                transport="DIMSE",
                studies=_studies_sent(operation.counts.sent),
                detail=detail,
                called_ae_title=context.config.ae_title,
                move_destination=destination,
            )
        )

    def _serve(self, operation: RetrieveOperation) -> None:
        caller = self._context.caller(operation.assoc)
        if not caller.may("retrieve"):
            operation.fail(NOT_AUTHORIZED, "this calling AE title may not retrieve")
            return
        keys = self._keys(operation)
        if keys is None:
            return
        destination = None
        if isinstance(operation.request, C_MOVE):
            destination = self._destination(operation, caller.site)
            if destination is None:
                return
        refs = self._select(operation, caller.site, keys)
        if refs is None:
            return
        operation.counts.remaining = len(refs)
        if not refs:
            operation.finish()
        elif destination is None:
            self._send_all(operation, operation.assoc, refs)
        else:
            self._move(operation, destination, refs)

    def _keys(self, operation: RetrieveOperation) -> RetrieveKeys | None:
        """Decode and check the identifier, or send the failure and return None."""
        try:
            identifier = operation.identifier()
        except IncompleteDataSetError as exc:
            operation.fail(UNABLE_TO_DECODE_IDENTIFIER, f"identifier could not be decoded: {exc}")
            return None
        except (InvalidDicomError, EOFError, struct.error, *DECODING_ERRORS) as exc:
            operation.fail(
                UNABLE_TO_DECODE_IDENTIFIER,
                f"identifier could not be decoded: {type(exc).__name__}",
            )
            return None
        try:
            return parse_identifier(identifier, MODELS[str(operation.context.abstract_syntax)])
        except IdentifierError as exc:
            operation.fail(IDENTIFIER_DOES_NOT_MATCH, str(exc), offending_element=exc.tag)
            return None

    def _destination(self, operation: RetrieveOperation, site: str) -> Destination | None:
        """Return the Move Destination of ``site``, or send the failure and return None."""
        title = str(cast(C_MOVE, operation.request).MoveDestination or "").strip()
        destination = self._context.config.destination(site, title)
        if destination is None:
            operation.fail(MOVE_DESTINATION_UNKNOWN, f"move destination {title} is not configured")
            return None
        if destination.tls and self._context.tls is None:
            operation.fail(
                DESTINATION_NOT_SUPPORTED,
                f"move destination {title} requires TLS; the gateway has no TLS configuration",
            )
            return None
        return destination

    def _select(
        self, operation: RetrieveOperation, site: str, keys: RetrieveKeys
    ) -> list[InstanceRef] | None:
        """Return the matches, or send the failure and return None when they cannot be counted."""
        try:
            refs = select_instances(self._context.services.index_reader, site, keys)
        except (PynamoDBException, BotoCoreError, CirrusError) as exc:
            logger.error(
                "%s could not read the index: %s",
                operation.name,
                exc,
                extra={**operation.log_keys(), "reason": str(exc)},
            )
            operation.fail(UNABLE_TO_CALCULATE_MATCHES, "the archive index is unavailable")
            return None
        if len(refs) > MAX_SUBOPERATIONS:
            operation.fail(
                UNABLE_TO_CALCULATE_MATCHES,
                f"{len(refs)} instances match, more than {MAX_SUBOPERATIONS}; retrieve less",
            )
            return None
        return refs

    def _move(
        self, operation: RetrieveOperation, destination: Destination, refs: Sequence[InstanceRef]
    ) -> None:
        tls_args = None
        if destination.tls:
            assert self._context.tls is not None  # _destination checked it
            tls_args = (self._context.tls.client_context(), destination.host)
        with _destination_association(operation, destination, refs, tls_args) as store_assoc:
            if store_assoc is None:
                title = str(cast(C_MOVE, operation.request).MoveDestination or "").strip()
                operation.fail_all(
                    refs,
                    UNABLE_TO_PERFORM_SUBOPERATIONS,
                    f"could not associate with move destination {title}",
                    log_reason=(
                        f"move destination {title} at {destination.host}:{destination.port} "
                        "rejected the association or could not be reached"
                    ),
                )
                return
            self._send_all(operation, store_assoc, refs)

    def _send_all(
        self, operation: RetrieveOperation, store_assoc: Association, refs: Sequence[InstanceRef]
    ) -> None:
        accepted = accepted_syntaxes(store_assoc.accepted_contexts)
        for index, ref in enumerate(refs):
            if operation.cancelled():
                operation.cancel()
                return
            if not operation.assoc.is_established:
                logger.warning(
                    "%s ended by the requester after %d sub-operations",
                    operation.name,
                    index,
                    extra=operation.log_keys(),
                )
                return
            if not store_assoc.is_established:
                for remaining in refs[index:]:
                    operation.counts.failed_uids.append(remaining.sop)
                operation.counts.failed += len(refs) - index
                operation.counts.remaining = 0
                logger.warning(
                    "%s: the destination ended the association, %d sub-operations failed",
                    operation.name,
                    len(refs) - index,
                    extra=operation.log_keys(),
                )
                break
            self._send_one(operation, store_assoc, ref, accepted, message_offset=index + 1)
            operation.pending()
        operation.finish()

    def _send_one(
        self,
        operation: RetrieveOperation,
        store_assoc: Association,
        ref: InstanceRef,
        accepted: Mapping[str, Sequence[UID]],
        message_offset: int,
    ) -> None:
        counts = operation.counts
        counts.remaining -= 1
        try:
            ds = load_for_sending(self._context.services.store, ref, accepted)
        except (SubOperationError, CirrusError) as exc:
            counts.record_failure(ref)
            _log_suboperation_failure(operation, ref, str(exc))
            return
        except (InvalidDicomError, EOFError, struct.error, *CODEC_ERRORS) as exc:
            # A stored object that pydicom cannot parse fails alone, not the whole retrieve.
            counts.record_failure(ref)
            _log_suboperation_failure(operation, ref, f"unreadable: {type(exc).__name__}")
            return
        originator: dict[str, Any] = {}
        if isinstance(operation.request, C_MOVE):
            originator = {
                "originator_aet": operation.assoc.requestor.ae_title,
                "originator_id": operation.request.MessageID,
            }
        message_id = (int(operation.request.MessageID or 0) + message_offset) % 65536
        try:
            status_ds = store_assoc.send_c_store(ds, msg_id=message_id, **originator)
        except (ValueError, AttributeError, RuntimeError) as exc:
            # No context after all, an encoding failure, or the association ended meanwhile.
            counts.record_failure(ref)
            _log_suboperation_failure(operation, ref, f"C-STORE not sent: {exc}")
            return
        status = int(status_ds.get("Status", -1))
        category = STORAGE_SERVICE_CLASS_STATUS.get(status, ("Failure",))[0]
        if category == "Success":
            counts.completed += 1
            counts.sent.append(ref)
        elif category == "Warning":
            counts.warning += 1
            counts.sent.append(ref)
        else:
            counts.record_failure(ref)
            reason = "no response" if status < 0 else f"status 0x{status:04X}"
            _log_suboperation_failure(operation, ref, f"C-STORE failed with {reason}")


@dataclass
class SubOperationCounts:
    remaining: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    # The instances that the destination stored, with Success or a Warning.
    sent: list[InstanceRef] = field(default_factory=list)

    def record_failure(self, ref: InstanceRef) -> None:
        self.failed += 1
        self.failed_uids.append(ref.sop)


@dataclass
class RetrieveOperation:
    """One C-MOVE or C-GET request and the responses sent for it so far."""

    assoc: Association
    request: C_MOVE | C_GET
    context: PresentationContext
    is_cancelled: Callable[[int], bool]
    counts: SubOperationCounts = field(default_factory=SubOperationCounts)
    finished: bool = False
    # The status of the final response, once it is sent.
    status: int | None = None

    @property
    def name(self) -> str:
        return "C-MOVE" if isinstance(self.request, C_MOVE) else "C-GET"

    def log_keys(self) -> dict[str, Any]:
        keys = {**peer(self.assoc), "operation": self.name, "message_id": self.request.MessageID}
        if isinstance(self.request, C_MOVE):
            keys["move_destination"] = str(self.request.MoveDestination or "").strip()
        return keys

    def identifier(self) -> Dataset:
        """Decode the identifier; raise ``IncompleteDataSetError`` when it is truncated."""
        syntax = self.context.transfer_syntax[0]
        check_complete(cast(BytesIO, self.request.Identifier), syntax)
        ds = decode(
            cast(BytesIO, self.request.Identifier),
            syntax.is_implicit_VR,
            syntax.is_little_endian,
            syntax.is_deflated,
        )
        # Reading every element here makes a malformed identifier fail now, not while matching.
        for _ in ds:
            pass
        return ds

    def cancelled(self) -> bool:
        return self.is_cancelled(int(self.request.MessageID or 0))

    def pending(self) -> None:
        if self.counts.remaining > 0:
            self._send(self._response(PENDING, with_remaining=True))

    def cancel(self) -> None:
        response = self._response(CANCEL, with_remaining=True)
        response.Identifier = self._failed_list()
        self._send(response)
        self._log_end(CANCEL)

    def finish(self) -> None:
        counts = self.counts
        if not counts.failed and not counts.warning:
            status = SUCCESS
        elif counts.failed and not counts.completed and not counts.warning:
            status = UNABLE_TO_PERFORM_SUBOPERATIONS
        else:
            status = SUBOPERATIONS_WARNING
        response = self._response(status, with_remaining=False)
        if status != SUCCESS:
            response.Identifier = self._failed_list()
        self._send(response)
        self._log_end(status)

    def fail(self, status: int, reason: str, offending_element: int | None = None) -> None:
        """Send a failure response before any sub-operation, with ``reason`` as Error Comment."""
        response = self._response(status, with_remaining=False, counts=False)
        response.ErrorComment = error_comment(reason)  # type: ignore[assignment]
        if offending_element is not None:
            response.OffendingElement = [offending_element]  # type: ignore[assignment]
        self._send(response)
        level = logging.WARNING if status in _REQUESTER_ERRORS else logging.ERROR
        logger.log(
            level,
            "%s rejected with status 0x%04X: %s",
            self.name,
            status,
            reason,
            extra={**self.log_keys(), "status": f"0x{status:04X}", "reason": reason},
        )

    def fail_all(
        self, refs: Sequence[InstanceRef], status: int, reason: str, log_reason: str
    ) -> None:
        """Count every selected instance as failed and send the final ``status``.

        ``reason`` becomes the Error Comment, and ``log_reason`` the logged reason.
        """
        self.counts = SubOperationCounts(failed=len(refs), failed_uids=[ref.sop for ref in refs])
        response = self._response(status, with_remaining=False)
        response.ErrorComment = error_comment(reason)  # type: ignore[assignment]
        response.Identifier = self._failed_list()
        self._send(response)
        logger.error(
            "%s failed: %s",
            self.name,
            log_reason,
            extra={**self.log_keys(), "status": f"0x{status:04X}", "reason": log_reason},
        )

    def _response(
        self, status: int, *, with_remaining: bool, counts: bool = True
    ) -> C_MOVE | C_GET:
        response = C_MOVE() if isinstance(self.request, C_MOVE) else C_GET()
        response.MessageIDBeingRespondedTo = self.request.MessageID
        response.AffectedSOPClassUID = self.request.AffectedSOPClassUID
        response.Status = status
        if counts:
            if with_remaining:
                response.NumberOfRemainingSuboperations = self.counts.remaining
            response.NumberOfCompletedSuboperations = self.counts.completed
            response.NumberOfFailedSuboperations = self.counts.failed
            response.NumberOfWarningSuboperations = self.counts.warning
        return response

    def _failed_list(self) -> BytesIO:
        ds = Dataset()
        ds.FailedSOPInstanceUIDList = list(self.counts.failed_uids)
        syntax = self.context.transfer_syntax[0]
        encoded = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
        return BytesIO(cast(bytes, encoded))

    def _send(self, response: C_MOVE | C_GET) -> None:
        if response.Status != PENDING:
            self.finished = True
            self.status = int(cast(int, response.Status))
        if self.assoc.is_established:
            self.assoc.dimse.send_msg(response, cast(int, self.context.context_id))

    def _log_end(self, status: int) -> None:
        counts = self.counts
        logger.info(
            "%s ended with status 0x%04X: %d completed, %d failed, %d warning",
            self.name,
            status,
            counts.completed,
            counts.failed,
            counts.warning,
            extra={
                **self.log_keys(),
                "status": f"0x{status:04X}",
                "completed": counts.completed,
                "failed": counts.failed,
                "warning": counts.warning,
            },
        )


# Statuses that blame the requester: its permissions, its identifier or its destination.
_REQUESTER_ERRORS: Final = frozenset(
    {
        NOT_AUTHORIZED,
        IDENTIFIER_DOES_NOT_MATCH,
        UNABLE_TO_DECODE_IDENTIFIER,
        MOVE_DESTINATION_UNKNOWN,
    }
)


def _studies_sent(refs: Sequence[InstanceRef]) -> tuple[StudyAccess, ...]:
    """Group the instances sent by study, with their series and SOP classes."""
    by_study: dict[str, list[InstanceRef]] = {}
    for ref in refs:
        by_study.setdefault(ref.study, []).append(ref)
    studies = []
    for study, sent in by_study.items():
        classes = [ref.sop_class_uid for ref in sent]
        counts: dict[str, int] = {}
        for sop_class in classes:
            counts[sop_class] = counts.get(sop_class, 0) + 1
        studies.append(
            StudyAccess(
                study=study,
                series=tuple(sorted({ref.series for ref in sent})),
                instances=tuple(ref.sop for ref in sent),
                sop_classes=tuple(sorted(counts.items())),
                instance_classes=tuple(classes),
            )
        )
    return tuple(studies)


@contextmanager
def _destination_association(
    operation: RetrieveOperation,
    destination: Destination,
    refs: Sequence[InstanceRef],
    tls_args: tuple[ssl.SSLContext, str] | None,
) -> Iterator[Association | None]:
    """Open the association to a C-MOVE destination, and release it at the end.

    With ``tls_args`` the association runs over TLS, and the destination's certificate must
    name ``destination.host``.
    """
    request = cast(C_MOVE, operation.request)
    ae = operation.assoc.ae
    store_assoc = ae.associate(
        destination.host,
        destination.port,
        contexts=proposed_contexts(refs),
        ae_title=str(request.MoveDestination).strip(),
        max_pdu=ae.maximum_pdu_size,
        tls_args=tls_args,
        evt_handlers=[(evt.EVT_CONN_OPEN, _disable_nagle)],
    )
    if not store_assoc.is_established:
        yield None
        return
    for pdu_event, handler in _PDU_LOG_HANDLERS:
        store_assoc.unbind(pdu_event, handler)
    return_responses_to_sender(store_assoc)
    try:
        yield store_assoc
    finally:
        if store_assoc.is_established:
            store_assoc.release()


def _disable_nagle(event: Event) -> None:
    """Turn off Nagle's algorithm, which otherwise delays each C-STORE until the peer's ACK."""
    association_socket = event.assoc.dul.socket
    sock = association_socket.socket if association_socket is not None else None
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        # The connection has closed already; the association fails on its own.
        logger.debug("TCP_NODELAY not set: %s", exc)


def _log_suboperation_failure(operation: RetrieveOperation, ref: InstanceRef, reason: str) -> None:
    logger.warning(
        "%s sub-operation for %s failed: %s",
        operation.name,
        ref.sop,
        reason,
        extra={**operation.log_keys(), "sop_instance_uid": ref.sop, "reason": reason},
    )


class RetrieveServiceClass(QueryRetrieveServiceClass):
    """pynetdicom's Query/Retrieve class, with C-MOVE and C-GET of a ``GatewayAE`` replaced."""

    def SCP(self, req: Any, context: PresentationContext) -> None:
        service = _retrieve_service(self.assoc)
        if (
            service is not None
            and isinstance(req, (C_MOVE, C_GET))
            and str(context.abstract_syntax) in MODELS
        ):
            service.serve(RetrieveOperation(self.assoc, req, context, self.is_cancelled))
            return
        super().SCP(req, context)


def _retrieve_service(assoc: Association) -> RetrieveService | None:
    for service in getattr(assoc.ae, "dimse_services", ()):
        if isinstance(service, RetrieveService):
            return service
    return None


def install_service_class() -> None:
    """Make pynetdicom's associations use ``RetrieveServiceClass`` for Query/Retrieve requests.

    pynetdicom 3.0.4 has no setting for the class that serves a SOP class: every association
    calls ``pynetdicom.association.uid_to_service_class``, which this wraps once per process.
    The wrapper changes nothing for AEs without a ``RetrieveService``.
    """
    with _install_lock:
        current: Callable[[str], type[ServiceClass]] = getattr(  # noqa: B009
            pynetdicom.association, "uid_to_service_class"
        )
        if getattr(current, "routes_retrieve", False):
            return

        def route(uid: str) -> type[ServiceClass]:
            service_class = current(uid)
            if service_class is QueryRetrieveServiceClass:
                return RetrieveServiceClass
            return service_class

        route.routes_retrieve = True  # type: ignore[attr-defined]
        setattr(pynetdicom.association, "uid_to_service_class", route)  # noqa: B010
