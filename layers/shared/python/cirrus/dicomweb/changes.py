"""GET /changes: one site's change feed, paged with a cursor (``cirrus.events.feed``).

The route is part of the DICOMweb API, so it is authorized, scoped and audited as a QIDO-RS
query is: a caller reads the feed of a site where it has the query action. A caller with one
such site reads that site's feed; a caller with several names one with the ``/sites/{site}``
prefix. A site the caller may not query reads as an empty feed, like an empty query result.

Query parameters: ``since`` (the cursor of the previous page, 0 for the start) and ``limit``
(1 to 1000, default 100). A ``since`` above the highest number that the feed has taken gets
400. The response is JSON::

    {"site": "north", "changes": [{"sequence": 7, "action": "stored", ...}],
     "cursor": 7, "more": false, "waiting": false}
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Final

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from cirrus.audit import StudyAccess
from cirrus.dicomweb.errors import json_error
from cirrus.dicomweb.guard import request_state
from cirrus.dicomweb.scope import SITE_PREFIX
from cirrus.errors import InvalidRequestError
from cirrus.events.feed import MAX_PAGE, ChangePage, ChangeReader, CursorAheadError
from cirrus.storage.keys import validate_site

DEFAULT_LIMIT: Final = 100
# Larger values would not fit DynamoDB's number type in the cursor anyway.
_MAX_CURSOR: Final = 10**18


def add_change_routes(app: APIGatewayRestResolver, changes: ChangeReader | None) -> None:
    """Add GET /changes, served from ``changes``; without a reader it returns 404."""

    @app.get("/changes")
    def _changes() -> Response[str]:
        if changes is None:
            return json_error(HTTPStatus.NOT_FOUND, "the change feed is not enabled on this server")
        params = app.current_event.query_string_parameters or {}
        since = _integer(params.get("since"), "since", 0, 0, _MAX_CURSOR)
        limit = _integer(params.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_PAGE)
        state = request_state(app)
        if state.requested_site is not None:
            try:
                validate_site(state.requested_site)
            except ValueError as exc:
                raise InvalidRequestError(
                    f"site {state.requested_site[:40]!r} of the path prefix {SITE_PREFIX} is "
                    "invalid; use 1 to 32 lowercase letters, digits and '-'"
                ) from exc
        sites = state.sites()
        if not sites:
            return _json(ChangePage([], since).to_json(state.requested_site or ""))
        if len(sites) > 1:
            raise InvalidRequestError(
                f"this caller may read the feeds of the sites {', '.join(sites)}; name one with "
                f"the path prefix {SITE_PREFIX}{{site}}, such as {SITE_PREFIX}{sites[0]}/changes"
            )
        site = sites[0]
        try:
            page = changes.read(site, since, limit)
        except CursorAheadError as exc:
            raise InvalidRequestError(str(exc)) from exc
        state.use(
            site,
            [StudyAccess(c.study, (c.series,), (c.sop,)) for c in page.changes],
        )
        return _json(page.to_json(site))


def _integer(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise InvalidRequestError(
            f"query parameter {name}={value[:40]!r} is invalid; "
            f"give an integer from {low} to {high}"
        )
    return int(value)


def _json(body: dict[str, object]) -> Response[str]:
    return Response(
        status_code=int(HTTPStatus.OK),
        content_type="application/json",
        body=json.dumps(body, separators=(",", ":")),
    )
