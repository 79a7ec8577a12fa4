"""Shared parts of the access tests: principals, signed clients and a two-site archive.

The DICOMweb handler runs behind the local HTTP adapter with SigV4 verification, on a moto
deployment. Clients sign with botocore's ``SigV4Auth``, as an AWS SDK would for API Gateway.
Audit records go to ``RecordingAudit``, which keeps the events the handler passes to the log.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pydicom
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pydicom.uid import generate_uid

from cirrus.access import AccessPolicy
from cirrus.audit import AuditEvent, AuditLog, DeletionRecord
from cirrus.config import ResourceNames, Settings
from cirrus.dicomweb.app import DicomwebServices
from cirrus.dicomweb.multipart import Part, build_multipart_related
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.http import HttpServer, serve_http
from cirrus.local.moto_process import MotoProcess
from cirrus.local.resources import create_resources
from cirrus.local.sigv4 import LocalAuthentication, SigV4Verifier, parse_credentials
from cirrus.services import Services
from cirrus.storage.keys import INSTANCE_SUFFIX
from functions.dicomweb.handler import dicomweb_services, handle
from tests.integration.dicomweb_stack import encode, read

REGION = "us-east-1"
ACCOUNT = "111122223333"


def role(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


NORTH_MODALITY = role("north-modality")
NORTH_READER = role("north-reader")
NORTH_QUERY = role("north-query")
NORTH_ALL = role("north-all")
SOUTH_ALL = role("south-all")
TELERADIOLOGY = role("teleradiology")
BOTH_STORE = role("both-store")
STRANGER = role("stranger")

ACCESS_DOCUMENT = f"""{{
  "principals": {{
    "{NORTH_MODALITY}": {{"north": ["store"]}},
    "{NORTH_READER}": {{"north": ["query", "retrieve"]}},
    "{NORTH_QUERY}": {{"north": ["query"]}},
    "{NORTH_ALL}": {{"north": ["store", "query", "retrieve", "delete"]}},
    "{SOUTH_ALL}": {{"south": ["store", "query", "retrieve", "delete"]}},
    "{TELERADIOLOGY}": {{"north": ["query", "retrieve"], "south": ["query", "retrieve"]}},
    "{BOTH_STORE}": {{"north": ["store"], "south": ["store"]}}
  }}
}}"""

# One access key per principal. STRANGER signs correctly but has no grants.
KEYS = {
    NORTH_MODALITY: "AKIANORTHMODALITY001",
    NORTH_READER: "AKIANORTHREADER00001",
    NORTH_QUERY: "AKIANORTHQUERY000001",
    NORTH_ALL: "AKIANORTHALL00000001",
    SOUTH_ALL: "AKIASOUTHALL00000001",
    TELERADIOLOGY: "AKIATELERADIOLOGY001",
    BOTH_STORE: "AKIABOTHSTORE0000001",
    STRANGER: "AKIASTRANGER00000001",
}


def secret_of(principal: str) -> str:
    return f"secret-of-{principal.rsplit('/', 1)[1]}-0123456789"


CREDENTIALS = parse_credentials(
    {
        "credentials": {
            key: {"secret": secret_of(principal), "principal": principal}
            for principal, key in KEYS.items()
        }
    }
)


class RecordingAudit(AuditLog):
    """An audit log that keeps each event and deletion record in memory."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.deletions: list[DeletionRecord] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def record_deletion(self, record: DeletionRecord) -> str:
        self.deletions.append(record)
        return f"deletion-{len(self.deletions)}"

    def take(self) -> list[AuditEvent]:
        """Return the events recorded since the last call and forget them."""
        events, self.events = self.events, []
        return events


