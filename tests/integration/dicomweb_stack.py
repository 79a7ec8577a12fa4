"""The DICOMweb Lambda handler behind the local HTTP adapter, on moto, for HTTP tests.

The handler gets the same services as in the local stack (QIDO, claims, delete and audit).
``index`` runs ingest on every stored object in place of the queue poller, so a test decides
when stored instances become visible.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from cirrus.config import Settings
from cirrus.dicomweb.multipart import Part, build_multipart_related
from cirrus.index.models import IndexRecord
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.http import HttpServer, serve_http
from cirrus.services import Services
from cirrus.storage.keys import INSTANCE_SUFFIX, site_prefix
from cirrus.storage.objects import ObjectStore
from functions.dicomweb.handler import dicomweb_services, handle
from tests.pydicom_files import bundled

STOW_TYPE = 'multipart/related; type="application/dicom"'


@dataclass
class Stack:
    url: str
    server: HttpServer
    services: Services

    @property
    def client(self) -> DICOMwebClient:
        return DICOMwebClient(url=self.url)

    @property
    def store(self) -> ObjectStore:
        return self.services.store

    @property
    def model(self) -> type[IndexRecord]:
        return self.services.index_model

    @property
    def site(self) -> str:
        return self.services.settings.default_site

    def index(self) -> int:
        """Index every stored instance, as the ingest queue would, and return how many."""
        count = 0
        for obj in self.store.list_keys(site_prefix(self.site)):
            if obj.key.endswith(INSTANCE_SUFFIX):
                event = ObjectEvent(obj.key, etag=obj.etag)
                ingest_object(self.store, self.services.index_writer, event)
                count += 1
        return count

    def instance_keys(self) -> list[str]:
        return sorted(
            obj.key
            for obj in self.store.list_keys(site_prefix(self.site))
            if obj.key.endswith(INSTANCE_SUFFIX)
        )


def start_stack(settings: Settings) -> Stack:
    services = Services(settings)
    view = dicomweb_services(services)
    server = serve_http(functools.partial(handle, services=view), "127.0.0.1", 0)
    return Stack(f"http://127.0.0.1:{server.port}/dicomweb", server, services)


def running_stack(settings: Settings) -> Iterator[Stack]:
    """Yield a started stack and shut it down afterwards, for a module's ``stack`` fixture."""
    running = start_stack(settings)
    yield running
    running.server.shutdown()


def read(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(bundled(name))


def encode(ds: pydicom.Dataset) -> bytes:
    with BytesIO() as buffer:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()


def post_instances(
    url: str, parts: list[bytes], headers: dict[str, str] | None = None
) -> requests.Response:
    body, content_type = build_multipart_related(
        [Part(part, content_type="application/dicom") for part in parts], "application/dicom"
    )
    return requests.post(
        url, data=body, headers={"Content-Type": content_type, **(headers or {})}, timeout=30
    )
