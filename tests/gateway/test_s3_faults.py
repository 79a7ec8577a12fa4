"""C-STORE while S3 fails: botocore retries, gives up, the modality gets 0xA700, nothing is kept.

The gateway writes through the production S3 client configuration (``cirrus.aws``: standard
retry mode, 4 retries) to moto behind ``tests.fault_proxy.FaultProxy``, which responds to the
chosen S3 write operations with an error or drops their connections. Once the proxy's
faults are cleared, the same instance is stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cirrus.aws import AwsClients
from cirrus.config import Settings
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import OUT_OF_RESOURCES, STORE_UNAVAILABLE_COMMENT, SUCCESS
from cirrus.index.claims import CLAIM, claim_pk
from cirrus.index.models import get_record
from cirrus.storage.keys import InstanceKey
from cirrus.storage.objects import SINGLE_PUT_MAX_BYTES, ObjectStore
from tests.fault_proxy import DROP, FaultProxy, part_numbers, s3
from tests.gateway.gateways import start_gateway
from tests.gateway.scu import (
    associate,
    fresh_ct,
    send_file_as_is,
    stored_objects,
)
from tests.gateway.test_large import (
    data_set_digest,
    object_digest,
    spool_files,
    write_large_instance,
)

pytestmark = pytest.mark.timeout(120)

CT_CONTEXT = [(CTImageStorage, ExplicitVRLittleEndian)]
# botocore's attempts per request in the production configuration of ``cirrus.aws``: the first
# and the 4 retries of ``retries={"max_attempts": 4}``, which botocore counts without the first.
S3_ATTEMPTS = 5
# botocore waits up to 1 + 2 + 4 + 8 s between those attempts (standard mode: a random part of
# 2 ** retry seconds), so the sender waits longer than that for its response.
SCU_TIMEOUT_SECONDS = 60


@pytest.fixture
def proxy(gateway_settings: Settings) -> Iterator[FaultProxy]:
    assert gateway_settings.endpoint_url is not None
    with FaultProxy(gateway_settings.endpoint_url) as running:
        yield running


@pytest.fixture
def proxied_gateway(gateway_settings: Settings, proxy: FaultProxy) -> Iterator[Gateway]:
    proxied = dataclasses.replace(gateway_settings, endpoint_url=proxy.endpoint_url)
    store = ObjectStore(
        AwsClients(proxied).s3, gateway_settings.bucket, gateway_settings.kms_key_id
    )
    with start_gateway(gateway_settings, store) as gateway:
        yield gateway


def claimed(gateway: Gateway, object_key: str) -> bool:
    """Tell whether the index has a claim of the instance's SOP Instance UID."""
    key = InstanceKey.parse(object_key)
    model = gateway.ae.context.services.index_model
    return get_record(model, claim_pk(key.site, key.sop), CLAIM, consistent_read=True) is not None


@pytest.mark.parametrize("fault", [503, 500, DROP], ids=["503", "500", "dropped"])
def test_put_failure_then_recovery(
    proxied_gateway: Gateway,
    proxy: FaultProxy,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fault: int,
) -> None:
    path, key = fresh_ct(tmp_path)
    before = stored_objects(archive)
    proxy.fail(s3("PutObject"), fault)

    with associate(proxied_gateway.port, CT_CONTEXT) as assoc:
        assoc.dimse_timeout = SCU_TIMEOUT_SECONDS
        failed = send_file_as_is(monkeypatch, assoc, path)
        after_failure = stored_objects(archive)
        spool_after_failure = spool_files(proxied_gateway)
        claimed_after_failure = claimed(proxied_gateway, key)
        proxy.clear()
        stored = send_file_as_is(monkeypatch, assoc, path)

    assert failed.Status == OUT_OF_RESOURCES
    assert failed.ErrorComment == STORE_UNAVAILABLE_COMMENT
    # botocore's retries ran and then gave up.
    assert proxy.fault_count("PutObject") == S3_ATTEMPTS
    assert after_failure == before
    assert spool_after_failure == []
    # The SOP Instance UID stays free for the instance sent with other study or series UIDs.
    assert not claimed_after_failure
    assert stored.Status == SUCCESS
    assert claimed(proxied_gateway, key)
    assert object_digest(archive, key) == data_set_digest(path)
    assert spool_files(proxied_gateway) == []


def test_failed_multipart_upload_aborted(
    proxied_gateway: Gateway,
    proxy: FaultProxy,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    path = tmp_path / "large.dcm"
    key = write_large_instance(path, 2 * SINGLE_PUT_MAX_BYTES)
    sop_class = pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID
    before = stored_objects(archive)
    proxy.fail(part_numbers(2), 503)

    with associate(proxied_gateway.port, [(sop_class, ExplicitVRLittleEndian)]) as assoc:
        assoc.dimse_timeout = SCU_TIMEOUT_SECONDS
        failed = send_file_as_is(monkeypatch, assoc, path)
        uploads_after_failure = archive._client.list_multipart_uploads(Bucket=archive.bucket)
        after_failure = stored_objects(archive)
        proxy.clear()
        stored = send_file_as_is(monkeypatch, assoc, path)

    assert failed.Status == OUT_OF_RESOURCES
    assert failed.ErrorComment == STORE_UNAVAILABLE_COMMENT
    assert proxy.fault_count("UploadPart") == S3_ATTEMPTS
    assert proxy.count("AbortMultipartUpload") >= 1
    assert uploads_after_failure.get("Uploads", []) == []
    assert after_failure == before
    assert stored.Status == SUCCESS
    assert object_digest(archive, key) == data_set_digest(path)
    assert spool_files(proxied_gateway) == []
