"""The Storage SCP of the gateway: each C-STORE request is archived before it is acknowledged.

A C-STORE request gets the Success status only once ``archive_file`` has returned, that is
once S3 has acknowledged the object. The data set is stored as received, without decoding it,
behind the File Meta Information that pynetdicom builds from the request. The site of the
instance is the site of the calling AE title.

pynetdicom writes each data set to a file of the gateway's spool (``cirrus.gateway.spool``)
as it arrives. The handler parses the header from that file with the ranged reads that
ingest uses, checks it, and uploads the file in parts, so an instance is never held in
memory whole. A data set that the spool dropped for a limit gets 0xA700 with the reason.

The instances that an association stores, and its failed requests, are collected by study.
When the association is released or aborted, each study gets one audit record
(``cirrus.gateway.audit``), written after the responses have been sent.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Final, cast
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
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType

from cirrus.archive import archive_file, check_header, check_size
from cirrus.dicom.instance import InstanceHeader
from cirrus.errors import CirrusError
from cirrus.events.rejections import cstore_rejection
from cirrus.gateway.audit import StoreTransfers
from cirrus.gateway.context import GatewayContext, peer
from cirrus.gateway.metrics import metrics_of
from cirrus.gateway.network_timeout import network_timed_out
from cirrus.gateway.spool import SpoolFile, read_spool_file_header, spool_of
from cirrus.gateway.status import (
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH,
    NOT_AUTHORIZED,
    OUT_OF_RESOURCES,
    SUCCESS,
    StoreFailure,
    failure_for_error,
    failure_status,
    internal_failure,
)

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
# Statuses that blame the sender: its data set or its AE title. The other failures are the
# archive's own.
_SENDER_ERRORS: Final = frozenset({DATA_SET_DOES_NOT_MATCH, CANNOT_UNDERSTAND, NOT_AUTHORIZED})


class _UnparsableDataSetError(Exception):
    """The instance parser raised an error other than ``InvalidInstanceError``."""


@dataclass
class _AssociationCounts:
    stored: int = 0
    rejected: int = 0
    transfers: StoreTransfers = field(default_factory=StoreTransfers)


@dataclass
class _Received:
    """The instance of one C-STORE request, as far as the handler has read it."""

    sop_class: str
    sop_instance: str
    # Set once the header has passed its checks.
    study: str | None = None
    series: str | None = None
    # As read from the header before its checks, for the InstanceRejected event only.
    read_study: str | None = None
    read_series: str | None = None


def _header_uid(header: InstanceHeader, keyword: str) -> str | None:
    """Return the UID ``keyword`` of ``header`` if it can be read, else None."""
    try:
        value = str(header.dataset.get(keyword, "") or "")
    except NotImplementedError:
        return None
    return value[:64] or None


class StoreService:
    """C-STORE into the archive, and the log line of each association's start and end."""

    def __init__(self, context: GatewayContext) -> None:
        self._context = context
        self._counts: WeakKeyDictionary[Association, _AssociationCounts] = WeakKeyDictionary()
        self._counts_lock = threading.Lock()

    def add_contexts(self, ae: AE) -> None:
        """Add every SOP class of ``AllStoragePresentationContexts`` with every stored syntax."""
        # As SCP the AE may support more than the 128 contexts that one association can request.
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None  # every predefined context has one
            ae.add_supported_context(context.abstract_syntax, list(STORAGE_TRANSFER_SYNTAXES))

    def event_handlers(self) -> list[EventHandlerType]:
        return [
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_STORE, self.handle_store),
        ]

    def handle_store(self, event: Event) -> Dataset | int:
        """Archive the instance of a C-STORE request and return the response status.

        Returns Success only after S3 has acknowledged the object, as an ``int``, which
        pynetdicom copies into the response without going through a data set. Never raises,
        because for an exception pynetdicom sends its own status without a reason. Each
        failure is logged once.
        """
        request = cast(C_STORE, event.request)
        received = _Received(str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID))
        try:
            failure = self._archive(event, request, received)
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
        with self._counts_lock:
            if failure is None and received.study is not None and received.series is not None:
                counts.stored += 1
                counts.transfers.stored(
                    received.study, received.series, received.sop_class, received.sop_instance
                )
            elif failure is not None:
                counts.rejected += 1
                counts.transfers.failed(received.study, failure.status)
        if failure is None:
            return SUCCESS
        self._announce_rejection(event, received, failure)
        return failure_status(failure)

    def _announce_rejection(self, event: Event, received: _Received, failure: StoreFailure) -> None:
        """Send InstanceRejected; the publisher logs and counts an event it cannot send."""
        try:
            caller = self._context.config.caller(event.assoc.requestor.ae_title)
            rejection = cstore_rejection(
                caller.site if caller is not None else None,
                failure.status,
                failure.reason,
                study=received.study or received.read_study,
                series=received.series or received.read_series,
                sop=received.sop_instance or None,
                sop_class=received.sop_class or None,
            )
            self._context.services.events.publish([rejection])
        except Exception:
            # handle_store must not raise, and the C-STORE response matters more.
            logger.exception("InstanceRejected event not sent", extra=_ids(event))

    def _archive(self, event: Event, request: C_STORE, received: _Received) -> StoreFailure | None:
        """Check and archive the instance. Return the failure, or None once it is stored."""
        caller = self._context.caller(event.assoc)
        if not caller.may("store"):
            return StoreFailure(
                NOT_AUTHORIZED,
                f"calling AE title {caller.ae_title} may not store",
                "this calling AE title may not store",
            )
        spooled = getattr(request, "_dataset_file", None)
        if not isinstance(spooled, SpoolFile):
            # build_ae installs the spooling, so only an AE built otherwise gets here.
            raise RuntimeError("the C-STORE data set was not spooled to a file")
        return self._archive_spooled(event, request, caller.site, spooled, received)

    def _archive_spooled(
        self,
        event: Event,
        request: C_STORE,
        site: str,
        spooled: SpoolFile,
        received: _Received,
    ) -> StoreFailure | None:
        """Check and archive the data set that ``cirrus.gateway.spool`` wrote to a file.

        The file is deleted before this returns, whatever the outcome.
        """
        spool = spool_of(event.assoc)
        if spool is not None:
            spool.take(spooled)
        try:
            spooled.close()
            if spooled.rejection is not None:
                return StoreFailure(OUT_OF_RESOURCES, spooled.rejection, spooled.rejection)
            failure = self._archive_file(request, site, spooled, received)
        finally:
            spooled.delete()
            # pynetdicom's StorageServiceClass.SCP would close and unlink the deleted file
            # again after the handler returns.
            request._dataset_file = None
        if failure is None:
            metrics = metrics_of(event.assoc)
            if metrics is not None:
                metrics.add_stored_bytes(spooled.received)
        return failure

    def _archive_file(
        self, request: C_STORE, site: str, spooled: SpoolFile, received: _Received
    ) -> StoreFailure | None:
        services = self._context.services
        path = spooled.path
        try:
            header, size = read_spool_file_header(spooled)
            received.read_study = _header_uid(header, "StudyInstanceUID")
            received.read_series = _header_uid(header, "SeriesInstanceUID")
            check_size(size)
            checked = check_header(header, site)
        except CirrusError as exc:
            return failure_for_error(exc)
        except Exception as exc:
            message = f"data set could not be parsed: {type(exc).__name__}"
            raise _UnparsableDataSetError(message) from exc
        received.study, received.series = checked.key.study, checked.key.series
        mismatch = _check_request_uids(request, checked.key.sop, checked.sop_class_uid)
        if mismatch is not None:
            return mismatch
        try:
            # archive_file logs the one INFO line per stored instance.
            archive_file(services.store, path, checked, services.claims)
        except CirrusError as exc:
            return failure_for_error(exc)
        return None

    def _counts_of(self, assoc: Association) -> _AssociationCounts:
        with self._counts_lock:
            return self._counts.setdefault(assoc, _AssociationCounts())

    def _on_accepted(self, event: Event) -> None:
        assoc = event.assoc
        # Only an accepted association has counts, so only its end is logged.
        self._counts_of(assoc)
        log_keys = peer(assoc)
        logger.info(
            "association accepted from %s at %s",
            log_keys["calling_ae"],
            log_keys["peer"],
            extra={**log_keys, "accepted_contexts": len(assoc.accepted_contexts)},
        )

    def _on_released(self, event: Event) -> None:
        self._log_end(event.assoc, "released", logging.INFO)

    def _on_aborted(self, event: Event) -> None:
        assoc = event.assoc
        cause = None
        # The peer sent nothing, or an unfinished PDU, for the network time-out.
        if network_timed_out(assoc):
            cause = f"network time-out: no data for {assoc.network_timeout:g} s"
        self._log_end(assoc, "aborted", logging.WARNING, cause)

    def _log_end(
        self, assoc: Association, outcome: str, level: int, cause: str | None = None
    ) -> None:
        """Log and audit the end of an accepted association, but not a rejected one's abort."""
        with self._counts_lock:
            counts = self._counts.pop(assoc, None)
        if counts is None:
            return
        audit = self._context.audit
        request_id = audit.association_id(assoc)
        for audit_event in counts.transfers.events(
            assoc, self._context.config, request_id, outcome
        ):
            audit.submit(audit_event)
        log_keys = peer(assoc)
        extra = {**log_keys, "stored": counts.stored, "rejected": counts.rejected}
        if cause is not None:
            outcome = f"{outcome} ({cause})"
            extra["cause"] = cause
        logger.log(
            level,
            "association %s: %s at %s, %d stored, %d rejected",
            outcome,
            log_keys["calling_ae"],
            log_keys["peer"],
            counts.stored,
            counts.rejected,
            extra=extra,
        )


def _check_request_uids(request: C_STORE, sop_instance: str, sop_class: str) -> StoreFailure | None:
    """Check that the data set is the instance that the C-STORE command names."""
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
        **peer(event.assoc),
        "sop_instance_uid": str(request.AffectedSOPInstanceUID),
        "sop_class_uid": str(request.AffectedSOPClassUID),
    }
