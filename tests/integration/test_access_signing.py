"""SigV4 at the local HTTP adapter: only correctly signed requests reach the handler.

Each rejected request gets 403 before the handler runs and leaves one audit record of the
failed authentication, without a principal, because none was verified.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests

from cirrus.access import AccessPolicy
from cirrus.audit import AuditAction, AuditEvent, AuditOutcome
from cirrus.local.moto_process import MotoProcess
from cirrus.local.sigv4 import SIGNATURE_REJECTED
from tests.integration.test_access_support import (
    ACCESS_DOCUMENT,
    KEYS,
    NORTH_ALL,
    NORTH_MODALITY,
    AccessStack,
    SignedClient,
    new_deployment,
    new_study,
    now,
    secret_of,
    start_access_stack,
    stow_body,
)


@pytest.fixture(scope="module")
def stack(moto_server: MotoProcess) -> Iterator[AccessStack]:
    settings = new_deployment(moto_server)
    running = start_access_stack(settings, AccessPolicy.from_json(ACCESS_DOCUMENT))
    yield running
    running.server.shutdown()


def rejection(stack: AccessStack, response: requests.Response, reason: str) -> AuditEvent:
    """Check a 403 of the adapter and return its one audit record."""
    assert response.status_code == 403, response.text
    assert response.json()["error"].startswith("access denied: ")
    (event,) = stack.audit.take()
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert event.actor.principal is None
    assert event.site is None
    assert event.detail == f"authentication failed: {reason}"
    assert event.studies == ()
    return event


def test_signed_request_reaches_handler(stack: AccessStack) -> None:
    response = stack.client(NORTH_ALL).get("/studies")

    assert response.status_code in (200, 204)
    (event,) = stack.audit.take()
    assert event.actor.principal == NORTH_ALL
    assert event.actor.source_ip == "127.0.0.1"


def test_unsigned_request_rejected(stack: AccessStack) -> None:
    response = requests.get(f"{stack.url}/studies", timeout=30)

    event = rejection(stack, response, "unsigned")
    assert event.action == AuditAction.QUERY


def test_wrong_secret_rejected(stack: AccessStack) -> None:
    client = SignedClient(stack.url, KEYS[NORTH_ALL], "not-the-secret-0123456789")

    response = client.get(f"/studies/{uuid.uuid4().int}")

    event = rejection(stack, response, "signature mismatch")
    assert event.action == AuditAction.RETRIEVE
    assert response.json()["error"] == f"access denied: {SIGNATURE_REJECTED}"


def test_unknown_key_rejected(stack: AccessStack) -> None:
    client = SignedClient(stack.url, "AKIANOTINTHEFILE0001", secret_of(NORTH_ALL))

    response = client.request("DELETE", "/studies/1.2.3")

    event = rejection(stack, response, "unknown access key")
    assert event.action == AuditAction.DELETE
    assert response.json()["error"] == f"access denied: {SIGNATURE_REJECTED}"
    assert event.detail == "authentication failed: unknown access key"


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_date_off_by_minutes_rejected(stack: AccessStack, offset: timedelta) -> None:
    response = stack.client(NORTH_ALL).get("/studies", signed_at=now() + offset)

    rejection(stack, response, "request date out of range")


def test_tampered_body_rejected(stack: AccessStack) -> None:
    signed, content_type = stow_body(new_study())
    sent, _ = stow_body(new_study())
    client = stack.client(NORTH_MODALITY)

    response = client.request(
        "POST",
        "/studies",
        body=signed,
        headers={"Content-Type": content_type},
        sent_body=sent,
    )

    event = rejection(stack, response, "signature mismatch")
    assert event.action == AuditAction.STORE
    assert stack.instance_keys("north") == []


def test_tampered_body_with_payload_hash_rejected(stack: AccessStack) -> None:
    signed, content_type = stow_body(new_study())
    sent, _ = stow_body(new_study())
    headers = {
        "Content-Type": content_type,
        "X-Amz-Content-Sha256": hashlib.sha256(signed).hexdigest(),
    }

    response = stack.client(NORTH_MODALITY).request(
        "POST", "/studies", body=signed, headers=headers, sent_body=sent
    )

    rejection(stack, response, "payload hash mismatch")
    assert stack.instance_keys("north") == []


def test_tampered_query_rejected(stack: AccessStack) -> None:
    client = stack.client(NORTH_ALL)
    signed = client.request("GET", "/studies", params={"PatientID": "A"})
    assert signed.status_code in (200, 204)
    stack.audit.take()
    url = requests.Request("GET", f"{stack.url}/studies", params={"PatientID": "B"}).prepare()
    headers = dict(signed.request.headers)

    response = requests.get(str(url.url), headers=headers, timeout=30)

    rejection(stack, response, "signature mismatch")


def test_signed_store_accepted(stack: AccessStack) -> None:
    datasets = new_study()

    response = stack.client(NORTH_MODALITY).store("/studies", datasets)

    assert response.status_code == 200
    (event,) = stack.audit.take()
    assert event.actor.principal == NORTH_MODALITY
    assert event.action == AuditAction.STORE
    assert event.site == "north"


def test_preflight_not_signed(stack: AccessStack) -> None:
    response = requests.options(
        f"{stack.url}/studies",
        headers={"Origin": "https://viewer.example", "Access-Control-Request-Method": "GET"},
        timeout=30,
    )

    # The handler responds: without CORS origins it supports no OPTIONS, and records nothing.
    assert response.status_code == 405
    assert stack.audit.take() == []
