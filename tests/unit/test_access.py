"""Access rules: the document's checks, principals of API Gateway events and request scopes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cirrus.access import (
    AccessConfigError,
    AccessDeniedError,
    AccessPolicy,
    Action,
    Grants,
    normalize_principal,
    principal_from_event,
)
from cirrus.config import Settings
from cirrus.dicomweb.scope import RequestScope, request_action, split_site_prefix
from cirrus.errors import InvalidRequestError
from functions.dicomweb.handler import access_policy

NORTH_MODALITY = "arn:aws:iam::111122223333:role/north-modality"
TELERADIOLOGY = "arn:aws:iam::111122223333:role/teleradiology"
EXAMPLE = {
    "principals": {
        NORTH_MODALITY: {"north": ["store"]},
        TELERADIOLOGY: {"north": ["query", "retrieve"], "south": ["query", "retrieve"]},
    }
}


def event_with(identity: dict[str, Any] | None) -> dict[str, Any]:
    """Return an API Gateway REST proxy event whose request context has ``identity``."""
    context: dict[str, Any] = {"requestId": "r-1", "stage": "dicomweb"}
    if identity is not None:
        context["identity"] = identity
    return {"httpMethod": "GET", "path": "/studies", "requestContext": context}


def parse(document: object) -> AccessPolicy:
    return AccessPolicy.from_json(json.dumps(document))


# Principals of API Gateway events


@pytest.mark.parametrize(
    ("user_arn", "principal"),
    [
        (NORTH_MODALITY, NORTH_MODALITY),
        (
            "arn:aws:sts::111122223333:assumed-role/teleradiology/jane.doe",
            TELERADIOLOGY,
        ),
        # A Cognito identity pool user: its group maps to the role, the session is Cognito's.
        (
            "arn:aws:sts::111122223333:assumed-role/viewer-readers/CognitoIdentityCredentials",
            "arn:aws:iam::111122223333:role/viewer-readers",
        ),
        ("arn:aws:iam::111122223333:user/radiology/alice", "arn:aws:iam::111122223333:user/alice"),
        (
            "arn:aws:iam::111122223333:role/service-role/north-modality",
            NORTH_MODALITY,
        ),
        (
            "arn:aws-us-gov:sts::111122223333:assumed-role/reader/s1",
            "arn:aws-us-gov:iam::111122223333:role/reader",
        ),
    ],
)
def test_principal_of_event(user_arn: str, principal: str) -> None:
    assert principal_from_event(event_with({"userArn": user_arn, "sourceIp": "10.0.0.1"})) == (
        principal
    )


@pytest.mark.parametrize(
    "identity",
    [
        None,
        {},
        {"sourceIp": "10.0.0.1"},
        {"userArn": None},
        {"userArn": ""},
        {"userArn": "arn:aws:iam::111122223333:root"},
        {"userArn": "jane"},
        {"userArn": "arn:aws:sts::111122223333:federated-user/jane"},
        {"userArn": ["arn:aws:iam::111122223333:role/north-modality"]},
    ],
)
def test_principal_of_event_without_iam_identity(identity: dict[str, Any] | None) -> None:
    assert principal_from_event(event_with(identity)) is None


def test_principal_of_event_without_context() -> None:
    assert principal_from_event({"httpMethod": "GET"}) is None
    assert principal_from_event({"requestContext": "not an object"}) is None


def test_assumed_role_matches_role_grants() -> None:
    policy = parse(EXAMPLE)
    session = "arn:aws:sts::111122223333:assumed-role/teleradiology/CognitoIdentityCredentials"
    principal = principal_from_event(event_with({"userArn": session}))

    grants = policy.grants_for(principal)

    assert grants.sites_for(Action.RETRIEVE) == ("north", "south")
    assert grants.sites_for(Action.STORE) == ()


def test_other_account_role_has_no_grants() -> None:
    policy = parse(EXAMPLE)
    other = normalize_principal("arn:aws:sts::444455556666:assumed-role/teleradiology/s")

    assert policy.grants_for(other) == Grants()


# The access document


def test_example_document_grants() -> None:
    policy = parse(EXAMPLE)

    modality = policy.grants_for(NORTH_MODALITY)
    assert modality.sites_for(Action.STORE) == ("north",)
    assert modality.sites_for(Action.QUERY) == ()
    assert modality.allows("north", Action.STORE)
    assert not modality.allows("south", Action.STORE)
    assert not policy.is_open


def test_site_order_kept() -> None:
    document = {"principals": {TELERADIOLOGY: {"south": ["retrieve"], "north": ["retrieve"]}}}

    assert parse(document).grants_for(TELERADIOLOGY).sites_for(Action.RETRIEVE) == (
        "south",
        "north",
    )


def test_unknown_principal_has_no_grants() -> None:
    policy = parse(EXAMPLE)

    assert policy.grants_for("arn:aws:iam::111122223333:role/stranger") == Grants()
    assert policy.grants_for(None) == Grants()


def test_open_policy_grants_everyone_default_site() -> None:
    policy = AccessPolicy.open_to("default")

    for principal in (None, NORTH_MODALITY):
        grants = policy.grants_for(principal)
        for action in Action:
            assert grants.sites_for(action) == ("default",)
    assert policy.is_open


def test_load_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    path.write_text(json.dumps(EXAMPLE), encoding="utf-8")

    assert AccessPolicy.load(path).grants_for(TELERADIOLOGY).sites_for(Action.QUERY) == (
        "north",
        "south",
    )


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AccessConfigError, match="unreadable"):
        AccessPolicy.load(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"principals": {}, "open": true}', "unknown keys 'open'"),
        ('{"principal": {}}', "unknown keys 'principal'"),
        ('{"principals": []}', '"principals" must be an object'),
        ('{"principals": {"jane": {"north": ["query"]}}}', "principal 'jane' is invalid"),
        (
            '{"principals": {"arn:aws:iam::111122223333:root": {"north": ["query"]}}}',
            "is invalid; give an IAM user or role ARN",
        ),
        (f'{{"principals": {{"{NORTH_MODALITY}": {{}}}}}}', "must be an object of sites"),
        (f'{{"principals": {{"{NORTH_MODALITY}": ["north"]}}}}', "must be an object of sites"),
        (f'{{"principals": {{"{NORTH_MODALITY}": {{"North": ["store"]}}}}}}', "site 'North'"),
        (f'{{"principals": {{"{NORTH_MODALITY}": {{"a/b": ["store"]}}}}}}', "site 'a/b'"),
        (
            f'{{"principals": {{"{NORTH_MODALITY}": {{"north": []}}}}}}',
            "must be a non-empty list of store, query, retrieve, delete",
        ),
        (
            f'{{"principals": {{"{NORTH_MODALITY}": {{"north": "store"}}}}}}',
            "must be a non-empty list",
        ),
        (
            f'{{"principals": {{"{NORTH_MODALITY}": {{"north": ["write"]}}}}}}',
            "action 'write' .* is unknown",
        ),
        (
            f'{{"principals": {{"{NORTH_MODALITY}": {{"north": [["store"]]}}}}}}',
            "is unknown",
        ),
        (
            f'{{"principals": {{"{NORTH_MODALITY}": {{"north": ["Store"]}}}}}}',
            "action 'Store' .* is unknown",
        ),
        (
            f'{{"principals": {{"{NORTH_MODALITY}": {{"north": ["store", "store"]}}}}}}',
            "is repeated",
        ),
        (
            f'{{"principals": {{"{NORTH_MODALITY}": {{"north": ["store"], "north": ["query"]}}}}}}',
            "key 'north' is given twice",
        ),
        (
            f'{{"principals": {{"{NORTH_MODALITY}": {{"north": ["store"]}}, '
            f'"arn:aws:iam::111122223333:role/imaging/north-modality": {{"south": ["store"]}}}}}}',
            "are the same IAM identity",
        ),
    ],
)
def test_invalid_document_rejected(text: str, message: str) -> None:
    with pytest.raises(AccessConfigError, match=message):
        AccessPolicy.from_json(text, source="test document")


def test_invalid_document_names_source() -> None:
    with pytest.raises(AccessConfigError, match=r"^test document is invalid"):
        AccessPolicy.from_json('{"principals": 1}', source="test document")


def settings_with(**access: str) -> Settings:
    return Settings(
        bucket="b", table="t", ingest_queue="q", dead_letter_queue="d", kms_key_id="k", **access
    )


def test_handler_reads_access_document_first(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    path.write_text(json.dumps({"principals": {NORTH_MODALITY: {"south": ["store"]}}}))
    both = settings_with(access_file=str(path), access_document=json.dumps(EXAMPLE))

    from_text = access_policy(both)
    from_file = access_policy(settings_with(access_file=str(path)))

    assert from_text is not None
    assert from_text.grants_for(NORTH_MODALITY).sites_for(Action.STORE) == ("north",)
    assert from_file is not None
    assert from_file.grants_for(NORTH_MODALITY).sites_for(Action.STORE) == ("south",)
    assert access_policy(settings_with()) is None


def test_handler_names_invalid_access_variable() -> None:
    with pytest.raises(AccessConfigError, match=r"^CIRRUS_ACCESS_JSON is invalid"):
        access_policy(settings_with(access_document='{"principals": {"jane": {}}}'))


# The site prefix and the action of a request


@pytest.mark.parametrize(
    ("path", "site", "rest"),
    [
        ("/studies", None, "/studies"),
        ("/sites/north/studies", "north", "/studies"),
        ("/sites/north/studies/1.2/series", "north", "/studies/1.2/series"),
        ("/sites/north", "north", "/"),
        ("/sites/north/", "north", "/"),
        ("/sites/", None, "/sites/"),
        ("/sites//studies", None, "/sites//studies"),
        ("/studies/sites/north", None, "/studies/sites/north"),
        ("/sites/Nor%74h/studies", "North", "/studies"),
    ],
)
def test_split_site_prefix(path: str, site: str | None, rest: str) -> None:
    assert split_site_prefix(path) == (site, rest)


@pytest.mark.parametrize(
    ("method", "path", "action"),
    [
        ("GET", "/studies", Action.QUERY),
        ("HEAD", "/series", Action.QUERY),
        ("GET", "/instances", Action.QUERY),
        ("GET", "/studies/1.2/series", Action.QUERY),
        ("GET", "/studies/1.2/instances", Action.QUERY),
        ("GET", "/studies/1.2/series/3.4/instances", Action.QUERY),
        ("GET", "/studies/1.2", Action.RETRIEVE),
        ("GET", "/studies/1.2/metadata", Action.RETRIEVE),
        ("GET", "/studies/1.2/series/3.4", Action.RETRIEVE),
        ("GET", "/studies/1.2/series/3.4/thumbnail", Action.RETRIEVE),
        ("GET", "/studies/1.2/series/3.4/instances/5.6", Action.RETRIEVE),
        ("GET", "/studies/1.2/series/3.4/instances/5.6/frames/1", Action.RETRIEVE),
        ("GET", "/studies/1.2/series/3.4/instances/5.6/bulkdata/7FE00010", Action.RETRIEVE),
        ("GET", "/unknown", Action.RETRIEVE),
        ("POST", "/studies", Action.STORE),
        ("POST", "/uploads", Action.STORE),
        ("post", "/studies/1.2", Action.STORE),
        ("DELETE", "/studies/1.2", Action.DELETE),
        ("OPTIONS", "/studies", None),
        ("PUT", "/studies/1.2", None),
    ],
)
def test_request_action(method: str, path: str, action: Action | None) -> None:
    assert request_action(method, path) == action


# The sites one request may use


READER = Grants(
    (("north", frozenset({Action.QUERY, Action.RETRIEVE})), ("south", frozenset(Action)))
)


def test_scope_without_prefix_uses_granted_sites() -> None:
    scope = RequestScope(Action.RETRIEVE, READER)

    assert scope.sites() == ("north", "south")
    assert not scope.site_denied


def test_scope_prefix_narrows_to_site() -> None:
    scope = RequestScope(Action.QUERY, READER, "south")

    assert scope.sites() == ("south",)


@pytest.mark.parametrize("site", ["east", "north"])
def test_scope_prefix_of_ungranted_site_is_empty(site: str) -> None:
    scope = RequestScope(Action.DELETE, READER, site)

    assert scope.sites() == ()
    assert scope.site_denied


def test_scope_without_grant_denied() -> None:
    scope = RequestScope(Action.STORE, Grants((("north", frozenset({Action.QUERY})),)), "north")

    with pytest.raises(AccessDeniedError, match="no grant for store on any site") as raised:
        scope.sites()
    assert raised.value.action == Action.STORE


def test_store_site_of_one_store_grant() -> None:
    assert RequestScope(Action.STORE, READER).store_site() == "south"
    assert RequestScope(Action.STORE, READER, "south").store_site() == "south"


def test_store_site_of_ungranted_prefix_denied() -> None:
    with pytest.raises(AccessDeniedError, match="no grant for store on the site it named"):
        RequestScope(Action.STORE, READER, "north").store_site()


def test_store_site_must_be_named_among_several() -> None:
    grants = Grants((("north", frozenset({Action.STORE})), ("south", frozenset({Action.STORE}))))

    with pytest.raises(InvalidRequestError, match="/sites/north/studies"):
        RequestScope(Action.STORE, grants).store_site()
    assert RequestScope(Action.STORE, grants, "north").store_site() == "north"
