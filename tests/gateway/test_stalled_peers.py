"""Peers that stop sending: the network time-out aborts them and frees what they held.

A peer that stops in the middle of a P-DATA-TF PDU, or between PDUs, is aborted once the
gateway's network time-out (set to 1 s here) has passed without data. Its association ends,
its threads end, the spool file of its unfinished data set is deleted, and the abort is
logged with its cause. Meanwhile storescu stores an instance through the same gateway.
A connection that never sends its A-ASSOCIATE-RQ is closed by the ACSE time-out
(``tests/gateway/test_pending_connections.py``).

The time that a handler takes is not the peer's silence: an upload that outlasts the network
time-out ends with its response and a normal release. A peer that stops in the middle of a
PDU while the handler of its previous request runs is ended by the socket's read time-out,
and that abort is logged with the network time-out as its cause as well.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cirrus.config import Settings
from cirrus.gateway.limits import GatewayLimits
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import SUCCESS
from cirrus.storage.objects import ObjectStore
from tests.gateway.scu import associate, fresh_ct, stored_objects, storescu, wait_until
from tests.gateway.test_limits import limited_gateway, paused_reactor, store_request
from tests.gateway.test_store_failures import GatedStore

pytestmark = pytest.mark.timeout(60)

CT_CONTEXT = [(CTImageStorage, ExplicitVRLittleEndian)]
NETWORK_TIMEOUT_SECONDS = 1.0
# Each P-DATA-TF carries at most this many bytes of a fragment, so a CT_small data set of
# about 39 kB takes several PDUs.
FRAGMENT_BYTES = 8192


def store_pdus(path: Path, context_id: int, message_id: int = 1) -> list[bytes]:
    """Encode a C-STORE request of the Part 10 file ``path`` as P-DATA-TF PDUs."""
    message = C_STORE_RQ()
    message.primitive_to_message(store_request(path, message_id))
    pdus = []
    for primitive in message.encode_msg(context_id, FRAGMENT_BYTES + 6):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu.encode())
    return pdus


def aborted_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("association aborted")]


def released_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("association released")]


@pytest.mark.parametrize("stall", ["mid-PDU", "between PDUs"])
def test_stalled_store_aborted_and_freed(
    gateway_settings: Settings,
    archive: ObjectStore,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    stall: str,
) -> None:
    caplog.set_level(logging.INFO, logger="cirrus")
    stalled_path, stalled_key = fresh_ct(tmp_path)
    other_path, other_key = fresh_ct(tmp_path)
    limits = GatewayLimits(network_timeout_seconds=NETWORK_TIMEOUT_SECONDS)

    with limited_gateway(gateway_settings, limits) as gateway:
        with associate(gateway.port, CT_CONTEXT) as assoc:
            context_id = assoc.accepted_contexts[0].context_id
            assert context_id is not None
            pdus = store_pdus(stalled_path, context_id)
            assert len(pdus) >= 4, "the data set fits too few PDUs to stop in the middle"
            # The command and the first data set fragment, then half of the next PDU or none.
            sent = b"".join(pdus[:2])
            if stall == "mid-PDU":
                sent += pdus[2][: len(pdus[2]) // 2]
            with paused_reactor(assoc):
                assoc.dul.socket.socket.sendall(sent)  # type: ignore[union-attr]
                spooling = wait_until(lambda: gateway.ae.spool.used_bytes > 0)
                # Another sender is served while this one is stalled.
                storescu(gateway.port, other_path)
                ended = wait_until(lambda: not gateway.active_associations(), timeout=10)
            freed = wait_until(lambda: spool_files(gateway) == [] and used(gateway) == 0)
            peer_aborted = wait_until(lambda: assoc.is_aborted, timeout=5)
        stored = stored_objects(archive)

    assert spooling, "the gateway never spooled the first fragment"
    assert ended, "the stalled association outlived the network time-out"
    assert freed, f"spool still holds {spool_files(gateway)}"
    assert peer_aborted
    assert stalled_key not in stored
    assert other_key in stored
    (record,) = aborted_records(caplog)
    assert record.levelno == logging.WARNING
    assert getattr(record, "cause", None) == "network time-out: no data for 1 s"


def test_handler_longer_than_network_timeout(
    gateway_settings: Settings,
    archive: ObjectStore,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO, logger="cirrus")
    path, key = fresh_ct(tmp_path)
    gated = GatedStore(gateway_settings)
    limits = GatewayLimits(network_timeout_seconds=NETWORK_TIMEOUT_SECONDS)

    with limited_gateway(gateway_settings, limits, gated) as gateway:
        with associate(gateway.port, CT_CONTEXT) as assoc:
            (served,) = gateway.active_associations()
            context_id = assoc.accepted_contexts[0].context_id
            assert context_id is not None
            with paused_reactor(assoc):
                assoc.dimse.send_msg(store_request(path, 1), context_id)
                # The upload waits for ``gated.release`` until the idle timer, which the
                # last PDU of the request started, has expired.
                expired = wait_until(lambda: served.dul._idle_timer.expired, timeout=10)
                gated.release.set()
                _, response = assoc.dimse.get_msg(block=True)
        peer_released = assoc.is_released
        ended = wait_until(lambda: not gateway.active_associations(), timeout=10)
    stored = stored_objects(archive)

    assert expired, "the idle timer never expired during the upload"
    assert response is not None, "no response to the C-STORE request"
    assert response.Status == SUCCESS
    assert peer_released
    assert ended
    assert key in stored
    assert aborted_records(caplog) == []
    assert len(released_records(caplog)) == 1


def test_stall_during_handler_logged_as_timeout(
    gateway_settings: Settings,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO, logger="cirrus")
    first_path, _ = fresh_ct(tmp_path)
    second_path, _ = fresh_ct(tmp_path)
    gated = GatedStore(gateway_settings)
    limits = GatewayLimits(network_timeout_seconds=NETWORK_TIMEOUT_SECONDS)

    with limited_gateway(gateway_settings, limits, gated) as gateway:
        with associate(gateway.port, CT_CONTEXT) as assoc:
            (served,) = gateway.active_associations()
            context_id = assoc.accepted_contexts[0].context_id
            assert context_id is not None
            first = store_pdus(first_path, context_id, message_id=1)
            second = store_pdus(second_path, context_id, message_id=2)
            # The whole first request, whose upload waits for ``gated.release``, then the
            # command of the second and half of its first data set PDU.
            sent = b"".join(first) + second[0] + second[1][: len(second[1]) // 2]
            with paused_reactor(assoc):
                assoc.dul.socket.socket.sendall(sent)  # type: ignore[union-attr]
                # The reactor runs the first request's handler, so the socket's read
                # time-out, not the reactor's check of the idle timer, ends the DUL thread.
                dul_ended = wait_until(lambda: not served.dul.is_alive(), timeout=10)
                gated.release.set()
                ended = wait_until(lambda: not gateway.active_associations(), timeout=10)
            freed = wait_until(lambda: spool_files(gateway) == [] and used(gateway) == 0)
            peer_aborted = wait_until(lambda: assoc.is_aborted, timeout=5)

    assert dul_ended, "the DUL thread outlived the socket's read time-out"
    assert ended, "the association outlived its DUL thread"
    assert freed, f"spool still holds {spool_files(gateway)}"
    assert peer_aborted
    (record,) = aborted_records(caplog)
    assert record.levelno == logging.WARNING
    assert getattr(record, "cause", None) == "network time-out: no data for 1 s"


def spool_files(gateway: Gateway) -> list[str]:
    return sorted(os.listdir(gateway.ae.spool.directory))


def used(gateway: Gateway) -> int:
    return gateway.ae.spool.used_bytes
