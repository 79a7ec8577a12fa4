"""GET /changes over HTTP with SigV4 and an access document: each caller reads its own site."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from cirrus.access import AccessPolicy
from cirrus.audit import AuditAction, AuditOutcome
from cirrus.local.moto_process import MotoProcess
from tests.integration.test_access_support import (
    ACCESS_DOCUMENT,
    NORTH_ALL,
    NORTH_MODALITY,
    NORTH_READER,
    SOUTH_ALL,
    STRANGER,
    TELERADIOLOGY,
    AccessStack,
    new_deployment,
    new_study,
    start_access_stack,
)


@dataclass
class _Sites:
    """The stack, and the one instance stored in each of the sites north and south."""

    stack: AccessStack
    north_sop: str
    south_sop: str


@pytest.fixture(scope="module")
def sites(moto_server: MotoProcess) -> Iterator[_Sites]:
    running = start_access_stack(
        new_deployment(moto_server), AccessPolicy.from_json(ACCESS_DOCUMENT)
    )
    north, south = new_study(), new_study()
    assert running.client(NORTH_ALL).store("/sites/north/studies", north).status_code == 200
    assert running.client(SOUTH_ALL).store("/sites/south/studies", south).status_code == 200
    running.index()
    running.audit.take()
    yield _Sites(running, north[0].SOPInstanceUID, south[0].SOPInstanceUID)
    running.server.shutdown()


@pytest.fixture
def stack(sites: _Sites) -> AccessStack:
    return sites.stack


def _sops(body: dict) -> list[str]:
    return [change["SOPInstanceUID"] for change in body["changes"]]


def test_own_site_feed(stack: AccessStack, sites: _Sites) -> None:
    response = stack.client(NORTH_READER).get("/changes", params={"since": "0"})
    assert response.status_code == 200
    body = response.json()
    assert body["site"] == "north"
    assert _sops(body) == [sites.north_sop]
    records = stack.audit.take()
    assert [r.action for r in records] == [AuditAction.QUERY]
    assert records[0].site == "north"
    assert records[0].outcome == AuditOutcome.SUCCESS


def test_other_site_feed_is_empty(stack: AccessStack) -> None:
    response = stack.client(NORTH_READER).get("/sites/south/changes")
    assert response.status_code == 200
    assert response.json()["changes"] == []
    records = stack.audit.take()
    assert records[0].outcome == AuditOutcome.MINOR_FAILURE


def test_several_sites_need_prefix(stack: AccessStack, sites: _Sites) -> None:
    client = stack.client(TELERADIOLOGY)
    response = client.get("/changes")
    assert response.status_code == 400
    assert "/sites/north/changes" in response.text
    south = client.get("/sites/south/changes")
    assert south.status_code == 200
    assert _sops(south.json()) == [sites.south_sop]


def test_store_only_caller_denied(stack: AccessStack) -> None:
    assert stack.client(NORTH_MODALITY).get("/changes").status_code == 403
    assert stack.client(STRANGER).get("/changes").status_code == 403


def test_unsigned_request_denied(stack: AccessStack) -> None:
    assert requests.get(f"{stack.url}/changes", timeout=30).status_code == 403


def test_cursor_ahead_of_feed_rejected(stack: AccessStack) -> None:
    response = stack.client(NORTH_READER).get("/changes", params={"since": "5000"})
    assert response.status_code == 400
    assert "cursor 5000 is above the last number" in response.text
    assert "site north" in response.text


@pytest.mark.parametrize("site", ["a%2Fb", "%00", "North", "a" * 300])
def test_invalid_site_prefix_rejected(stack: AccessStack, site: str) -> None:
    response = stack.client(NORTH_READER).get(f"/sites/{site}/changes")
    assert response.status_code == 400
    assert "lowercase letters, digits and '-'" in response.text
