"""Audit records of the gateway: one per association and study stored, per query and retrieve.

The DIMSE services build ``AuditEvent`` values (``cirrus.audit``) and hand them to
``GatewayAudit``, which writes them in a thread of its own. No DIMSE response waits for an
audit write, so a C-STORE still gets Success as soon as its object is durable, whatever the
audit table does. A record that cannot be written is logged, without patient data, and
counted in the ``AuditFailures`` metric; the stored objects stay stored.

NOTE: records waiting in the queue are lost if the process is killed. ``Gateway.shutdown``
writes what is queued before it returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol
from weakref import WeakKeyDictionary

from pynetdicom import AllStoragePresentationContexts
from pynetdicom.association import Association

from cirrus.audit import (
    Actor,
    AuditAction,
    AuditEvent,
    AuditLog,
    AuditOutcome,
    StudyAccess,
)
from cirrus.errors import StoreUnavailableError
from cirrus.gateway.aeconfig import AEConfig

logger = logging.getLogger(__name__)

# Records waiting to be written. Past this, new records are counted as failures, so that a
# table that stopped responding cannot make the gateway run out of memory.
MAX_QUEUED_RECORDS: Final = 10_000
# Time that ``close`` gives the queued records at shutdown.
CLOSE_TIMEOUT_SECONDS: Final = 10.0

_STOP: Final = object()

# Query/Retrieve SOP classes, by the action that an association proposing them requests.
# Storage SOP classes request ``store``.
_QUERY_MODELS: Final = frozenset(
    {
        "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root FIND
        "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root FIND
    }
)
_RETRIEVE_MODELS: Final = frozenset(
    {
        "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root MOVE
        "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root GET
        "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root MOVE
        "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root GET
    }
)
_STORAGE_CLASSES: Final = frozenset(
    str(context.abstract_syntax) for context in AllStoragePresentationContexts
)


class AuditFailureCounter(Protocol):
    """A counter of the records that could not be written: the gateway's metrics."""

    def add_audit_failure(self) -> None: ...


