"""Access rules of DICOMweb: which principal may use which site, for which actions.

The rules are a JSON document, read once at start from ``Settings.access_document`` (the
environment variable CIRRUS_ACCESS_JSON, which the CDK stack sets), else from
``Settings.access_file``::

    {
      "principals": {
        "arn:aws:iam::111122223333:role/north-modality": {"north": ["store"]},
        "arn:aws:iam::111122223333:role/teleradiology": {
          "north": ["query", "retrieve"],
          "south": ["query", "retrieve"]
        }
      }
    }

A principal is the IAM identity that signed the request, which API Gateway passes to the
function as ``requestContext.identity.userArn``: an IAM user or role ARN. A session of an
assumed role (``arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION``) is matched as its role
(``arn:aws:iam::ACCOUNT:role/ROLE``), so the users of a Cognito identity pool, whose group
maps to an IAM role, get the grants of that role. IAM user and role names are unique in an
account whatever their path, so the path of an ARN is dropped on both sides before matching.
A principal that the document does not list has no grants.

The order of a principal's sites is kept: a retrieve that names no site looks for the data in
that order (``cirrus.dicomweb.scope``).

Without an access document, DICOMweb is open: every caller, signed or not, has every action
on the default site (``AccessPolicy.open_to``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from cirrus.errors import CirrusError
from cirrus.storage.keys import validate_site


class Action(StrEnum):
    """An action that a grant allows on one site."""

    STORE = "store"
    QUERY = "query"
    RETRIEVE = "retrieve"
    DELETE = "delete"


ALL_ACTIONS: Final = frozenset(Action)

# IAM ARNs of users and roles, with an optional path, and STS ARNs of assumed-role sessions.
# The partition covers aws, aws-cn, aws-us-gov and the isolated partitions.
_IAM_ARN: Final = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):"
    r"(?P<kind>user|role)/(?:[\x21-\x7e]+/)?(?P<name>[\w+=,.@-]{1,128})"
)
_ASSUMED_ROLE_ARN: Final = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):sts::(?P<account>\d{12}):"
    r"assumed-role/(?P<name>[\w+=,.@-]{1,128})/[\w+=,.@-]{2,64}"
)
_DOCUMENT_KEYS: Final = frozenset({"principals"})


class AccessConfigError(ValueError):
    """The access document is not valid JSON or breaks one of its rules."""


class AccessDeniedError(CirrusError):
    """The caller has no grant for the action of its request, on any site it may name."""

    def __init__(self, message: str, *, action: Action) -> None:
        super().__init__(message)
        self.action = action


def normalize_principal(arn: str) -> str | None:
    """Return the form of an IAM or STS ARN that grants are matched by, or None if it is neither.

    An assumed-role session becomes its role, and a user or role ARN loses its path.
    """
    match = _IAM_ARN.fullmatch(arn)
    if match is not None:
        kind = match["kind"]
    else:
        match = _ASSUMED_ROLE_ARN.fullmatch(arn)
        if match is None:
            return None
        kind = "role"
    return f"arn:{match['partition']}:iam::{match['account']}:{kind}/{match['name']}"


def principal_from_event(event: Mapping[str, Any]) -> str | None:
    """Return the principal of an API Gateway REST proxy event, matched form, or None.

    The principal is ``requestContext.identity.userArn``, which API Gateway sets on requests
    that pass IAM authorization. A value that is not an IAM user, IAM role or assumed-role
    ARN gives None, so it matches no grant.
    """
    context = event.get("requestContext")
    identity = context.get("identity") if isinstance(context, Mapping) else None
    arn = identity.get("userArn") if isinstance(identity, Mapping) else None
    if not isinstance(arn, str) or not arn:
        return None
    return normalize_principal(arn)


@dataclass(frozen=True)
class Grants:
    """The sites one principal may use, each with its actions, in the document's order."""

    sites: tuple[tuple[str, frozenset[Action]], ...] = ()

    def sites_for(self, action: Action) -> tuple[str, ...]:
        """Return the sites where ``action`` is granted, in the document's order."""
        return tuple(site for site, actions in self.sites if action in actions)

    def allows(self, site: str, action: Action) -> bool:
        return site in self.sites_for(action)


