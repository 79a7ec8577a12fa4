"""The sites one DICOMweb request may use: its action, the caller's grants and the site prefix.

Every DICOMweb route may be preceded by ``/sites/{site}``, which narrows the request to that
site. The prefix is removed before routing (``split_site_prefix``), and the request then
uses only the sites that both the prefix and the caller's grants for its action allow:

- a caller with no grant for the action on any site gets 403, whatever site it names;
- a site that the prefix names but the caller may not use for the action is treated as
  empty: a query matches nothing and a retrieve or delete gets 404, exactly as for data that
  does not exist. A store names its site explicitly, so it gets 403 there.

Sites are never read outside these, so a caller learns nothing of another site's data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from cirrus.access import AccessDeniedError, Action, Grants
from cirrus.errors import InvalidRequestError, NotFoundError

SITE_PREFIX: Final = "/sites/"

# The paths (segments after the optional site prefix) that need the query action: the QIDO-RS
# resources and the change feed. "*" is a UID.
_QUERY_PATHS: Final = (
    ("studies",),
    ("series",),
    ("instances",),
    ("studies", "*", "series"),
    ("studies", "*", "instances"),
    ("studies", "*", "series", "*", "instances"),
    # The change feed (cirrus.dicomweb.changes) lists UIDs, as a query does.
    ("changes",),
)
_ACTION_OF_METHOD: Final = {"POST": Action.STORE, "DELETE": Action.DELETE}

# Whether a site's index has a study, series or instance: (site, study, series, sop).
ContainsFunction = Callable[[str, str, str | None, str | None], bool]


def split_site_prefix(path: str) -> tuple[str | None, str]:
    """Return the site that a leading ``/sites/{site}`` names, and the path after it.

    Returns None and ``path`` unchanged when the path has no such prefix. The site is not
    checked here, because a name that no grant contains is a site the caller may not use.
    """
    if not path.startswith(SITE_PREFIX):
        return None, path
    site, slash, rest = path[len(SITE_PREFIX) :].partition("/")
    if not site:
        return None, path
    return unquote(site), f"{slash}{rest}" or "/"


def request_action(method: str, path: str) -> Action | None:
    """Return the action a DICOMweb request needs, from its method and path without prefix.

    GET and HEAD of a QIDO-RS resource query and of anything else retrieve, POST stores and
    DELETE deletes. Other methods (a CORS preflight's OPTIONS) need none.
    """
    method = method.upper()
    if method in _ACTION_OF_METHOD:
        return _ACTION_OF_METHOD[method]
    if method not in ("GET", "HEAD"):
        return None
    segments = tuple(path.strip("/").split("/"))
    for pattern in _QUERY_PATHS:
        if len(pattern) == len(segments) and all(
            expected in ("*", segment) for expected, segment in zip(pattern, segments, strict=True)
        ):
            return Action.QUERY
    return Action.RETRIEVE


@dataclass(frozen=True)
class RequestScope:
    """The action of one request, the caller's grants and the site its path names, if any."""

    action: Action
    grants: Grants
    requested_site: str | None = None

    def check(self) -> None:
        """Raise ``AccessDeniedError`` unless the caller has the action on some site."""
        if not self.grants.sites_for(self.action):
            raise AccessDeniedError(
                f"access denied: this caller has no grant for {self.action} on any site",
                action=self.action,
            )

    def sites(self) -> tuple[str, ...]:
        """Return the sites the request may use, in the order of the grants.

        Raises ``AccessDeniedError`` when the caller has the action on no site. The tuple is
        empty when the path names a site that the caller may not use for the action.
        """
        self.check()
        granted = self.grants.sites_for(self.action)
        if self.requested_site is None:
            return granted
        return (self.requested_site,) if self.requested_site in granted else ()

    @property
    def site_denied(self) -> bool:
        """Tell whether the path names a site that the caller may not use for the action."""
        site = self.requested_site
        return site is not None and not self.grants.allows(site, self.action)

    def store_site(self) -> str:
        """Return the one site a store request writes to.

        Raises ``AccessDeniedError`` when the caller may store into no site, or not into the
        site the path names, and ``InvalidRequestError`` when it may store into several and
        the path names none.
        """
        sites = self.sites()
        if not sites:
            raise AccessDeniedError(
                "access denied: this caller has no grant for store on the site it named",
                action=self.action,
            )
        if len(sites) > 1:
            raise InvalidRequestError(
                f"this caller may store into the sites {', '.join(sites)}; name one with the "
                f"path prefix {SITE_PREFIX}{{site}}, such as {SITE_PREFIX}{sites[0]}/studies"
            )
        return sites[0]


def resource_not_found(study: str, series: str | None = None, sop: str | None = None) -> str:
    """Return the message of a missing study, series or instance, as the index reader words it.

    A resource that no site has and one in a site the caller may not use get the same words,
    so that the response cannot tell the two apart.
    """
    if sop is not None:
        return f"instance {sop} not found in series {series} of study {study}"
    if series is not None:
        return f"series {series} of study {study} not found"
    return f"study {study} not found"


def first_site_with(
    sites: tuple[str, ...],
    contains: ContainsFunction,
    study: str,
    series: str | None = None,
    sop: str | None = None,
) -> str:
    """Return the first of ``sites`` whose index has the study, series or instance.

    With one site, that site is returned unread, and the retrieve itself reports a missing
    resource. Raises ``NotFoundError`` when no site has it, or ``sites`` is empty.
    """
    if len(sites) == 1:
        return sites[0]
    for site in sites:
        if contains(site, study, series, sop):
            return site
    raise NotFoundError(resource_not_found(study, series, sop))
