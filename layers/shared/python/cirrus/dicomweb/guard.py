"""Authorization and audit of every DICOMweb request, as one middleware of the resolver.

Before a route runs, the middleware finds the action of the request (``scope.request_action``)
and the caller's grants (``cirrus.access``), and rejects a caller with no grant for that action
with 403. The route then gets the sites it may use from the request's ``RequestState``, and
notes each site it reads or writes with the studies it touched there.

After the route, the middleware writes one audit record per site the request used, or one
without a site when it used none (a denial, or data found nowhere). A query record names the
query keys, never their values. Two requests are not recorded here. A DELETE that succeeded
has its deletion record (``AuditLog.record_deletion``), written before anything was deleted.
A request handed to the pixel function (``cirrus.dicomweb.forwarding``) is run again there
and recorded there, so that it is recorded once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from cirrus.access import AccessDeniedError, AccessPolicy, Action, principal_from_event
from cirrus.archive import ArchivedInstance
from cirrus.audit import Actor, AuditAction, AuditEvent, AuditLog, AuditOutcome, StudyAccess
from cirrus.dicom.transcode import CodecsUnavailable
from cirrus.dicomweb.errors import status_of
from cirrus.dicomweb.scope import RequestScope, request_action
from cirrus.errors import CirrusError, InvalidParameterError
from cirrus.index.reader import InstanceRef
from cirrus.query.params import resolve_attribute
from cirrus.storage.keys import validate_site

logger = logging.getLogger(__name__)

# The key of the request's state in the resolver's context.
STATE_KEY: Final = "cirrus_request"
# QIDO-RS parameters that control the result rather than match attributes.
_CONTROL_PARAMETERS: Final = frozenset({"limit", "offset", "fuzzymatching", "includefield"})
_STUDY_UID: Final = "0020000D"
_SERIES_UID: Final = "0020000E"
_SOP_UID: Final = "00080018"
_STUDY_IN_PATH: Final = re.compile(r"/studies/([^/]+)")
# PS3.5 9.1: a UID is at most 64 characters of digits and dots.
_UID_SYNTAX: Final = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_MAX_UID_LENGTH: Final = 64

Middleware = Callable[[APIGatewayRestResolver, Callable[..., Any]], Response[Any]]


@dataclass
class RequestState:
    """The scope of one request and what it used: its sites and their studies.

    ``requested_site`` is the site of the ``/sites/{site}`` prefix. The middleware sets
    ``scope`` before the route runs. ``touched`` maps each site the route read or wrote to the
    studies it touched there, in the order the route used them.
    """

    requested_site: str | None = None
    scope: RequestScope | None = None
    touched: dict[str, list[StudyAccess]] = field(default_factory=dict)
    query_keys: tuple[str, ...] = ()
    # False for a request whose success is recorded elsewhere, or is not an access to data.
    record_success: bool = True

    def sites(self) -> tuple[str, ...]:
        """Return the sites the route may use for the request's action (``RequestScope``)."""
        return self._scope().sites()

    def store_site(self) -> str:
        """Return the one site a store writes to (``RequestScope.store_site``)."""
        return self._scope().store_site()

    def use(self, site: str, studies: Iterable[StudyAccess] = ()) -> None:
        """Note that the route reads or writes ``site``, and touched ``studies`` there."""
        self.touched.setdefault(site, []).extend(studies)

    @property
    def served_site(self) -> str | None:
        """The first site the route used, or None when it used none."""
        return next(iter(self.touched), None)

    def _scope(self) -> RequestScope:
        if self.scope is None:
            raise RuntimeError("the request scope is set by the guard middleware before routes")
        return self.scope


def request_state(app: APIGatewayRestResolver) -> RequestState:
    """Return the state of the request that ``app`` is resolving."""
    state = app.context.get(STATE_KEY)
    if not isinstance(state, RequestState):
        raise RuntimeError("no request state; resolve events with cirrus.dicomweb.app.resolve")
    return state


