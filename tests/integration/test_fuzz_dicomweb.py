"""Fuzzing of the DICOMweb Lambda handler end to end, on moto.

Each example sends one API Gateway proxy event to ``handle``: a random path under /studies
(with real and random UIDs, resource names and an optional /sites/{site} prefix), a random
query string and Accept header, and for POST a random or mutated STOW-RS body. The response
must not be 500. Instances that a STOW-RS request stored are ingested as the queue would, and
ingest must index them or reject them with ``InvalidInstanceError``.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cirrus.config import ResourceNames, Settings
from cirrus.dicomweb.app import DicomwebServices
from cirrus.dicomweb.multipart import Part, build_multipart_related
from cirrus.errors import InvalidInstanceError
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.moto_process import MotoProcess
from cirrus.local.resources import create_resources
from cirrus.services import Services
from cirrus.storage.keys import INSTANCE_SUFFIX, site_prefix
from functions.dicomweb.handler import dicomweb_services, handle
from tests.fuzzing import fuzz_settings, mostly
from tests.pydicom_files import bundled
from tests.unit.test_fuzz_instance import mutated_seed

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
CT_SERIES = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
CT_SOP = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
# pydicom warns about each invalid value it decodes, which mutated files are full of.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@dataclass
class Deployment:
    services: Services
    view: DicomwebServices

    def ingest_all(self) -> None:
        site = self.services.settings.default_site
        for obj in self.services.store.list_keys(site_prefix(site)):
            if obj.key.endswith(INSTANCE_SUFFIX):
                event = ObjectEvent(obj.key, etag=obj.etag)
                try:
                    ingest_object(self.services.store, self.services.index_writer, event)
                except InvalidInstanceError:
                    pass


@pytest.fixture(scope="module")
def deployment(moto_server: MotoProcess) -> Iterator[Deployment]:
    names = ResourceNames(deployment=f"fuzz{uuid.uuid4().hex[:8]}")
    services = Services(
        create_resources(Settings.for_names(names, endpoint_url=moto_server.endpoint_url))
    )
    deployment = Deployment(services, dicomweb_services(services))
    parts = [
        Part(bundled(name).read_bytes(), content_type="application/dicom")
        for name in ("CT_small.dcm", "MR_small.dcm")
    ]
    body, content_type = build_multipart_related(parts, "application/dicom")
    response = handle(
        event("POST", "/studies", {}, {"Content-Type": content_type}, body), None, deployment.view
    )
    assert response["statusCode"] == 200, response["body"]
    deployment.ingest_all()
    yield deployment


def event(
    method: str,
    path: str,
    query: dict[str, list[str]],
    headers: dict[str, str],
    body: bytes | None = None,
) -> dict[str, Any]:
    """Return an API Gateway REST proxy event as the local adapter builds it."""
    headers = {"Host": "127.0.0.1", "X-Forwarded-Proto": "http", **headers}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "requestContext": {
            "stage": "dicomweb",
            "requestId": "fuzz",
            "path": f"/dicomweb{path}",
            "httpMethod": method,
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": base64.b64encode(body).decode("ascii") if body else None,
        "isBase64Encoded": bool(body),
    }


segments = st.one_of(
    st.sampled_from(
        [
            CT_STUDY,
            CT_SERIES,
            CT_SOP,
            "1.2.3",
            "studies",
            "series",
            "instances",
            "metadata",
            "frames",
            "1",
            "0",
            "1,2",
            "99999999999999999999",
            "rendered",
            "thumbnail",
            "bulkdata",
            "7FE00010",
            "pixeldata",
            "",
            "%2F",
            "..",
        ]
    ),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/"), max_size=12),
)


@st.composite
def paths(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["", "", "/sites/default", "/sites/other", "/sites/"]))
    real = [
        f"/studies/{CT_STUDY}",
        f"/studies/{CT_STUDY}/series/{CT_SERIES}",
        f"/studies/{CT_STUDY}/series/{CT_SERIES}/instances/{CT_SOP}",
        "/studies",
        "/series",
        "/instances",
    ]
    base = draw(st.sampled_from(real))
    tail = draw(st.lists(segments, max_size=4)) if draw(st.booleans()) else []
    return prefix + "/".join([base, *tail]) if tail else prefix + base


query_name_list = st.sampled_from(
    [
        "PatientName",
        "StudyDate",
        "limit",
        "offset",
        "includefield",
        "fuzzymatching",
        "quality",
        "viewport",
        "window",
        "annotation",
        "charset",
        "accept",
        "SeriesInstanceUID",
    ]
)
query_names = mostly(query_name_list, st.text(max_size=10))
query_value_list = st.sampled_from(
    ["", "*", "all", "10", "-1", "²", "20040119-", "20040230", "CT", "50", "10,10", "1,2,3,4"]
)
query_values = mostly(query_value_list, st.text(max_size=20))
accepts = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "*/*",
            "application/dicom+json",
            'multipart/related; type="application/dicom"; transfer-syntax=*',
            'multipart/related; type="application/octet-stream"',
            'multipart/related; type="image/jls"',
            "image/jpeg",
            "image/png",
            "application/dicom+xml",
            "text/html",
            "application/dicom; q=2",
        ]
    ),
    st.text(max_size=40),
)


@st.composite
def stow_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["mutated", "mutated", "random", "raw"]))
    if kind == "raw":
        return draw(st.text(max_size=60)), draw(st.binary(max_size=200))
    contents = [draw(mutated_seed())] if kind == "mutated" else [draw(st.binary(max_size=200))]
    body, content_type = build_multipart_related(
        [Part(content, content_type="application/dicom") for content in contents],
        "application/dicom",
    )
    return content_type, body


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(st.sampled_from(["GET", "GET", "HEAD", "POST", "OPTIONS"]))
    query = draw(
        st.dictionaries(query_names, st.lists(query_values, min_size=1, max_size=2), max_size=3)
    )
    headers: dict[str, str] = {}
    accept = draw(accepts)
    if accept is not None:
        headers["Accept"] = accept
    body = None
    path = draw(paths())
    if method == "POST":
        content_type, body = draw(stow_bodies())
        headers["Content-Type"] = content_type
        path = draw(st.sampled_from(["/studies", f"/studies/{CT_STUDY}", "/sites/default/studies"]))
    return event(method, path, query, headers, body)


@fuzz_settings(100, long_share=20)
@given(request=requests())
def test_handler_never_500(deployment: Deployment, request: dict[str, Any]) -> None:
    response = handle(request, None, deployment.view)
    assert response["statusCode"] != 500, (request["httpMethod"], request["path"], response["body"])
    if request["httpMethod"] == "POST":
        deployment.ingest_all()
