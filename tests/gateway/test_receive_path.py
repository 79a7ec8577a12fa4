"""The gateway's receive path: PDUs read into one buffer, spooled, and answered directly.

``cirrus.gateway.pdu_reads`` reads every PDU of a gateway association and decodes P-DATA-TF
itself, ``cirrus.gateway.store_requests`` decodes the C-STORE requests,
``cirrus.gateway.spool`` writes the File Meta Information of each spool file, and
``cirrus.gateway.store_responses`` encodes the C-STORE responses. Stored objects must be the
bytes sent behind the same File Meta Information as before; a PDU longer than the gateway
announced is still read whole; a command set in several fragments is still read; a malformed
or cut PDU ends the association, and its spool file is deleted; the metrics count the
responses sent directly.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cirrus.config import Settings
from cirrus.gateway.limits import GatewayLimits
from cirrus.gateway.metrics import GatewayMetrics
from cirrus.gateway.pdu_reads import decode_p_data_tf
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import SUCCESS
from cirrus.local.moto_process import LOOPBACK
from cirrus.services import Services
from cirrus.storage.objects import ObjectStore
from tests.gateway.gateways import OPEN_CONFIG
from tests.gateway.scu import (
    associate,
    dataset_bytes,
    fresh_ct,
    send_file_as_is,
    stored_objects,
    wait_until,
)
from tests.gateway.test_large import write_large_instance
from tests.gateway.test_limits import limited_gateway, paused_reactor
from tests.gateway.test_stalled_peers import spool_files, store_pdus, used

pytestmark = pytest.mark.timeout(120)

CT_CONTEXT = [(CTImageStorage, ExplicitVRLittleEndian)]
# Smaller than the fragments of ``store_pdus``, so each of its PDUs exceeds the maximum.
SMALL_MAX_PDU_BYTES = 4096


def test_instance_of_many_pdus_stored_as_sent(
    gateway: Gateway, archive: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "large.dcm"
    key = write_large_instance(path, 5_000_000)
    sop_class = pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID

    with associate(gateway.port, [(sop_class, ExplicitVRLittleEndian)]) as assoc:
        status = send_file_as_is(monkeypatch, assoc, path)

    assert status.Status == SUCCESS
    stored = archive.get(key)
    sent = path.read_bytes()
    assert dataset_bytes(stored) == dataset_bytes(sent)
    meta = pydicom.dcmread(io.BytesIO(stored), stop_before_pixels=True).file_meta
    assert meta.MediaStorageSOPClassUID == sop_class
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.ImplementationClassUID == PYNETDICOM_IMPLEMENTATION_UID
    assert meta.ImplementationVersionName == PYNETDICOM_IMPLEMENTATION_VERSION


def test_pdus_over_announced_maximum_stored(
    gateway: Gateway, archive: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path, key = fresh_ct(tmp_path)
    # Read from the AE when the gateway creates the association.
    monkeypatch.setattr(gateway.ae, "maximum_pdu_size", SMALL_MAX_PDU_BYTES)

    with associate(gateway.port, CT_CONTEXT) as assoc:
        context_id = assoc.accepted_contexts[0].context_id
        assert context_id is not None
        pdus = store_pdus(path, context_id)
        assert max(len(pdu) for pdu in pdus) > SMALL_MAX_PDU_BYTES
        with paused_reactor(assoc):
            assoc.dul.socket.socket.sendall(b"".join(pdus))  # type: ignore[union-attr]
            stored = wait_until(lambda: key in stored_objects(archive), timeout=20)

    assert stored, "the instance sent in PDUs over the announced maximum was not stored"
    assert dataset_bytes(archive.get(key)) == dataset_bytes(path.read_bytes())


def split_command(pdu: bytes) -> bytes:
    """Return the command set PDU ``pdu`` with its command in two fragments."""
    (item,) = decode_p_data_tf(bytearray(pdu)).presentation_data_value_items
    context_id = item.presentation_context_id
    value = item.presentation_data_value
    assert value is not None
    command = bytes(value[1:])
    primitive = P_DATA()
    primitive.presentation_data_value_list = [
        [context_id, b"\x01" + command[:20]],  # type: ignore[list-item]
        [context_id, b"\x03" + command[20:]],  # type: ignore[list-item]
    ]
    return P_DATA_TF(primitive).encode()


def test_command_in_two_fragments_stored(
    gateway: Gateway, archive: ObjectStore, tmp_path: Path
) -> None:
    path, key = fresh_ct(tmp_path)

    with associate(gateway.port, CT_CONTEXT) as assoc:
        context_id = assoc.accepted_contexts[0].context_id
        assert context_id is not None
        pdus = store_pdus(path, context_id)
        with paused_reactor(assoc):
            assert assoc.dul.socket is not None
            sock = assoc.dul.socket.socket
            assert sock is not None
            sock.sendall(split_command(pdus[0]) + b"".join(pdus[1:]))
            stored = wait_until(lambda: key in stored_objects(archive), timeout=20)

    assert stored, "the instance whose command came in two fragments was not stored"
    assert dataset_bytes(archive.get(key)) == dataset_bytes(path.read_bytes())


def test_pdv_past_pdu_end_aborts_and_frees(
    gateway_settings: Settings, archive: ObjectStore, tmp_path: Path
) -> None:
    path, key = fresh_ct(tmp_path)

    with limited_gateway(gateway_settings, GatewayLimits()) as gateway:
        with associate(gateway.port, CT_CONTEXT) as assoc:
            context_id = assoc.accepted_contexts[0].context_id
            assert context_id is not None
            pdus = store_pdus(path, context_id)
            # The second data set PDU's item claims one byte more than its PDU contains.
            broken = bytearray(pdus[2])
            item_length = int.from_bytes(broken[6:10], "big")
            broken[6:10] = (item_length + 1).to_bytes(4, "big")
            with paused_reactor(assoc):
                assert assoc.dul.socket is not None
                sock = assoc.dul.socket.socket
                assert sock is not None
                sock.sendall(b"".join(pdus[:2]))
                spooling = wait_until(lambda: gateway.ae.spool.used_bytes > 0)
                sock.sendall(bytes(broken))
                ended = wait_until(lambda: not gateway.active_associations(), timeout=10)
            aborted = wait_until(lambda: assoc.is_aborted, timeout=5)
            freed = wait_until(lambda: spool_files(gateway) == [] and used(gateway) == 0)

    assert spooling, "the gateway never spooled the first fragment"
    assert ended, "the association outlived its malformed PDU"
    assert aborted, "the requestor was not sent an A-ABORT"
    assert freed, f"spool still holds {spool_files(gateway)}"
    assert key not in stored_objects(archive)


def test_connection_closed_mid_pdu_frees_spool(
    gateway_settings: Settings, archive: ObjectStore, tmp_path: Path
) -> None:
    path, key = fresh_ct(tmp_path)

    with limited_gateway(gateway_settings, GatewayLimits()) as gateway:
        with associate(gateway.port, CT_CONTEXT) as assoc:
            context_id = assoc.accepted_contexts[0].context_id
            assert context_id is not None
            pdus = store_pdus(path, context_id)
            with paused_reactor(assoc):
                assert assoc.dul.socket is not None
                sock = assoc.dul.socket.socket
                assert sock is not None
                sock.sendall(b"".join(pdus[:2]) + pdus[2][: len(pdus[2]) // 2])
                spooling = wait_until(lambda: gateway.ae.spool.used_bytes > 0)
                sock.close()
                ended = wait_until(lambda: not gateway.active_associations(), timeout=10)
            freed = wait_until(lambda: spool_files(gateway) == [] and used(gateway) == 0)

    assert spooling, "the gateway never spooled the first fragment"
    assert ended, "the association outlived its closed connection"
    assert freed, f"spool still holds {spool_files(gateway)}"
    assert key not in stored_objects(archive)


def test_direct_responses_counted_by_metrics(
    gateway_settings: Settings,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    path, key = fresh_ct(tmp_path)
    metrics = GatewayMetrics(stream=io.StringIO())

    with Gateway.start(
        Services(gateway_settings), OPEN_CONFIG, LOOPBACK, 0, metrics=metrics
    ) as gateway:
        with associate(gateway.port, CT_CONTEXT) as assoc:
            status = send_file_as_is(monkeypatch, assoc, path)
            repeated = send_file_as_is(monkeypatch, assoc, path)
        counts = metrics._counts

    assert status.Status == SUCCESS
    assert repeated.Status == SUCCESS
    assert counts.stored == 2
    assert not counts.failures
    assert key in stored_objects(archive)


def test_store_transitions_reported_as_state_machine(
    gateway: Gateway, archive: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path, key = fresh_ct(tmp_path)
    transitions: list[tuple[str, str, str, str]] = []

    def on_transition(event: Event) -> None:
        transitions.append(
            (
                event.current_state,
                event.fsm_event,
                event.action,
                event.next_state,
            )
        )

    with associate(gateway.port, CT_CONTEXT) as assoc:
        (acceptor,) = gateway.active_associations()
        acceptor.bind(evt.EVT_FSM_TRANSITION, on_transition)
        status = send_file_as_is(monkeypatch, assoc, path)
        acceptor.unbind(evt.EVT_FSM_TRANSITION, on_transition)

    assert status.Status == SUCCESS
    assert key in stored_objects(archive)
    # The P-DATA-TF PDUs of the request (command and data set), then the response.
    assert transitions[0] == ("Sta6", "Evt10", "DT-2", "Sta6")
    assert transitions[-1] == ("Sta6", "Evt9", "DT-1", "Sta6")
    assert set(transitions[:-1]) == {("Sta6", "Evt10", "DT-2", "Sta6")}
