"""The Query/Retrieve C-FIND SCP of the gateway (PS3.4 C.4.1), on the index that serves QIDO-RS.

The Patient Root and Study Root FIND models are served at each of their levels. Each request
is parsed by ``cirrus.query.identifier`` into a ``QidoQuery`` and run by
``QidoService.all_matches``, so C-FIND and QIDO-RS share the plan, the index reads and the
matching. Every match is sent as a Pending response as soon as it is read. The handler checks
for a C-CANCEL before each one and then ends with Cancel (FE00).

Statuses (PS3.4 C.4.1.1.4 and PS3.7 C.5):

- FF00 Pending, or FF01 when a key of the request is not supported at its level (it is then
  neither matched nor returned), then 0000 Success;
- 0124 Refused: Not Authorized, when the calling AE title may not query;
- A900 Identifier does not match SOP Class: QueryRetrieveLevel missing or not a level of the
  model, a unique key of a level above missing (hierarchical query), or a sequence key with
  more than one item;
- C000 Unable to process: a key that cannot be decoded or whose value is invalid for its VR;
- A700 Out of Resources: the index failed, or a search that no index serves stopped at
  ``UNINDEXED_READ_LIMIT`` records. The matches among those records are sent first, and the
  final A700 tells the caller that the list is incomplete;
- C001 Unable to process, for an unexpected error.

Every failure carries an Error Comment. The Identifier is never logged, because its keys hold
patient data. Each request gets one audit record with the level and the names of its keys,
never their values.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Final, cast

from botocore.exceptions import BotoCoreError, ClientError
from pydicom.dataset import Dataset
from pynamodb.exceptions import PynamoDBException
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.events import Event, EventHandlerType

from cirrus.audit import AuditAction, AuditEvent, AuditOutcome
from cirrus.gateway.audit import actor_of, outcome_of_status, site_of
from cirrus.gateway.context import GatewayContext, peer
from cirrus.gateway.encoded import IncompleteDataSetError, check_complete
from cirrus.gateway.status import NOT_AUTHORIZED, error_comment
from cirrus.query import qido
from cirrus.query.identifier import (
    MODEL_LEVELS,
    QUERY_RETRIEVE_LEVEL,
    FindRequest,
    IdentifierError,
    IdentifierMismatchError,
    parse_identifier,
    patient_matches,
    response_identifier,
)

logger = logging.getLogger(__name__)

PENDING: Final = 0xFF00
PENDING_WITH_UNSUPPORTED_KEYS: Final = 0xFF01
CANCEL: Final = 0xFE00
SUCCESS: Final = 0x0000
OUT_OF_RESOURCES: Final = 0xA700
IDENTIFIER_DOES_NOT_MATCH: Final = 0xA900
UNABLE_TO_PROCESS: Final = 0xC000
INTERNAL_ERROR: Final = 0xC001

_Response = tuple[int | Dataset, Dataset | None]


class FindService:
    """C-FIND of the Patient Root and Study Root Query/Retrieve Information Models."""

    def __init__(self, context: GatewayContext) -> None:
        self._context = context

    def add_contexts(self, ae: AE) -> None:
        """Add both FIND SOP classes with pynetdicom's four default transfer syntaxes."""
        for sop_class in MODEL_LEVELS:
            ae.add_supported_context(sop_class)

    def event_handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_C_FIND, self.handle_find)]

    def handle_find(self, event: Event) -> Iterator[_Response]:
        """Yield a Pending response per match, then the final status unless it is Success.

        pynetdicom sends Success itself once the generator ends, and stops at the first
        Cancel or failure status. Every exception is caught and answered with a failure status,
        because pynetdicom would otherwise send its own status without a reason.
        """
        request = cast(C_FIND, event.request)
        sop_class = str(request.AffectedSOPClassUID)
        log_keys = {**peer(event.assoc), "sop_class_uid": sop_class}
        count = 0
        final: int = SUCCESS
        try:
            for response in self._responses(event, sop_class):
                status = response[0]
                code = status if isinstance(status, int) else int(status.Status)
                if code in (PENDING, PENDING_WITH_UNSUPPORTED_KEYS):
                    count += 1
                else:
                    final = code
                yield response
        finally:
            level = _read_level(event)
            logger.info(
                "C-FIND from %s %s: %d matches, status 0x%04X",
                log_keys["calling_ae"],
                _describe_level(level, MODEL_LEVELS.get(sop_class, ())),
                count,
                final,
                extra={**log_keys, "level": level, "matches": count, "status": f"0x{final:04X}"},
            )
            self._audit(event, sop_class, level, final)

    def _audit(self, event: Event, sop_class: str, level: str | None, final: int) -> None:
        """Queue the audit record of one request: its model, level, key names and outcome."""
        context = self._context
        levels = MODEL_LEVELS.get(sop_class, ())
        outcome = outcome_of_status(final, _REQUESTER_ERRORS)
        detail = None
        if final == NOT_AUTHORIZED:
            detail = "this calling AE title may not query"
        elif outcome is not AuditOutcome.SUCCESS:
            detail = f"C-FIND failed with status 0x{final:04X}"
        request = cast(C_FIND, event.request)
        context.audit.submit(
            AuditEvent(
                action=AuditAction.QUERY,
                outcome=outcome,
                actor=actor_of(event.assoc),
                site=site_of(context.config, event.assoc),
                request_id=f"{context.audit.association_id(event.assoc)}-{request.MessageID}",
                transport="DIMSE",
                query_keys=_key_names(event),
                detail=detail,
                # A level that is not one of the model's could be any text the caller sent.
                query_level=level if level in levels else None,
                query_model=sop_class,
                called_ae_title=context.config.ae_title,
            )
        )

    def _responses(self, event: Event, sop_class: str) -> Iterator[_Response]:
        try:
            caller = self._context.caller(event.assoc)
            if not caller.may("query"):
                yield _failure(NOT_AUTHORIZED, "this calling AE title may not query"), None
                return
            try:
                check_complete(
                    cast(C_FIND, event.request).Identifier, event.context.transfer_syntax
                )
                find = parse_identifier(event.identifier, sop_class)
            except IncompleteDataSetError as exc:
                yield _failure(UNABLE_TO_PROCESS, f"the Identifier cannot be decoded: {exc}"), None
                return
            except IdentifierError as exc:
                status = (
                    IDENTIFIER_DOES_NOT_MATCH
                    if isinstance(exc, IdentifierMismatchError)
                    else UNABLE_TO_PROCESS
                )
                yield _failure(status, str(exc), exc.offending), None
                return
            except Exception:
                # pynetdicom decodes the Identifier on first access and raises what pydicom raises.
                logger.warning("C-FIND Identifier could not be decoded", exc_info=True)
                yield _failure(UNABLE_TO_PROCESS, "the Identifier cannot be decoded"), None
                return
            yield from self._matches(event, caller.site, find)
        except (PynamoDBException, BotoCoreError, ClientError):
            logger.exception("C-FIND failed: the index could not be read", extra=peer(event.assoc))
            yield _failure(OUT_OF_RESOURCES, "the archive index is unavailable; retry later"), None
        except Exception:
            logger.exception("C-FIND failed with an unexpected error", extra=peer(event.assoc))
            yield _failure(INTERNAL_ERROR, "internal error in the archive"), None

    def _matches(self, event: Event, site: str, find: FindRequest) -> Iterator[_Response]:
        stream = self._context.services.qido.all_matches(site=site, query=find.query)
        matches = patient_matches(stream) if find.level == "PATIENT" else iter(stream)
        pending = PENDING_WITH_UNSUPPORTED_KEYS if find.unsupported else PENDING
        ae_title = self._context.config.ae_title
        for attrs in matches:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield pending, response_identifier(find, attrs, ae_title)
        if stream.capped:
            yield (
                _failure(
                    OUT_OF_RESOURCES,
                    f"unindexed search stopped after {qido.UNINDEXED_READ_LIMIT} records; "
                    "add PatientID, AccessionNumber, StudyDate or a PatientName prefix",
                ),
                None,
            )