@dataclass(frozen=True)
class AccessPolicy:
    """The grants of every principal, or, when ``open_site`` is set, every action there for all.

    ``principals`` is keyed by the matched form of each principal (``normalize_principal``).
    """

    principals: Mapping[str, Grants] = field(default_factory=dict)
    open_site: str | None = None

    @property
    def is_open(self) -> bool:
        return self.open_site is not None

    @classmethod
    def open_to(cls, site: str) -> AccessPolicy:
        """Return the policy that gives every caller, even one without a principal, every
        action on ``site`` and nothing elsewhere."""
        return cls(open_site=validate_site(site))

    def grants_for(self, principal: str | None) -> Grants:
        """Return the grants of a principal in its matched form. An unknown one has none."""
        if self.open_site is not None:
            return Grants(((self.open_site, ALL_ACTIONS),))
        if principal is None:
            return Grants()
        return self.principals.get(principal, Grants())

    @classmethod
    def load(cls, path: Path) -> AccessPolicy:
        """Read and check an access document. Raises ``AccessConfigError`` when it is invalid."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AccessConfigError(f"access document {path} is unreadable: {exc}") from exc
        return cls.from_json(text, source=str(path))

    @classmethod
    def from_json(cls, text: str, source: str = "access document") -> AccessPolicy:
        """Parse and check an access document. Raises ``AccessConfigError`` when it is invalid."""
        try:
            document = json.loads(text, object_pairs_hook=_unique_keys)
        except (json.JSONDecodeError, AccessConfigError) as exc:
            raise AccessConfigError(f"{source} is not valid JSON: {exc}") from exc
        try:
            return cls(principals=_parse_principals(document))
        except AccessConfigError as exc:
            raise AccessConfigError(f"{source} is invalid: {exc}") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object and reject a key given twice, which json.loads would accept."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise AccessConfigError(f"key {key!r} is given twice in one object")
        result[key] = value
    return result


def _parse_principals(document: object) -> dict[str, Grants]:
    if not isinstance(document, dict):
        raise AccessConfigError('the document must be a JSON object with "principals"')
    unknown = sorted(set(document) - _DOCUMENT_KEYS)
    if unknown:
        raise AccessConfigError(f'unknown keys {", ".join(map(repr, unknown))}; use "principals"')
    principals = document.get("principals")
    if not isinstance(principals, dict):
        raise AccessConfigError('"principals" must be an object of principal ARNs')
    parsed: dict[str, Grants] = {}
    written: dict[str, str] = {}
    for arn, sites in principals.items():
        principal = parse_principal(arn)
        if principal in parsed:
            raise AccessConfigError(
                f"principals {written[principal]!r} and {arn!r} are the same IAM identity; "
                "merge their grants"
            )
        written[principal] = arn
        parsed[principal] = _parse_grants(arn, sites)
    return parsed


def parse_principal(arn: object) -> str:
    """Return the matched form of a principal ARN of a configuration file, or raise.

    Raises ``AccessConfigError`` unless ``arn`` is an IAM user or role ARN, or an STS
    assumed-role ARN.
    """
    principal = normalize_principal(arn) if isinstance(arn, str) else None
    if principal is None:
        raise AccessConfigError(
            f"principal {arn!r} is invalid; give an IAM user or role ARN such as "
            "arn:aws:iam::111122223333:role/NAME"
        )
    return principal


def _parse_grants(arn: str, sites: object) -> Grants:
    if not isinstance(sites, dict) or not sites:
        raise AccessConfigError(
            f"grants of {arn!r} must be an object of sites, each with a list of actions"
        )
    parsed = []
    for site, actions in sites.items():
        try:
            validate_site(site)
        except ValueError as exc:
            raise AccessConfigError(f"grants of {arn!r}: {exc}") from exc
        parsed.append((site, _parse_actions(arn, site, actions)))
    return Grants(tuple(parsed))


def _parse_actions(arn: str, site: str, actions: object) -> frozenset[Action]:
    known = ", ".join(action.value for action in Action)
    if not isinstance(actions, list) or not actions:
        raise AccessConfigError(
            f"actions of {arn!r} on site {site!r} must be a non-empty list of {known}"
        )
    parsed: set[Action] = set()
    for action in actions:
        if not isinstance(action, str) or action not in ALL_ACTIONS:
            raise AccessConfigError(
                f"action {action!r} of {arn!r} on site {site!r} is unknown; use {known}"
            )
        if action in parsed:
            raise AccessConfigError(f"action {action!r} of {arn!r} on site {site!r} is repeated")
        parsed.add(Action(action))
    return frozenset(parsed)