@dataclass
class SignedClient:
    """Sends DICOMweb requests signed with SigV4 for ``execute-api``, as an AWS SDK would."""

    url: str
    access_key: str
    secret_key: str
    region: str = REGION

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        signed_at: datetime | None = None,
        sent_body: bytes | None = None,
    ) -> requests.Response:
        """Sign and send one request. ``sent_body`` replaces the signed body on the wire."""
        aws = AWSRequest(
            method=method,
            url=f"{self.url}{path}",
            params=dict(params or {}),
            data=body,
            headers=dict(headers or {}),
        )
        signer = SigV4Auth(
            Credentials(self.access_key, self.secret_key), "execute-api", self.region
        )
        with signing_clock(signed_at):
            signer.add_auth(aws)
        prepared = aws.prepare()
        return requests.request(
            method,
            prepared.url,
            headers=dict(prepared.headers.items()),
            data=body if sent_body is None else sent_body,
            timeout=30,
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def store(self, path: str, datasets: list[pydicom.Dataset]) -> requests.Response:
        body, content_type = stow_body(datasets)
        return self.request("POST", path, body=body, headers={"Content-Type": content_type})


@contextmanager
def signing_clock(signed_at: datetime | None) -> Iterator[None]:
    """Make botocore sign with the time ``signed_at``, or the current time when None."""
    if signed_at is None:
        yield
        return
    with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
        yield


def stow_body(datasets: list[pydicom.Dataset]) -> tuple[bytes, str]:
    parts = [Part(encode(ds), content_type="application/dicom") for ds in datasets]
    return build_multipart_related(parts, "application/dicom")


@dataclass
class AccessStack:
    """The handler with access rules behind the adapter with SigV4, and its audit log."""

    url: str
    server: HttpServer
    services: Services
    view: DicomwebServices
    audit: RecordingAudit

    def client(self, principal: str) -> SignedClient:
        key = KEYS[principal]
        return SignedClient(self.url, key, secret_of(principal))

    def index(self) -> int:
        """Index every stored instance of every site, as the ingest queue would."""
        count = 0
        for obj in self.services.store.list_keys("sites/"):
            if obj.key.endswith(INSTANCE_SUFFIX):
                event = ObjectEvent(obj.key, etag=obj.etag)
                ingest_object(self.services.store, self.services.index_writer, event)
                count += 1
        return count

    def instance_keys(self, site: str) -> list[str]:
        return sorted(
            obj.key
            for obj in self.services.store.list_keys(f"sites/{site}/")
            if obj.key.endswith(INSTANCE_SUFFIX)
        )


def new_deployment(moto_server: MotoProcess) -> Settings:
    """Return the settings of a new deployment on ``moto_server``, sharing no data."""
    names = ResourceNames(deployment=f"ac{uuid.uuid4().hex[:12]}")
    return create_resources(Settings.for_names(names, endpoint_url=moto_server.endpoint_url))


def start_access_stack(settings: Settings, policy: AccessPolicy | None) -> AccessStack:
    """Start the handler with ``policy`` (None: open) behind the adapter.

    With a policy, the adapter verifies signatures with ``CREDENTIALS``; open, it verifies none.
    """
    services = Services(settings)
    audit = RecordingAudit()
    view = dataclasses.replace(dicomweb_services(services), access=policy, audit=audit)
    authentication = (
        LocalAuthentication(SigV4Verifier(CREDENTIALS, REGION), audit)
        if policy is not None
        else None
    )
    server = serve_http(
        functools.partial(handle, services=view), "127.0.0.1", 0, authentication=authentication
    )
    url = f"http://127.0.0.1:{server.port}/dicomweb"
    return AccessStack(url, server, services, view, audit)


def new_study(
    names: tuple[str, ...] = ("CT_small.dcm",), study: str | None = None
) -> list[pydicom.Dataset]:
    """Return instances of one new study, one series per file, with fresh UIDs."""
    study = study or generate_uid()
    datasets = []
    for name in names:
        ds = read(name)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDate = "20240101"
        datasets.append(ds)
    return datasets


def now() -> datetime:
    return datetime.now(UTC)