# Statuses that blame the requester: its permissions or its Identifier.
_REQUESTER_ERRORS: Final = frozenset({NOT_AUTHORIZED, IDENTIFIER_DOES_NOT_MATCH, UNABLE_TO_PROCESS})


def _key_names(event: Event) -> tuple[str, ...]:
    """Return the keywords (or tags) of the Identifier's keys, without the level.

    Returns what could be read before a decoding error, because the request has failed then.
    """
    names: list[str] = []
    try:
        for element in event.identifier:
            if element.tag != QUERY_RETRIEVE_LEVEL:
                names.append(element.keyword or str(element.tag))
    except Exception:
        # pynetdicom decodes the Identifier on first access and raises what pydicom raises.
        logger.debug("C-FIND keys could not be read", exc_info=True)
    return tuple(names)


def _read_level(event: Event) -> str | None:
    """Return the Query/Retrieve Level as the request sent it ("" without one).

    Returns None when the Identifier cannot be decoded as far as that element.
    """
    try:
        element = event.identifier.get(QUERY_RETRIEVE_LEVEL)
        if element is None:
            return ""
        return str(element.value or "").strip()
    except Exception:
        # pynetdicom decodes the Identifier on first access and raises what pydicom raises.
        # The request has failed then, and its failure response carries the reason.
        logger.debug("Query/Retrieve Level could not be read", exc_info=True)
        return None


def _describe_level(level: str | None, levels: tuple[str, ...]) -> str:
    """Describe the level of a request for the log line, which never contains a key value."""
    if level is None:
        return "with a Query/Retrieve Level that could not be read"
    if not level:
        return "without a Query/Retrieve Level"
    if level in levels:
        return f"at {level} level"
    # A Code String has at most 16 characters (PS3.5 6.2).
    return f"at invalid level {level[:16]!r}"


def _failure(status: int, comment: str, offending: tuple[int, ...] = ()) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = error_comment(comment)
    if offending:
        ds.OffendingElement = list(offending)
    return ds
