"""STOW-RS while S3 fails: 503 with Retry-After and 0xA700 per instance, and nothing kept.

The DICOMweb handler runs behind the local HTTP adapter and writes to moto through
``tests.fault_proxy.FaultProxy``. Its S3 client makes one retry instead of the production
four, which keeps the test short; the gateway's S3 fault tests run the production retries.
After the proxy faults are cleared, the same request stores every instance, and QIDO finds them once
ingested.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import boto3
import pytest
import requests
from botocore.config import Config

from cirrus.config import Settings
from cirrus.index.claims import CLAIM, claim_pk
from cirrus.index.models import get_record
from cirrus.index.writer import IndexWriter
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.http import serve_http
from cirrus.services import Services
from cirrus.storage.keys import INSTANCE_SUFFIX, site_prefix
from cirrus.storage.objects import ObjectStore
from functions.dicomweb.handler import dicomweb_services, handle
from tests.fault_proxy import DROP, FaultProxy, s3
from tests.integration.test_dicomweb_stow_wado import (
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_SEQUENCE,
    encode,
    post_parts,
    read_test_file,
)

pytestmark = pytest.mark.timeout(120)

OUT_OF_RESOURCES = 0xA700
# The first attempt and one retry.
S3_ATTEMPTS = 2


@dataclasses.dataclass
class ProxiedDicomweb:
    url: str
    proxy: FaultProxy
    # The archive as moto stores it, read without the proxy.
    archive: ObjectStore
    services: Services

    def keys(self) -> list[str]:
        prefix = site_prefix(self.services.settings.default_site)
        return [obj.key for obj in self.archive.list_keys(prefix)]

    def claimed(self, sop: str) -> bool:
        """Tell whether the index has a claim of the SOP Instance UID ``sop``."""
        pk = claim_pk(self.services.settings.default_site, sop)
        model = self.services.index_model
        return get_record(model, pk, CLAIM, consistent_read=True) is not None

    def ingest_all(self) -> int:
        writer = IndexWriter(self.services.index_model, self.archive)
        keys = [key for key in self.keys() if key.endswith(INSTANCE_SUFFIX)]
        for key in keys:
            ingest_object(self.archive, writer, ObjectEvent(key))
        return len(keys)


@pytest.fixture
def dicomweb(settings: Settings, object_store: ObjectStore) -> Iterator[ProxiedDicomweb]:
    assert settings.endpoint_url is not None
    with FaultProxy(settings.endpoint_url) as proxy:
        proxied = dataclasses.replace(settings, endpoint_url=proxy.endpoint_url)
        client = boto3.client(
            "s3",
            endpoint_url=proxy.endpoint_url,
            config=Config(retries={"max_attempts": S3_ATTEMPTS - 1, "mode": "standard"}),
        )
        services = Services(proxied)
        services.store = ObjectStore(client, settings.bucket, settings.kms_key_id)
        view = dicomweb_services(services)
        server = serve_http(functools.partial(handle, services=view), "127.0.0.1", 0)
        try:
            yield ProxiedDicomweb(
                f"http://127.0.0.1:{server.port}/dicomweb", proxy, object_store, services
            )
        finally:
            server.shutdown()


def qido_instances(url: str, study: str) -> list[object]:
    response = requests.get(f"{url}/studies/{study}/instances", timeout=30)
    assert response.status_code in (200, 204), response.text
    return list(response.json()) if response.status_code == 200 else []


@pytest.mark.parametrize("fault", [503, DROP], ids=["503", "dropped"])
def test_stow_s3_failure_then_recovery(dicomweb: ProxiedDicomweb, fault: int) -> None:
    datasets = [read_test_file(name) for name in ("CT_small.dcm", "MR_small.dcm")]
    parts = [encode(ds) for ds in datasets]
    study = datasets[0].StudyInstanceUID
    dicomweb.proxy.fail(s3("PutObject"), fault)

    failed = post_parts(f"{dicomweb.url}/studies", parts)
    keys_after_failure = dicomweb.keys()
    ingested_after_failure = dicomweb.ingest_all()
    found_after_failure = qido_instances(dicomweb.url, study)
    claims_after_failure = [dicomweb.claimed(ds.SOPInstanceUID) for ds in datasets]
    dicomweb.proxy.clear()
    stored = post_parts(f"{dicomweb.url}/studies", parts)
    ingested = dicomweb.ingest_all()

    assert failed.status_code == 503
    assert int(failed.headers["Retry-After"]) > 0
    body = failed.json()
    reasons = [item[FAILURE_REASON]["Value"] for item in body[FAILED_SOP_SEQUENCE]["Value"]]
    assert reasons == [[OUT_OF_RESOURCES], [OUT_OF_RESOURCES]]
    assert REFERENCED_SOP_SEQUENCE not in body
    assert dicomweb.proxy.fault_count("PutObject") == 2 * S3_ATTEMPTS
    assert keys_after_failure == []
    assert ingested_after_failure == 0
    assert found_after_failure == []
    assert claims_after_failure == [False, False]
    assert stored.status_code == 200, stored.text
    assert ingested == 2
    assert len(qido_instances(dicomweb.url, study)) == 1
