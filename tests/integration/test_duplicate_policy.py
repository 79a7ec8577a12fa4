"""One duplicate policy for C-STORE and STOW-RS, with the index and the store kept in agreement.

An instance sent again with the same study, series and SOP Instance UIDs replaces the stored
one, and identical bytes change nothing. One sent with its SOP Instance UID under other study
or series UIDs is rejected, with STOW-RS failure reason 0x0111 or C-STORE status 0xA900.
"""

from __future__ import annotations

from collections.abc import Iterator
from copy import deepcopy

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid
from pynetdicom import AE

from cirrus.config import Settings
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.server import Gateway
from cirrus.index.models import STUDY, get_record, instance_sk, series_sk, study_pk
from cirrus.storage.keys import InstanceKey
from tests.integration.dicomweb_stack import Stack, encode, post_instances, read, running_stack

FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
GATEWAY_AE_TITLE = "CIRRUS"


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


@pytest.fixture
def gateway(stack: Stack) -> Iterator[Gateway]:
    config = AEConfig(ae_title=GATEWAY_AE_TITLE, open=True, default_site=stack.site)
    with Gateway.start(stack.services, config, "127.0.0.1", 0) as running:
        yield running


def c_store(gateway: Gateway, ds: pydicom.Dataset) -> int:
    ae = AE(ae_title="DUPTEST")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title=GATEWAY_AE_TITLE)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    return int(status.Status)


def fresh_ct() -> pydicom.Dataset:
    ds = read("CT_small.dcm")
    ds.StudyInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def assert_index_agrees(stack: Stack, ds: pydicom.Dataset) -> None:
    """Check one object, one instance record with its ETag, and counts of one."""
    key = InstanceKey(stack.site, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    objects = [obj for obj in stack.store.list_keys(key.object_key)]
    assert [obj.key for obj in objects] == [key.object_key]
    pk = study_pk(stack.site, ds.StudyInstanceUID)
    record = get_record(stack.model, pk, instance_sk(ds.SeriesInstanceUID, ds.SOPInstanceUID))
    assert record is not None
    assert record.etag == objects[0].etag
    assert get_record(stack.model, pk, series_sk(ds.SeriesInstanceUID)).instance_count == 1
    study = get_record(stack.model, pk, STUDY)
    assert study.instance_count == 1
    assert study.series_count == 1


def retrieve(stack: Stack, ds: pydicom.Dataset) -> pydicom.Dataset:
    return stack.client.retrieve_instance(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )


def test_stow_identical_twice(stack: Stack) -> None:
    ds = fresh_ct()
    part10 = encode(ds)

    for attempt in range(2):
        response = post_instances(f"{stack.url}/studies", [part10])
        assert response.status_code == 200, attempt
        assert stack.index() == 1

    assert_index_agrees(stack, ds)


def test_stow_changed_content_replaces(stack: Stack) -> None:
    ds = fresh_ct()
    assert post_instances(f"{stack.url}/studies", [encode(ds)]).status_code == 200
    stack.index()
    changed = deepcopy(ds)
    changed.InstanceNumber = 99
    changed.ImageComments = "second version"

    response = post_instances(f"{stack.url}/studies", [encode(changed)])

    assert response.status_code == 200
    stack.index()
    assert_index_agrees(stack, ds)
    retrieved = retrieve(stack, ds)
    assert retrieved.InstanceNumber == 99
    assert retrieved.ImageComments == "second version"


def test_cstore_then_stow_identical(stack: Stack, gateway: Gateway) -> None:
    ds = fresh_ct()

    assert c_store(gateway, ds) == 0x0000
    stack.index()
    response = post_instances(f"{stack.url}/studies", [encode(ds)])

    assert response.status_code == 200
    stack.index()
    assert_index_agrees(stack, ds)


def test_stow_then_cstore_replaces(stack: Stack, gateway: Gateway) -> None:
    ds = fresh_ct()
    assert post_instances(f"{stack.url}/studies", [encode(ds)]).status_code == 200
    stack.index()
    changed = deepcopy(ds)
    changed.InstanceNumber = 42

    assert c_store(gateway, changed) == 0x0000

    stack.index()
    assert_index_agrees(stack, ds)
    assert retrieve(stack, ds).InstanceNumber == 42


def test_moved_instance_rejected_by_both(stack: Stack, gateway: Gateway) -> None:
    ds = fresh_ct()
    assert c_store(gateway, ds) == 0x0000
    stack.index()
    other_study = deepcopy(ds)
    other_study.StudyInstanceUID = generate_uid()
    other_series = deepcopy(ds)
    other_series.SeriesInstanceUID = generate_uid()

    response = post_instances(f"{stack.url}/studies", [encode(other_study)])
    cstore_status = c_store(gateway, other_series)

    assert response.status_code == 409
    (failure,) = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert failure[FAILURE_REASON]["Value"] == [0x0111]
    assert f"already stored in study {ds.StudyInstanceUID}" in response.headers["Warning"]
    assert cstore_status == 0xA900
    assert stack.index() == 1
    assert_index_agrees(stack, ds)
    moved = requests.get(f"{stack.url}/studies/{other_study.StudyInstanceUID}", timeout=30)
    assert moved.status_code == 404