def guard(policy: AccessPolicy, audit: AuditLog | None, forwards_pixel_work: bool) -> Middleware:
    """Return the middleware that authorizes and audits each request under ``policy``.

    With ``forwards_pixel_work``, a request that needs pixel codecs goes to the pixel
    function, which records it. Without it, such a request fails and is recorded here.
    """

    def middleware(app: APIGatewayRestResolver, next_middleware: Callable[..., Any]) -> Any:
        event = app.current_event
        action = request_action(event.http_method, event.path)
        if action is None:
            return next_middleware(app)
        state = request_state(app)
        principal = principal_from_event(event.raw_event)
        state.scope = RequestScope(action, policy.grants_for(principal), state.requested_site)
        journal = _Journal(audit, state, event)
        try:
            state.scope.check()
            response = next_middleware(app)
        except CodecsUnavailable:
            if not forwards_pixel_work:
                journal.write(AuditOutcome.SERIOUS_FAILURE, "pixel codecs unavailable")
            raise
        except AccessDeniedError as exc:
            journal.write(AuditOutcome.MINOR_FAILURE, f"no grant for {exc.action}")
            raise
        except CirrusError as exc:
            journal.write_status(int(status_of(exc)))
            raise
        except Exception:
            journal.write(AuditOutcome.SERIOUS_FAILURE, "internal error")
            raise
        status = int(response.status_code)
        if status >= HTTPStatus.BAD_REQUEST or state.record_success:
            journal.write_status(status)
        return response

    return middleware


@dataclass
class _Journal:
    """Writes the audit records of one request."""

    audit: AuditLog | None
    state: RequestState
    event: APIGatewayProxyEvent

    def write_status(self, status: int) -> None:
        """Write the records of a request whose response has ``status``."""
        if status == HTTPStatus.ACCEPTED:
            # STOW-RS returns 202 when it stored some of the instances but not all.
            self.write(AuditOutcome.MINOR_FAILURE, "some instances were not stored")
        elif status < HTTPStatus.BAD_REQUEST:
            self.write(AuditOutcome.SUCCESS, None)
        elif status < HTTPStatus.INTERNAL_SERVER_ERROR:
            self.write(AuditOutcome.MINOR_FAILURE, _status_text(status))
        else:
            self.write(AuditOutcome.SERIOUS_FAILURE, _status_text(status))

    def write(self, outcome: AuditOutcome, detail: str | None) -> None:
        """Write one record per site used, or one without a site.

        Raises ``StoreUnavailableError`` when the audit log fails.
        """
        if self.audit is None:
            return
        state, scope = self.state, self.state.scope
        assert scope is not None  # set before any record is written
        if scope.site_denied and not state.touched:
            # A denied site is refused even where the response looks like an empty result.
            detail = f"no grant for {scope.action} on the site named"
            outcome = max(outcome, AuditOutcome.MINOR_FAILURE)
        used: list[tuple[str | None, list[StudyAccess]]] = list(state.touched.items())
        if not used:
            used = [(_valid_site(state.requested_site) if scope.site_denied else None, [])]
        requested = _requested_study(self.event.path)
        if requested is not None and scope.action in (Action.RETRIEVE, Action.DELETE):
            # A retrieve or delete that found nothing still names the study it asked for.
            used = [(site, studies or [StudyAccess(requested)]) for site, studies in used]
        actor = request_actor(self.event)
        request_id = self.event.request_context.request_id or ""
        for site, studies in used:
            self.audit.record(
                AuditEvent(
                    action=AuditAction(scope.action.value),
                    outcome=outcome,
                    actor=actor,
                    site=site,
                    request_id=request_id,
                    transport="DICOMweb",
                    studies=merge_studies(studies),
                    query_keys=state.query_keys if scope.action == Action.QUERY else (),
                    detail=detail,
                )
            )


def _requested_study(path: str) -> str | None:
    """Return the Study Instance UID that ``path`` names, if it has the syntax of a UID.

    Anything else is left out of the record, as it is text that the caller chose.
    """
    match = _STUDY_IN_PATH.search(path)
    if match is None:
        return None
    study = unquote(match.group(1))
    return study if len(study) <= _MAX_UID_LENGTH and _UID_SYNTAX.fullmatch(study) else None


def _valid_site(site: str | None) -> str | None:
    """Return ``site`` if it is a valid site id, else None.

    The name comes from the request's path, so a caller could otherwise write any text, even
    patient data, into the audit trail.
    """
    try:
        return validate_site(site) if site is not None else None
    except ValueError:
        return None


