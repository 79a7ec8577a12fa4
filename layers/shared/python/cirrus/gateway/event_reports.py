"""N-EVENT-REPORT requests that the gateway sends on an association that a peer requested.

pynetdicom 3.0.4 serves the requests of an acceptor association in its reactor thread, which
takes each DIMSE message off one queue. ``Association.send_n_event_report`` from another
thread pauses the reactor and takes the next message off that queue as its response. When the
peer sends a request in the meantime, as an SCU does that sends a second N-ACTION without
waiting for the first report, that request is taken instead. pynetdicom then logs "Received
an invalid N-ACTION response", aborts the association, and the request gets no response.
The reactor also counts itself paused while it serves a request, so a report could go out in
the middle of another operation, with its P-DATA-TF PDUs between those of a C-FIND or C-GET
message.

``ReportChannel`` avoids both. It serves each request of the peer under a lock, from the
moment the reactor takes it until its last response is queued for sending, and a report is
sent and awaited under the same lock. The response to the report is taken as the DUL thread
decodes it (``EVT_DIMSE_RECV``), so it never competes with the reactor for the queue, and a
request that arrives while the report awaits its response is served right after it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass
from io import BytesIO
from typing import Final

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import N_EVENT_REPORT_RSP
from pynetdicom.dimse_primitives import N_EVENT_REPORT, DimseServiceType
from pynetdicom.dsutils import encode
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.presentation import PresentationContextTuple

logger = logging.getLogger(__name__)

# How often a report that waits for the lock or for its response checks that the association
# is still established.
_POLL_SECONDS: Final = 0.05


class ReportNotDeliveredError(Exception):
    """A report got no response: the association ended, or the peer sent none in time."""


@dataclass(frozen=True)
class EventReport:
    """One N-EVENT-REPORT request: the SOP Instance, Event Type ID and Event Information."""

    sop_class_uid: str
    sop_instance_uid: str
    event_type: int
    information: Dataset


class ReportChannel:
    """Sender of N-EVENT-REPORT requests on one acceptor association, between the peer's requests.

    ``_attach`` creates the channel when the connection opens, before the reactor serves any
    request, and makes the association serve its requests through ``_serve_request``.
    """

    def __init__(self, assoc: Association) -> None:
        self._assoc = assoc
        # pynetdicom's own dispatch of a received request to its service class.
        self._serve = assoc._serve_request
        # Held while the reactor serves a request and while a report waits for its response.
        self._operation_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._message_ids = itertools.count(1)
        self._awaited_message_id: int | None = None
        self._response: Dataset | None = None
        self._answered = threading.Event()

    def _serve_request(self, msg: DimseServiceType, context_id: int) -> None:
        if isinstance(msg, N_EVENT_REPORT) and not msg.is_valid_request:
            # A response to one of the gateway's reports. ``receive`` took it from the DUL
            # thread already, or it came after its report timed out.
            return
        with self._operation_lock:
            self._serve(msg, context_id)

    def receive(self, command_set: Dataset) -> None:
        """Take an N-EVENT-REPORT response that the DUL thread decoded."""
        with self._state_lock:
            if command_set.get("MessageIDBeingRespondedTo") != self._awaited_message_id:
                return
            status = Dataset()
            status.Status = command_set.Status
            for keyword in ("ErrorComment", "ErrorID"):
                if keyword in command_set:
                    setattr(status, keyword, command_set[keyword].value)
            self._response = status
            self._answered.set()

    def send(self, report: EventReport, context: PresentationContextTuple) -> Dataset:
        """Send ``report`` on presentation context ``context`` and return the response status.

        Waits while the reactor serves a request of the peer. Raises
        ``ReportNotDeliveredError`` when the association ends first, or when the peer sends no
        response within the association's DIMSE timeout, which aborts the association as
        pynetdicom does.
        """
        assoc = self._assoc
        while not self._operation_lock.acquire(timeout=_POLL_SECONDS):
            if not assoc.is_established:
                raise ReportNotDeliveredError(association_end(assoc))
        try:
            if not assoc.is_established:
                raise ReportNotDeliveredError(association_end(assoc))
            message_id = next(self._message_ids)
            request = _request(report, context, message_id)
            with self._state_lock:
                self._awaited_message_id = message_id
                self._response = None
                self._answered.clear()
            assoc.dimse.send_msg(request, context.context_id)
            return self._await_response()
        finally:
            with self._state_lock:
                self._awaited_message_id = None
            self._operation_lock.release()

    def _await_response(self) -> Dataset:
        assoc = self._assoc
        timeout = assoc.dimse_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._answered.wait(_POLL_SECONDS):
            if not assoc.is_established:
                raise ReportNotDeliveredError(association_end(assoc))
            if deadline is not None and time.monotonic() >= deadline:
                assoc.abort()
                raise ReportNotDeliveredError(
                    f"no N-EVENT-REPORT response within {timeout:g} s; association aborted"
                )
        with self._state_lock:
            response = self._response
        assert response is not None  # set before the event
        return response


def _request(
    report: EventReport, context: PresentationContextTuple, message_id: int
) -> N_EVENT_REPORT:
    syntax = context.transfer_syntax
    encoded = encode(
        report.information, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
    )
    if encoded is None:
        raise ValueError("the Event Information cannot be encoded")
    request = N_EVENT_REPORT()
    request.MessageID = message_id
    request.AffectedSOPClassUID = report.sop_class_uid
    request.AffectedSOPInstanceUID = report.sop_instance_uid
    request.EventTypeID = report.event_type
    request.EventInformation = BytesIO(encoded)
    return request


def association_end(assoc: Association) -> str:
    """Describe how ``assoc`` ended, for log messages."""
    if assoc.is_released:
        return "the caller released the association"
    if assoc.is_aborted:
        return "the association was aborted"
    return "the association ended"


_channels: dict[Association, ReportChannel] = {}
_channels_lock = threading.Lock()


def channel_of(assoc: Association) -> ReportChannel | None:
    """Return the channel of an acceptor association, or None once its connection closed."""
    with _channels_lock:
        return _channels.get(assoc)


def _attach(event: Event) -> None:
    assoc = event.assoc
    if not assoc.is_acceptor:
        return
    channel = ReportChannel(assoc)
    # Replaces pynetdicom's dispatch on this association only, before its reactor starts.
    assoc._serve_request = channel._serve_request  # type: ignore[method-assign]
    with _channels_lock:
        _channels[assoc] = channel


def _detach(event: Event) -> None:
    with _channels_lock:
        _channels.pop(event.assoc, None)


def _on_message_received(event: Event) -> None:
    message = event.message
    if not isinstance(message, N_EVENT_REPORT_RSP):
        return
    channel = channel_of(event.assoc)
    if channel is not None:
        channel.receive(message.command_set)


def event_handlers() -> list[EventHandlerType]:
    """Return the handlers that give every acceptor association its ``ReportChannel``."""
    return [
        (evt.EVT_CONN_OPEN, _attach),
        (evt.EVT_DIMSE_RECV, _on_message_received),
        (evt.EVT_CONN_CLOSE, _detach),
    ]
