"""Storage Commitment Push Model SCP (PS3.4 Annex J): the archive's promise to keep instances.

A caller sends N-ACTION (Request Storage Commitment) with a Transaction UID and the SOP
Class and Instance UIDs of the instances to commit. The gateway checks the request, sends the
N-ACTION response at once, and then checks each instance in a background thread. An
instance is committed only when its object is in S3 under the caller's site and its SOP
Class UID matches the request. The claim record of the SOP Instance UID gives the object key,
and a ranged GET of the object itself gives the SOP Class, so an instance that is indexed
but not stored is never committed.

The result goes to the caller in an N-EVENT-REPORT: event type 1 when every instance is
committed, event type 2 with the Failed SOP Sequence otherwise. The report goes on the
requesting association while it is open, between the caller's requests
(``cirrus.gateway.event_reports``). When that association has ended, the gateway opens a new
association to the caller's address in the AE configuration (its entry in the site's
``destinations``), proposing the SCP role for itself (PS3.4 J.3.3.1.2, note 1).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_ACTION
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.presentation import PresentationContextTuple
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from cirrus.errors import CirrusError, NotFoundError
from cirrus.gateway import event_reports
from cirrus.gateway.aeconfig import Caller, Destination
from cirrus.gateway.context import GatewayContext, peer
from cirrus.gateway.encoded import IncompleteDataSetError, check_complete
from cirrus.gateway.event_reports import (
    EventReport,
    ReportNotDeliveredError,
    association_end,
    channel_of,
)
from cirrus.gateway.status import NOT_AUTHORIZED, SUCCESS, error_comment
from cirrus.index.claims import CLAIM, claim_pk
from cirrus.index.models import get_record
from cirrus.ingest import read_header
from cirrus.storage.keys import is_conformant_uid

logger = logging.getLogger(__name__)

# The well-known SOP Instance of the Storage Commitment Push Model SOP Class (PS3.4 J.3.5).
STORAGE_COMMITMENT_INSTANCE: Final = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT: Final = 1  # Action Type ID of N-ACTION (PS3.4 J.3.2)
ALL_COMMITTED: Final = 1  # Event Type ID: storage commitment request successful
SOME_FAILED: Final = 2  # Event Type ID: storage commitment request complete, failures exist

# Statuses of the N-ACTION response (PS3.7 10.1.4.1.10).
NO_SUCH_SOP_INSTANCE: Final = 0x0112
INVALID_ARGUMENT_VALUE: Final = 0x0115
NO_SUCH_ACTION: Final = 0x0123
RESOURCE_LIMITATION: Final = 0x0213
# Failure Reason (0008,1197) values of the Failed SOP Sequence (PS3.4 J.3.3.1.1.3.2).
PROCESSING_FAILURE: Final = 0x0110
NO_SUCH_OBJECT_INSTANCE: Final = 0x0112
CLASS_INSTANCE_CONFLICT: Final = 0x0119

# The maximum number of instances in one request. Each costs a DynamoDB read and an S3 GET,
# so the bound keeps one request from holding a thread for long.
MAX_REFERENCED_INSTANCES: Final = 10_000

# Instances checked at once. Each check waits on DynamoDB and S3, and the boto3 clients are
# thread-safe. botocore keeps 10 connections per client by default, so more would queue.
CHECK_WORKERS: Final = 8

# Attempts to deliver a report on a new association, and the wait between them.
REPORT_ATTEMPTS: Final = 3
REPORT_RETRY_SECONDS: Final = 5.0
_TIMEOUT_SECONDS: Final = 30.0


@dataclass(frozen=True)
class Reference:
    """One instance named by a request: Referenced SOP Class and Instance UIDs."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class CommitmentResult:
    """The outcome of one transaction: the committed references and the failed ones."""

    transaction_uid: str
    committed: tuple[Reference, ...]
    failed: tuple[tuple[Reference, int], ...]

    @property
    def event_type(self) -> int:
        return SOME_FAILED if self.failed else ALL_COMMITTED

    def event_information(self, retrieve_ae_title: str) -> Dataset:
        """Build the Event Information of the N-EVENT-REPORT (PS3.4 Table J.3-2)."""
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        ds.RetrieveAETitle = retrieve_ae_title
        if self.committed:
            ds.ReferencedSOPSequence = [_reference_item(reference) for reference in self.committed]
        if self.failed:
            failed = []
            for reference, reason in self.failed:
                item = _reference_item(reference)
                item.FailureReason = reason
                failed.append(item)
            ds.FailedSOPSequence = failed
        return ds