def _status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def request_actor(event: APIGatewayProxyEvent) -> Actor:
    """Return who sent ``event``: the authorizer's user, else the IAM caller, and the client.

    A Cognito user pool authorizer puts the token's claims under ``authorizer.claims``, and a
    Lambda authorizer puts ``principalId`` under ``authorizer``. The raw event is read because
    any of these fields may be absent.
    """
    context = _mapping(event.raw_event.get("requestContext"))
    authorizer = _mapping(context.get("authorizer"))
    claims = _mapping(authorizer.get("claims"))
    identity = _mapping(context.get("identity"))
    principal = (
        claims.get("cognito:username")
        or claims.get("sub")
        or authorizer.get("principalId")
        or identity.get("userArn")
        or identity.get("cognitoIdentityId")
    )
    return Actor(
        principal=str(principal) if principal else None,
        source_ip=_text(identity.get("sourceIp")),
        user_agent=_text(identity.get("userAgent")),
    )


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return str(value) if value else None


# The studies each kind of request touched.


def merge_studies(studies: Iterable[StudyAccess]) -> tuple[StudyAccess, ...]:
    """Merge the accesses of one study into one, keeping the first order of each UID."""
    merged: dict[str, tuple[dict[str, None], dict[str, None], dict[str, int]]] = {}
    for access in studies:
        series, instances, classes = merged.setdefault(access.study, ({}, {}, {}))
        series.update(dict.fromkeys(access.series))
        instances.update(dict.fromkeys(access.instances))
        for sop_class, count in access.sop_classes:
            classes[sop_class] = classes.get(sop_class, 0) + count
    return tuple(
        StudyAccess(study, tuple(series), tuple(instances), tuple(sorted(classes.items())))
        for study, (series, instances, classes) in merged.items()
    )


def studies_of_refs(refs: Iterable[InstanceRef]) -> list[StudyAccess]:
    """Return the accesses of retrieved instances, with the count of each SOP class."""
    return [_instance_access(ref.study, ref.series, ref.sop, ref.sop_class_uid) for ref in refs]


def studies_of_stored(stored: Iterable[ArchivedInstance]) -> list[StudyAccess]:
    """Return the accesses of stored instances, with the count of each SOP class."""
    return [
        _instance_access(item.key.study, item.key.series, item.key.sop, item.sop_class_uid)
        for item in stored
    ]


def _instance_access(study: str, series: str, sop: str, sop_class: str) -> StudyAccess:
    classes = ((sop_class, 1),) if sop_class else ()
    return StudyAccess(study, (series,), (sop,), classes)


def studies_of_path(
    study: str, series: str | None = None, sop: str | None = None
) -> list[StudyAccess]:
    """Return the access of the study, series or instance that a request path names."""
    return [StudyAccess(study, (series,) if series else (), (sop,) if sop else ())]


def studies_of_matches(
    matches: Iterable[Mapping[str, Any]], study: str | None, series: str | None
) -> list[StudyAccess]:
    """Return the studies, series and instances of QIDO-RS matches.

    A match leaves out the UIDs that the path gives, so ``study`` and ``series`` fill them.
    """
    accesses = []
    for match in matches:
        study_uid = _uid(match, _STUDY_UID) or study
        if study_uid is None:
            continue
        series_uid = _uid(match, _SERIES_UID) or series
        sop = _uid(match, _SOP_UID)
        accesses.append(
            StudyAccess(study_uid, (series_uid,) if series_uid else (), (sop,) if sop else ())
        )
    return accesses


def _uid(match: Mapping[str, Any], tag: str) -> str | None:
    values = match.get(tag, {}).get("Value") or [None]
    return str(values[0]) if values[0] else None


def query_key_names(
    params: Mapping[str, list[str]], study: str | None, series: str | None
) -> tuple[str, ...]:
    """Return the keywords of the attributes a QIDO-RS request matches on, without values.

    A name that is no DICOM keyword or tag is left out, because it is free text of the
    client. The UIDs of the path count as keys.
    """
    from pydicom.datadict import keyword_for_tag

    names = ["StudyInstanceUID"] if study is not None else []
    if series is not None:
        names.append("SeriesInstanceUID")
    for name in params:
        if name.lower() in _CONTROL_PARAMETERS:
            continue
        try:
            tag_path, _ = resolve_attribute(name)
        except InvalidParameterError:
            continue
        names.append(".".join(keyword_for_tag(int(tag, 16)) or tag for tag in tag_path.split(".")))
    return tuple(dict.fromkeys(names))
