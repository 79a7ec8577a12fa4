"""Limits of the gateway: associations, instance size, and spool space per association and in all.

A request over a limit is rejected with a reason, and a C-STORE rejection leaves the
association usable.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cirrus.config import DEFAULT_AE_TITLE, Settings
from cirrus.gateway.limits import DEFAULT_MAX_INSTANCE_BYTES, GatewayLimits
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import OUT_OF_RESOURCES, SUCCESS
from cirrus.local.moto_process import LOOPBACK
from cirrus.services import Services
from cirrus.storage.objects import ObjectStore, StoredObject
from tests.gateway.gateways import OPEN_CONFIG
from tests.gateway.scu import (
    DCMTK_TIMEOUT_SECONDS,
    associate,
    dataset_bytes,
    fresh_ct,
    send_file_as_is,
    stored_objects,
    wait_until,
)
from tests.gateway.test_large import write_large_instance
from tests.gateway.test_store_failures import GatedStore

CT_CONTEXT = [(CTImageStorage, ExplicitVRLittleEndian)]
SIMULTANEOUS = 16


def limited_gateway(
    settings: Settings, limits: GatewayLimits, store: ObjectStore | None = None
) -> Gateway:
    services = Services(settings)
    if store is not None:
        services.store = store
    return Gateway.start(services, OPEN_CONFIG, LOOPBACK, 0, limits=limits)


def send_path(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, path: Path, sop_class: str
) -> Dataset:
    with associate(gateway.port, [(sop_class, ExplicitVRLittleEndian)]) as assoc:
        return send_file_as_is(monkeypatch, assoc, path)


def test_instance_over_maximum_rejected(
    gateway_settings: Settings,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    large = tmp_path / "large.dcm"
    large_key = write_large_instance(large, 600_000)
    large_class = pydicom.dcmread(large, stop_before_pixels=True).SOPClassUID
    small, small_key = fresh_ct(tmp_path)
    limits = GatewayLimits(max_instance_bytes=200_000, spool_bytes=1_000_000)

    with limited_gateway(gateway_settings, limits) as gateway:
        contexts = [(large_class, ExplicitVRLittleEndian), *CT_CONTEXT]
        with associate(gateway.port, contexts) as assoc:
            rejected = send_file_as_is(monkeypatch, assoc, large)
            spool_after_rejection = gateway.ae.spool.used_bytes
            stored = send_file_as_is(monkeypatch, assoc, small)
        spool_files = os.listdir(gateway.ae.spool.directory)

    assert rejected.Status == OUT_OF_RESOURCES
    assert rejected.ErrorComment == "instance exceeds the gateway's maximum of 200000 bytes"
    assert large_key not in stored_objects(archive)
    assert spool_after_rejection == 0
    assert stored.Status == SUCCESS
    assert archive.size(small_key) > 0
    assert spool_files == []


def test_association_over_maximum_rejected(
    gateway_settings: Settings,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    large = tmp_path / "large.dcm"
    large_key = write_large_instance(large, 600_000)
    large_class = pydicom.dcmread(large, stop_before_pixels=True).SOPClassUID
    small, small_key = fresh_ct(tmp_path)
    # The large instance, two 512 KiB frames, is within the instance maximum.
    limits = GatewayLimits(
        max_instance_bytes=2_000_000, spool_bytes=4_000_000, association_spool_bytes=200_000
    )

    with limited_gateway(gateway_settings, limits) as gateway:
        contexts = [(large_class, ExplicitVRLittleEndian), *CT_CONTEXT]
        with associate(gateway.port, contexts) as assoc:
            rejected = send_file_as_is(monkeypatch, assoc, large)
            spool_after_rejection = gateway.ae.spool.used_bytes
            stored = send_file_as_is(monkeypatch, assoc, small)
        spool_files = os.listdir(gateway.ae.spool.directory)

    assert rejected.Status == OUT_OF_RESOURCES
    assert rejected.ErrorComment == "association exceeds its maximum of 200000 spooled bytes"
    assert large_key not in stored_objects(archive)
    assert spool_after_rejection == 0
    assert stored.Status == SUCCESS
    assert archive.size(small_key) > 0
    assert spool_files == []


@contextmanager
def paused_reactor(assoc: Association) -> Iterator[None]:
    """Stop the requestor's own thread from taking responses off its DIMSE queue.

    pynetdicom 3.0.4's ``send_*`` methods pause it the same way while they wait.
    """
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.001)
    try:
        yield
    finally:
        assoc._reactor_checkpoint.set()


def store_request(path: Path, message_id: int) -> C_STORE:
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    request.Priority = 2
    request.DataSet = BytesIO(dataset_bytes(path.read_bytes()))
    return request


def test_requests_ahead_over_association_maximum(
    gateway_settings: Settings,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    first, first_key = fresh_ct(tmp_path)
    second, second_key = fresh_ct(tmp_path)
    third, third_key = fresh_ct(tmp_path)
    size = first.stat().st_size
    # The association's share of the spool has room for one CT_small, the spool for ten.
    limit = size + 1000
    limits = GatewayLimits(
        max_instance_bytes=limit, spool_bytes=10 * size, association_spool_bytes=limit
    )
    gated = GatedStore(gateway_settings)
    received: list[object] = []

    def on_received(event: Event) -> None:
        received.append(event.message)

    with limited_gateway(gateway_settings, limits, gated) as gateway:
        with associate(gateway.port, CT_CONTEXT) as assoc:
            (acceptor,) = gateway.active_associations()
            acceptor.bind(evt.EVT_DIMSE_RECV, on_received)
            context_id = assoc.accepted_contexts[0].context_id
            assert context_id is not None
            with paused_reactor(assoc):
                # The second request goes out before the response to the first, whose
                # upload waits for ``gated.release``.
                assoc.dimse.send_msg(store_request(first, 1), context_id)
                assoc.dimse.send_msg(store_request(second, 2), context_id)
                both_received = wait_until(lambda: len(received) == 2)
                gated.release.set()
                responses = [assoc.dimse.get_msg(block=True)[1] for _ in range(2)]
            third_status = send_file_as_is(monkeypatch, assoc, third)
        spool_after = gateway.ae.spool.used_bytes
        spool_files = os.listdir(gateway.ae.spool.directory)

    assert both_received
    statuses = {rsp.MessageIDBeingRespondedTo: rsp for rsp in responses if rsp is not None}
    assert statuses.keys() == {1, 2}
    assert statuses[1].Status == SUCCESS
    assert statuses[2].Status == OUT_OF_RESOURCES
    assert statuses[2].ErrorComment == f"association exceeds its maximum of {limit} spooled bytes"
    assert third_status.Status == SUCCESS
    stored = stored_objects(archive)
    assert first_key in stored
    assert second_key not in stored
    assert third_key in stored
    assert spool_after == 0
    assert spool_files == []


def test_full_spool_rejects_until_freed(
    gateway_settings: Settings,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    first, first_key = fresh_ct(tmp_path)
    second, second_key = fresh_ct(tmp_path)
    size = first.stat().st_size
    # Room for one CT_small in the spool, not for two.
    limits = GatewayLimits(max_instance_bytes=size + 1000, spool_bytes=size + 1000)
    gated = GatedStore(gateway_settings)
    results: list[Dataset] = []

    with limited_gateway(gateway_settings, limits, gated) as gateway:
        sender = threading.Thread(
            target=lambda: results.append(send_path(gateway, monkeypatch, first, CTImageStorage))
        )
        sender.start()
        assert wait_until(lambda: gateway.ae.spool.used_bytes > 0)
        refused = send_path(gateway, monkeypatch, second, CTImageStorage)
        gated.release.set()
        sender.join(timeout=10)
        retried = send_path(gateway, monkeypatch, second, CTImageStorage)
        spool_after = gateway.ae.spool.used_bytes

    assert refused.Status == OUT_OF_RESOURCES
    assert refused.ErrorComment == "the gateway's spool space is full; retry later"
    assert [status.Status for status in results] == [SUCCESS]
    assert retried.Status == SUCCESS
    assert archive.size(first_key) > 0
    assert archive.size(second_key) > 0
    assert spool_after == 0


def test_associations_over_maximum_rejected(gateway_settings: Settings) -> None:
    limits = GatewayLimits(max_associations=2)

    with limited_gateway(gateway_settings, limits) as gateway:
        with associate(gateway.port, CT_CONTEXT), associate(gateway.port, CT_CONTEXT):
            ae = AE("TESTSCU")
            ae.acse_timeout = ae.network_timeout = 10
            ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
            third = ae.associate(LOOPBACK, gateway.port, ae_title=DEFAULT_AE_TITLE)
            rejection = third.acceptor.primitive
        # A released association holds its slot until its threads have ended.
        slots_freed = wait_until(lambda: not gateway.active_associations())
        with associate(gateway.port, CT_CONTEXT) as after:
            accepted_after = after.is_established

    assert third.is_rejected
    assert rejection is not None
    # PS3.8 9.3.4: rejected-transient, UL service-provider (presentation related function),
    # local-limit-exceeded.
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (2, 3, 2)
    assert slots_freed
    assert accepted_after


class BarrierStore(ObjectStore):
    """An object store whose writes wait until ``parties`` of them are in flight at once.

    Once they met, later writes pass at once. After 20 s without them, the barrier breaks,
    every write passes, and ``met`` stays false.
    """

    def __init__(self, archive: ObjectStore, kms_key_id: str, parties: int) -> None:
        super().__init__(archive._client, archive.bucket, kms_key_id)
        self.barrier = threading.Barrier(parties, timeout=20)
        self.met = False

    def put(
        self, key: str, body: bytes, content_type: str = "", tags: Mapping[str, str] | None = None
    ) -> StoredObject:
        if not self.met:
            try:
                self.barrier.wait()
                self.met = True
            except threading.BrokenBarrierError:
                pass
        return super().put(key, body, tags=tags)


def test_sixteen_associations_store_at_once(
    gateway_settings: Settings, archive: ObjectStore, tmp_path: Path
) -> None:
    store = BarrierStore(archive, gateway_settings.kms_key_id, SIMULTANEOUS)
    batches = [[fresh_ct(tmp_path) for _ in range(3)] for _ in range(SIMULTANEOUS)]

    with limited_gateway(gateway_settings, GatewayLimits(), store) as gateway:
        senders = [
            subprocess.Popen(
                [
                    "storescu",
                    *("-to", "30", "-ta", "30", "-td", "30"),
                    *("-aec", DEFAULT_AE_TITLE, LOOPBACK, str(gateway.port)),
                    *(str(path) for path, _ in batch),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "TCP_NODELAY": "1"},
            )
            for batch in batches
        ]
        outputs = [sender.communicate(timeout=DCMTK_TIMEOUT_SECONDS * 2) for sender in senders]

    assert [sender.returncode for sender in senders] == [0] * SIMULTANEOUS, outputs
    assert store.met, f"fewer than {SIMULTANEOUS} writes were ever in flight at once"
    stored = stored_objects(archive)
    missing = [key for batch in batches for _, key in batch if key not in stored]
    assert missing == []


def test_limits_read_from_environment(tmp_path: Path) -> None:
    limits = GatewayLimits.from_env(
        {
            "CIRRUS_MAX_ASSOCIATIONS": "40",
            "CIRRUS_MAX_INSTANCE_BYTES": "1000",
            "CIRRUS_SPOOL_BYTES": "5000",
            "CIRRUS_SPOOL_DIR": str(tmp_path),
            "CIRRUS_ASSOCIATION_SPOOL_BYTES": "3000",
            "CIRRUS_MAX_PENDING_CONNECTIONS": "200",
            "CIRRUS_ACSE_TIMEOUT_SECONDS": "2.5",
            "CIRRUS_NETWORK_TIMEOUT_SECONDS": "30",
        }
    )
    defaults = GatewayLimits.from_env({})

    assert limits == GatewayLimits(40, 1000, 5000, tmp_path, 3000, 200, 2.5, 30.0)
    assert limits.association_spool_limit == 3000
    assert defaults == GatewayLimits()
    assert defaults.association_spool_limit == DEFAULT_MAX_INSTANCE_BYTES


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CIRRUS_MAX_ASSOCIATIONS": "many"}, "CIRRUS_MAX_ASSOCIATIONS 'many' is invalid"),
        ({"CIRRUS_MAX_ASSOCIATIONS": "0"}, "max_associations is 0"),
        ({"CIRRUS_MAX_INSTANCE_BYTES": "-5"}, "CIRRUS_MAX_INSTANCE_BYTES '-5' is invalid"),
        ({"CIRRUS_MAX_INSTANCE_BYTES": str(6 * 1024**3)}, "the largest object"),
        (
            {"CIRRUS_MAX_INSTANCE_BYTES": "2000", "CIRRUS_SPOOL_BYTES": "1000"},
            "the spool must hold at least one instance",
        ),
        ({"CIRRUS_SPOOL_DIR": "/nonexistent/spool"}, "is not a folder"),
        (
            {"CIRRUS_ASSOCIATION_SPOOL_BYTES": "2GiB"},
            "CIRRUS_ASSOCIATION_SPOOL_BYTES '2GiB' is invalid",
        ),
        ({"CIRRUS_ASSOCIATION_SPOOL_BYTES": "0"}, "association_spool_bytes is 0"),
        ({"CIRRUS_MAX_PENDING_CONNECTIONS": "0"}, "max_pending_connections is 0"),
        (
            {"CIRRUS_MAX_PENDING_CONNECTIONS": "lots"},
            "CIRRUS_MAX_PENDING_CONNECTIONS 'lots' is invalid",
        ),
        ({"CIRRUS_ACSE_TIMEOUT_SECONDS": "soon"}, "CIRRUS_ACSE_TIMEOUT_SECONDS 'soon' is invalid"),
        ({"CIRRUS_NETWORK_TIMEOUT_SECONDS": "nan"}, "CIRRUS_NETWORK_TIMEOUT_SECONDS 'nan' is"),
        ({"CIRRUS_NETWORK_TIMEOUT_SECONDS": "0"}, "network_timeout_seconds is 0.0"),
        (
            {
                "CIRRUS_SPOOL_BYTES": str(3 * 1024**3),
                "CIRRUS_ASSOCIATION_SPOOL_BYTES": str(4 * 1024**3),
            },
            "it must be from 1 to spool_bytes",
        ),
    ],
)
def test_invalid_limits_rejected(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GatewayLimits.from_env(environ)