class _RequestError(Exception):
    """A Storage Commitment request that the gateway rejects in the N-ACTION response."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class CommitmentService:
    """The Storage Commitment Push Model SCP: N-ACTION in, N-EVENT-REPORT out.

    Reports to a destination marked ``tls`` use the gateway's TLS configuration
    (``context.tls``). ``report_retry_seconds`` exists so that tests need not wait.
    """

    def __init__(
        self, context: GatewayContext, report_retry_seconds: float = REPORT_RETRY_SECONDS
    ) -> None:
        self._context = context
        self._report_retry_seconds = report_retry_seconds
        self._workers: set[threading.Thread] = set()
        self._workers_lock = threading.Lock()

    def add_contexts(self, ae: AE) -> None:
        ae.add_supported_context(StorageCommitmentPushModel)

    def event_handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_N_ACTION, self.handle_action), *event_reports.event_handlers()]

    def handle_action(self, event: Event) -> tuple[Dataset, Dataset | None]:
        """Check an N-ACTION request, start its commitment and return the response status.

        Never raises, because for an exception pynetdicom sends its own status without a
        reason. The N-EVENT-REPORT follows from a worker thread.
        """
        assoc = event.assoc
        try:
            caller = self._context.caller(assoc)
            transaction_uid, references = self._check_request(event, caller)
        except _RequestError as exc:
            logger.warning(
                "storage commitment request rejected with status 0x%04X: %s",
                exc.status,
                exc,
                extra={**peer(assoc), "status": f"0x{exc.status:04X}", "reason": str(exc)},
            )
            return _status(exc.status, str(exc)), None
        except Exception:
            logger.exception("storage commitment request failed", extra=peer(assoc))
            return _status(PROCESSING_FAILURE, "internal error in the archive"), None

        logger.info(
            "storage commitment of %d instances requested, transaction %s",
            len(references),
            transaction_uid,
            extra={**peer(assoc), "transaction_uid": transaction_uid, "count": len(references)},
        )
        context = event.context
        self._start_worker(
            lambda: self._commit_and_report(assoc, context, caller, transaction_uid, references)
        )
        return _status(SUCCESS), None

    def _check_request(self, event: Event, caller: Caller) -> tuple[str, list[Reference]]:
        """Return the Transaction UID and references of a valid request, else raise."""
        if not caller.may("store"):
            raise _RequestError(NOT_AUTHORIZED, f"calling AE title {caller.ae_title} may not store")
        request = cast(N_ACTION, event.request)
        if str(request.RequestedSOPInstanceUID) != STORAGE_COMMITMENT_INSTANCE:
            raise _RequestError(
                NO_SUCH_SOP_INSTANCE,
                f"Requested SOP Instance UID {request.RequestedSOPInstanceUID} is not "
                f"{STORAGE_COMMITMENT_INSTANCE}",
            )
        if event.action_type != REQUEST_STORAGE_COMMITMENT:
            raise _RequestError(
                NO_SUCH_ACTION,
                f"Action Type ID {event.action_type} is unknown; use {REQUEST_STORAGE_COMMITMENT}",
            )
        try:
            check_complete(request.ActionInformation, event.context.transfer_syntax)
        except IncompleteDataSetError as exc:
            raise _RequestError(
                INVALID_ARGUMENT_VALUE, f"Action Information cannot be decoded: {exc}"
            ) from exc
        try:
            information = event.action_information
            transaction_uid = str(information.get("TransactionUID", ""))
            items = information.get("ReferencedSOPSequence") or []
            references = [
                Reference(
                    str(item.get("ReferencedSOPClassUID", "")),
                    str(item.get("ReferencedSOPInstanceUID", "")),
                )
                for item in items
            ]
        except Exception as exc:
            # pydicom decodes elements when they are read, so a malformed value raises here.
            raise _RequestError(
                INVALID_ARGUMENT_VALUE, f"Action Information cannot be decoded: {exc}"
            ) from exc
        return transaction_uid, _check_references(transaction_uid, references)

    def _start_worker(self, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            finally:
                with self._workers_lock:
                    self._workers.discard(threading.current_thread())

        worker = threading.Thread(target=run, name="storage-commitment", daemon=True)
        with self._workers_lock:
            self._workers.add(worker)
        worker.start()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every pending transaction is reported; return whether all finished."""
        deadline = time.monotonic() + timeout
        while True:
            with self._workers_lock:
                workers = list(self._workers)
            if not workers:
                return True
            for worker in workers:
                worker.join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                with self._workers_lock:
                    return not self._workers

    def drain(self, timeout: float) -> None:
        """Give pending transactions ``timeout`` seconds to report, at shutdown; log the rest."""
        if self.wait_idle(timeout):
            return
        with self._workers_lock:
            pending = len(self._workers)
        logger.warning(
            "%d storage commitment reports still pending at shutdown are lost",
            pending,
            extra={"count": pending},
        )

    def _commit_and_report(
        self,
        assoc: Association,
        context: PresentationContextTuple,
        caller: Caller,
        transaction_uid: str,
        references: list[Reference],
    ) -> None:
        try:
            result = self.commit(caller.site, transaction_uid, references)
        except Exception:
            logger.exception(
                "storage commitment of transaction %s failed",
                transaction_uid,
                extra={"transaction_uid": transaction_uid},
            )
            failed = tuple((reference, PROCESSING_FAILURE) for reference in references)
            result = CommitmentResult(transaction_uid, (), failed)
        logger.info(
            "storage commitment of transaction %s: %d committed, %d failed",
            transaction_uid,
            len(result.committed),
            len(result.failed),
            extra={
                "transaction_uid": transaction_uid,
                "committed": len(result.committed),
                "failed": len(result.failed),
            },
        )
        not_sent = self._report_on(assoc, context, result)
        if not_sent is None:
            return
        self._report_on_new_association(caller, result, not_sent)

    def commit(
        self, site: str, transaction_uid: str, references: list[Reference]
    ) -> CommitmentResult:
        """Check each referenced instance in the store of ``site``, several at a time."""
        committed: list[Reference] = []
        failed: list[tuple[Reference, int]] = []
        workers = max(1, min(CHECK_WORKERS, len(references)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="commitment") as pool:
            reasons = list(pool.map(lambda ref: self._check_stored(site, ref), references))
        for reference, reason in zip(references, reasons, strict=True):
            if reason is None:
                committed.append(reference)
            else:
                failed.append((reference, reason))
        return CommitmentResult(transaction_uid, tuple(committed), tuple(failed))

    def _check_stored(self, site: str, reference: Reference) -> int | None:
        """Return None when the instance is durable in S3, else its Failure Reason."""
        services = self._context.services
        try:
            claim = get_record(
                services.index_model,
                claim_pk(site, reference.sop_instance_uid),
                CLAIM,
                consistent_read=True,
            )
            if claim is None or not claim.object_key:
                return NO_SUCH_OBJECT_INSTANCE
            header, _ = read_header(services.store, claim.object_key)
        except NotFoundError:
            # Claimed, but the PUT failed or the object was deleted.
            return NO_SUCH_OBJECT_INSTANCE
        except CirrusError as exc:
            logger.warning(
                "storage commitment check of %s failed: %s",
                reference.sop_instance_uid,
                exc,
                extra={"sop_instance_uid": reference.sop_instance_uid, "reason": str(exc)},
            )
            return PROCESSING_FAILURE
        if str(header.dataset.get("SOPInstanceUID", "")) != reference.sop_instance_uid:
            return PROCESSING_FAILURE
        if str(header.dataset.get("SOPClassUID", "")) != reference.sop_class_uid:
            return CLASS_INSTANCE_CONFLICT
        return None

    def _report_on(
        self, assoc: Association, context: PresentationContextTuple, result: CommitmentResult
    ) -> str | None:
        """Send the report on the requesting association; return why it was not delivered."""
        channel = channel_of(assoc)
        if channel is None or not assoc.is_established:
            return association_end(assoc)
        report = EventReport(
            StorageCommitmentPushModel,
            STORAGE_COMMITMENT_INSTANCE,
            result.event_type,
            result.event_information(self._context.config.ae_title),
        )
        try:
            status = channel.send(report, context)
        except ReportNotDeliveredError as exc:
            logger.warning(
                "storage commitment report of transaction %s not delivered on the requesting "
                "association: %s",
                result.transaction_uid,
                exc,
                extra={
                    **peer(assoc),
                    "transaction_uid": result.transaction_uid,
                    "reason": str(exc),
                },
            )
            return str(exc)
        _log_delivery(result, status, "the requesting association")
        return None

    def _report_on_new_association(
        self, caller: Caller, result: CommitmentResult, not_sent: str
    ) -> None:
        """Send the report on a new association, because ``not_sent`` on the requesting one."""
        destination = self._context.config.destination(caller.site, caller.ae_title)
        if destination is None:
            logger.error(
                "storage commitment report of transaction %s not sent: %s, and %s has no "
                "destination in site %s",
                result.transaction_uid,
                not_sent,
                caller.ae_title,
                caller.site,
                extra={
                    "transaction_uid": result.transaction_uid,
                    "calling_ae": caller.ae_title,
                    "reason": not_sent,
                },
            )
            return
        for attempt in range(1, REPORT_ATTEMPTS + 1):
            failure = self._send_report(caller.ae_title, destination, result)
            if failure is None:
                return
            logger.warning(
                "storage commitment report of transaction %s to %s at %s:%d failed "
                "(attempt %d of %d): %s",
                result.transaction_uid,
                caller.ae_title,
                destination.host,
                destination.port,
                attempt,
                REPORT_ATTEMPTS,
                failure,
                extra={"transaction_uid": result.transaction_uid, "reason": failure},
            )
            if attempt < REPORT_ATTEMPTS:
                time.sleep(self._report_retry_seconds)
        # TODO: pending reports live only in memory. A restart or a caller that stays
        # unreachable loses them, and the caller has to send its request again.
        logger.error(
            "storage commitment report of transaction %s abandoned",
            result.transaction_uid,
            extra={"transaction_uid": result.transaction_uid, "calling_ae": caller.ae_title},
        )

    def _send_report(
        self, ae_title: str, destination: Destination, result: CommitmentResult
    ) -> str | None:
        """Open an association to ``destination`` and send the report; return the failure."""
        ae = AE(self._context.config.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = _TIMEOUT_SECONDS
        ae.add_requested_context(StorageCommitmentPushModel)
        # The gateway is the association requestor but the Storage Commitment SCP.
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        tls_args = None
        if destination.tls:
            tls = self._context.tls
            if tls is None:
                return "the destination requires TLS but the gateway has no TLS configuration"
            tls_args = (tls.client_context(), destination.host)
        assoc = ae.associate(
            destination.host,
            destination.port,
            ae_title=ae_title,
            ext_neg=[role],
            tls_args=tls_args,
        )
        if not assoc.is_established:
            return "association not accepted"
        try:
            information = result.event_information(self._context.config.ae_title)
            status, _ = assoc.send_n_event_report(
                information, result.event_type, StorageCommitmentPushModel,
                STORAGE_COMMITMENT_INSTANCE,
            )  # fmt: skip
        finally:
            if assoc.is_established:
                assoc.release()
        if "Status" not in status:
            return "no N-EVENT-REPORT response"
        _log_delivery(result, status, f"a new association to {destination.host}")
        return None


def _check_references(transaction_uid: str, references: list[Reference]) -> list[Reference]:
    if not transaction_uid or not is_conformant_uid(transaction_uid):
        raise _RequestError(
            INVALID_ARGUMENT_VALUE,
            f"Transaction UID (0008,1195) {transaction_uid!r} is missing or not a valid UID",
        )
    if not references:
        raise _RequestError(
            INVALID_ARGUMENT_VALUE, "Referenced SOP Sequence (0008,1199) is missing or empty"
        )
    if len(references) > MAX_REFERENCED_INSTANCES:
        raise _RequestError(
            RESOURCE_LIMITATION,
            f"{len(references)} instances in one request; send at most "
            f"{MAX_REFERENCED_INSTANCES} per request",
        )
    seen: set[str] = set()
    for reference in references:
        if not reference.sop_class_uid or not reference.sop_instance_uid:
            raise _RequestError(
                INVALID_ARGUMENT_VALUE,
                "an item of Referenced SOP Sequence lacks its SOP Class or Instance UID",
            )
        # PS3.4 J.3.2.1.1.3 allows each SOP Instance once per request.
        if reference.sop_instance_uid in seen:
            raise _RequestError(
                INVALID_ARGUMENT_VALUE,
                "an instance is referenced twice; reference SOP Instance UID "
                f"{reference.sop_instance_uid} once",
            )
        seen.add(reference.sop_instance_uid)
    return references


def _reference_item(reference: Reference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = reference.sop_class_uid
    item.ReferencedSOPInstanceUID = reference.sop_instance_uid
    return item


def _status(status: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = error_comment(comment)
    return ds


def _log_delivery(result: CommitmentResult, status: Dataset, channel: str) -> None:
    code = int(status.Status)
    level = logging.INFO if code == SUCCESS else logging.WARNING
    logger.log(
        level,
        "storage commitment report of transaction %s sent on %s, response status 0x%04X",
        result.transaction_uid,
        channel,
        code,
        extra={"transaction_uid": result.transaction_uid, "status": f"0x{code:04X}"},
    )