class GatewayAudit:
    """Writes the gateway's audit records in a background thread, in the order submitted."""

    def __init__(self, log: AuditLog, failures: AuditFailureCounter | None = None) -> None:
        self._log = log
        self.failures = failures
        self._queue: queue.Queue[object] = queue.Queue(MAX_QUEUED_RECORDS)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._tokens: WeakKeyDictionary[Association, str] = WeakKeyDictionary()

    def association_id(self, assoc: Association) -> str:
        """Return the id that the records of ``assoc`` carry as their request id."""
        with self._lock:
            token = self._tokens.get(assoc)
            if token is None:
                token = self._tokens[assoc] = f"assoc-{uuid.uuid4().hex[:16]}"
            return token

    def submit(self, event: AuditEvent) -> None:
        """Queue ``event`` for writing, without waiting for the table.

        A full queue or a closed writer does not raise: the first counts a failure, and the
        second writes ``event`` in the caller's thread.
        """
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="gateway-audit", daemon=True
                    )
                    self._thread.start()
        if closed:
            # After shutdown the thread is gone, so the caller's thread writes it.
            self._write(event)
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._failed(event, f"more than {MAX_QUEUED_RECORDS} records wait to be written")

    def flush(self, timeout: float) -> bool:
        """Wait until every queued record is written or has failed; tell whether it happened."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Write what is queued, waiting up to ``timeout``, then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(timeout)
        if thread.is_alive():
            logger.error(
                "audit records not written at shutdown",
                extra={"records": max(self._queue.unfinished_tasks - 1, 0)},
            )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                assert isinstance(item, AuditEvent)
                self._write(item)
            finally:
                self._queue.task_done()

    def _write(self, event: AuditEvent) -> None:
        try:
            self._log.record(event)
        except StoreUnavailableError as exc:
            self._failed(event, str(exc))
        except Exception:
            # A failure of any kind must not end the thread, or every later record would be
            # lost too.
            logger.exception(
                "audit record not written: unexpected error", extra=_log_keys(event, "unexpected")
            )
            self._count_failure()

    def _failed(self, event: AuditEvent, reason: str) -> None:
        logger.error("audit record not written: %s", reason, extra=_log_keys(event, reason))
        self._count_failure()

    def _count_failure(self) -> None:
        if self.failures is not None:
            self.failures.add_audit_failure()


def _log_keys(event: AuditEvent, reason: str) -> dict[str, object]:
    """Return the log keys of an event that was not written, which name no study or instance.

    The request id finds the association's other log lines.
    """
    return {
        "action": str(event.action),
        "outcome": int(event.outcome),
        "request_id": event.request_id,
        "calling_ae": event.actor.ae_title,
        "studies": len(event.studies),
        "reason": reason,
    }


def actor_of(assoc: Association) -> Actor:
    """Return the requestor of ``assoc``: its calling AE title and IP address."""
    requestor = assoc.requestor
    title = requestor.ae_title.strip(" ")
    return Actor(ae_title=title or None, source_ip=requestor.address or None)


def site_of(config: AEConfig, assoc: Association) -> str | None:
    caller = config.caller(assoc.requestor.ae_title)
    return caller.site if caller is not None else None


# --- C-STORE -----------------------------------------------------------------------------

# Statuses that blame the sender (its data set or its AE title), and so are minor failures.
# The other failures are the archive's own, and serious.
SENDER_STORE_ERRORS: Final = frozenset({0xA900, 0xC000, 0x0124})


@dataclass
class _StudyStores:
    instances: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    series: set[str] = field(default_factory=set)
    failures: Counter[int] = field(default_factory=Counter)


@dataclass
class StoreTransfers:
    """The instances that one association stored, and the C-STORE failures, by study.

    Failures whose study is unknown (the data set could not be read, or the caller may not
    store) are kept under None.
    """

    studies: dict[str | None, _StudyStores] = field(default_factory=dict)

    def stored(self, study: str, series: str, sop_class: str, sop_instance: str) -> None:
        stores = self.studies.setdefault(study, _StudyStores())
        stores.instances.append(sop_instance)
        stores.classes.append(sop_class)
        stores.series.add(series)

    def failed(self, study: str | None, status: int) -> None:
        self.studies.setdefault(study, _StudyStores()).failures[status] += 1

    def events(
        self, assoc: Association, config: AEConfig, request_id: str, ended: str
    ) -> list[AuditEvent]:
        """Return one STORE event per study, and one for the failures of no known study."""
        actor = actor_of(assoc)
        site = site_of(config, assoc)
        events = []
        for study, stores in self.studies.items():
            studies: tuple[StudyAccess, ...] = ()
            if study is not None:
                counts = Counter(stores.classes)
                studies = (
                    StudyAccess(
                        study=study,
                        series=tuple(sorted(stores.series)),
                        instances=tuple(stores.instances),
                        sop_classes=tuple(sorted(counts.items())),
                        instance_classes=tuple(stores.classes),
                    ),
                )
            events.append(
                AuditEvent(
                    action=AuditAction.STORE,
                    outcome=_store_outcome(stores.failures),
                    actor=actor,
                    site=site,
                    request_id=request_id,
                    transport="DIMSE",
                    studies=studies,
                    detail=_store_detail(stores, study is None, ended),
                    called_ae_title=config.ae_title,
                )
            )
        return events


def _store_outcome(failures: Mapping[int, int]) -> AuditOutcome:
    if not failures:
        return AuditOutcome.SUCCESS
    if all(status in SENDER_STORE_ERRORS for status in failures):
        return AuditOutcome.MINOR_FAILURE
    return AuditOutcome.SERIOUS_FAILURE


def _store_detail(stores: _StudyStores, unknown_study: bool, ended: str) -> str | None:
    if not stores.failures:
        return None
    failed = sum(stores.failures.values())
    statuses = ", ".join(
        f"0x{status:04X} ({count})" for status, count in sorted(stores.failures.items())
    )
    subject = "instances whose study is unknown" if unknown_study else "instances"
    return (
        f"{failed} of {failed + len(stores.instances)} {subject} failed with status "
        f"{statuses}; association {ended}"
    )


# --- C-FIND, C-MOVE and C-GET ------------------------------------------------------------


def outcome_of_status(status: int, requester_errors: Iterable[int]) -> AuditOutcome:
    """Map the final status of a C-FIND, C-MOVE or C-GET to an Event Outcome Indicator.

    Success and Cancel are successes, a Warning and a failure blamed on the requester are
    minor failures, and the other failures are serious ones.
    """
    if status in (0x0000, 0xFE00):
        return AuditOutcome.SUCCESS
    if status in requester_errors or 0xB000 <= status <= 0xBFFF:
        return AuditOutcome.MINOR_FAILURE
    return AuditOutcome.SERIOUS_FAILURE


# --- rejected associations ---------------------------------------------------------------


def rejected_events(assoc: Association, config: AEConfig, reason: str) -> list[AuditEvent]:
    """Return the events of a rejected association: one per action that it proposed.

    An association that proposed only other SOP classes, such as Verification, is recorded
    as a query, because every action needs one record and none fits it better.
    """
    proposed = {
        str(context.abstract_syntax) for context in assoc.requestor.requested_contexts or ()
    }
    actions = []
    if proposed & _STORAGE_CLASSES:
        actions.append(AuditAction.STORE)
    if proposed & _QUERY_MODELS:
        actions.append(AuditAction.QUERY)
    if proposed & _RETRIEVE_MODELS:
        actions.append(AuditAction.RETRIEVE)
    detail = f"association rejected: {reason}"
    if not actions:
        actions.append(AuditAction.QUERY)
        detail += "; it proposed no storage or query/retrieve SOP class"
    request = assoc.requestor.primitive
    called = request.called_ae_title.strip(" ") if request is not None else None
    return [
        AuditEvent(
            action=action,
            outcome=AuditOutcome.MINOR_FAILURE,
            actor=actor_of(assoc),
            site=site_of(config, assoc),
            request_id=f"assoc-{uuid.uuid4().hex[:16]}",
            transport="DIMSE",
            detail=detail,
            called_ae_title=called or config.ae_title,
        )
        for action in actions
    ]
