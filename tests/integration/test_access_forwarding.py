"""A request forwarded to the pixel function is authorized there too, and audited once.

The DICOMweb function forwards the whole API Gateway event to the pixel function, which runs
the same handler again. Here the pixel function is that handler in this process, with the
codecs enabled only while it runs, and each function has its own audit log.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cirrus.access import AccessPolicy
from cirrus.audit import AuditAction, AuditOutcome
from cirrus.dicom import transcode
from cirrus.dicomweb.forwarding import PixelForwarder
from cirrus.local.http import LocalContext, serve_http
from cirrus.local.moto_process import MotoProcess
from cirrus.local.sigv4 import LocalAuthentication, SigV4Verifier
from functions.dicomweb.handler import handle
from tests.integration.test_access_support import (
    ACCESS_DOCUMENT,
    CREDENTIALS,
    NORTH_ALL,
    NORTH_QUERY,
    REGION,
    AccessStack,
    RecordingAudit,
    new_deployment,
    new_study,
    start_access_stack,
)


class InProcessPixelFunction(PixelForwarder):
    """Runs forwarded events through the handler with codecs, as the pixel function does."""

    def __init__(self, view: Any, patch: pytest.MonkeyPatch) -> None:
        super().__init__(client=None, function_name="in-process-pixels")
        self.view = view
        self.patch = patch
        self.events: list[dict[str, Any]] = []

    def forward(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event)
        self.patch.setattr(transcode, "CODECS_INSTALLED", True)
        try:
            context = LocalContext(aws_request_id=str(uuid.uuid4()))
            return handle(event, context, services=self.view)
        finally:
            self.patch.setattr(transcode, "CODECS_INSTALLED", False)


@dataclass
class Functions:
    """The DICOMweb function without codecs, its pixel function, and their audit logs."""

    stack: AccessStack
    dicomweb_audit: RecordingAudit
    pixel_audit: RecordingAudit
    pixels: InProcessPixelFunction
    instance_path: str


@pytest.fixture
def functions(moto_server: MotoProcess) -> Iterator[Functions]:
    settings = new_deployment(moto_server)
    stack = start_access_stack(settings, AccessPolicy.from_json(ACCESS_DOCUMENT))
    datasets = new_study()
    assert stack.client(NORTH_ALL).store("/studies", datasets).status_code == 200
    stack.index()
    stack.server.shutdown()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transcode, "CODECS_INSTALLED", False)
        pixel_audit = RecordingAudit()
        pixels = InProcessPixelFunction(
            dataclasses.replace(stack.view, audit=pixel_audit, pixels=None), patch
        )
        dicomweb_audit = RecordingAudit()
        view = dataclasses.replace(stack.view, audit=dicomweb_audit, pixels=pixels)
        authentication = LocalAuthentication(SigV4Verifier(CREDENTIALS, REGION), dicomweb_audit)
        server = serve_http(
            functools.partial(handle, services=view), "127.0.0.1", 0, authentication=authentication
        )
        url = f"http://127.0.0.1:{server.port}/dicomweb"
        running = dataclasses.replace(stack, url=url, server=server, view=view)
        ds = datasets[0]
        path = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        yield Functions(
            running, dicomweb_audit, pixel_audit, pixels, f"{path}/instances/{ds.SOPInstanceUID}"
        )
        server.shutdown()


def test_forwarded_request_audited_once(functions: Functions) -> None:
    response = functions.stack.client(NORTH_ALL).get(
        f"{functions.instance_path}/rendered", headers={"Accept": "image/png"}
    )

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert len(functions.pixels.events) == 1
    assert functions.dicomweb_audit.events == []
    (event,) = functions.pixel_audit.events
    assert event.action == AuditAction.RETRIEVE
    assert event.outcome == AuditOutcome.SUCCESS
    assert event.site == "north"
    assert event.actor.principal == NORTH_ALL
    assert event.request_id == functions.pixels.events[0]["requestContext"]["requestId"]


def test_local_request_audited_by_dicomweb_function(functions: Functions) -> None:
    response = functions.stack.client(NORTH_ALL).get(f"{functions.instance_path}/metadata")

    assert response.status_code == 200
    assert functions.pixels.events == []
    assert functions.pixel_audit.events == []
    (event,) = functions.dicomweb_audit.events
    assert event.action == AuditAction.RETRIEVE
    assert event.site == "north"


def test_denied_request_not_forwarded(functions: Functions) -> None:
    response = functions.stack.client(NORTH_QUERY).get(f"{functions.instance_path}/rendered")

    assert response.status_code == 403
    assert functions.pixels.events == []
    (event,) = functions.dicomweb_audit.events
    assert event.outcome == AuditOutcome.MINOR_FAILURE
    assert event.detail == "no grant for retrieve"


def test_missing_pixel_function_audited_as_failure(functions: Functions) -> None:
    view = dataclasses.replace(functions.stack.view, pixels=None)
    authentication = LocalAuthentication(SigV4Verifier(CREDENTIALS, REGION))
    server = serve_http(
        functools.partial(handle, services=view), "127.0.0.1", 0, authentication=authentication
    )
    try:
        url = f"http://127.0.0.1:{server.port}/dicomweb"
        client = dataclasses.replace(functions.stack.client(NORTH_ALL), url=url)

        response = client.get(f"{functions.instance_path}/rendered")
    finally:
        server.shutdown()

    assert response.status_code == 500
    (event,) = functions.dicomweb_audit.events
    assert event.outcome == AuditOutcome.SERIOUS_FAILURE
    assert event.detail == "pixel codecs unavailable"
