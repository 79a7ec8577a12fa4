"""Association policy: who may associate, what each caller may do, and negotiation at the PDU level.

The PDU tests write A-ASSOCIATE-RQ PDUs byte by byte (PS3.8 9.3.2), because pynetdicom as an
SCU never sends padded UIDs, and read the A-ASSOCIATE-AC or -RJ that the gateway returns.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from cirrus.config import DEFAULT_AE_TITLE, Settings
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import NOT_AUTHORIZED, SUCCESS
from cirrus.local.moto_process import LOOPBACK
from cirrus.local.stack import LocalStackConfig
from cirrus.storage.objects import ObjectStore
from tests.gateway.gateways import OPEN_CONFIG, start_gateway
from tests.gateway.scu import (
    SITE,
    fresh_ct,
    run_dcmtk,
    stored_objects,
    wait_until,
)

OTHER_SITE = "gateway-other"
CLOSED_CONFIG = AEConfig.model_validate(
    {
        "sites": {
            SITE: {"callers": {"CT_HERE": ["store"], "WS_HERE": ["query"]}},
            OTHER_SITE: {"callers": {"CT_THERE": ["store"]}},
        }
    }
)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
UNKNOWN_SOP_CLASS = "1.2.3.4.5.6.7.8.9"
UNKNOWN_TRANSFER_SYNTAX = "1.2.3.4.5.6.7.8.10"

# A-ASSOCIATE-AC presentation context results (PS3.8 9.3.3.2).
ACCEPTANCE = 0
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4
# A-ASSOCIATE-RJ (PS3.8 9.3.4): rejected permanent, by the service user, and the reasons.
REJECTED_PERMANENT = 1
SERVICE_USER = 1
CALLING_AE_NOT_RECOGNIZED = 3
CALLED_AE_NOT_RECOGNIZED = 7


@pytest.fixture(scope="module")
def closed_gateway(gateway_settings: Settings, archive: ObjectStore) -> Iterator[Gateway]:
    with start_gateway(gateway_settings, archive, CLOSED_CONFIG) as running:
        yield running


# --- who may associate -------------------------------------------------------------------


def test_unknown_caller_rejected(closed_gateway: Gateway) -> None:
    rejection = request_association(closed_gateway.port, "STRANGER", [verification(1)])
    assert rejection.pdu_type == 0x03
    assert rejection.rejection == (REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED)


def test_unknown_caller_rejected_for_echoscu(closed_gateway: Gateway) -> None:
    result = run_dcmtk(
        "echoscu", "-aet", "STRANGER", "-aec", DEFAULT_AE_TITLE, LOOPBACK, str(closed_gateway.port)
    )
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stdout + result.stderr


def test_listed_caller_accepted(closed_gateway: Gateway) -> None:
    accepted = request_association(closed_gateway.port, "CT_HERE", [verification(1)])
    assert accepted.pdu_type == 0x02
    assert accepted.results == {1: ACCEPTANCE}


def test_accept_states_pdu_limit_and_implementation(gateway: Gateway) -> None:
    accepted = request_association(gateway.port, "TESTSCU", [verification(1)])
    # The values that docs/gateway-conformance.md states under "Application entity".
    assert accepted.max_length == 1_048_576
    assert accepted.implementation_class_uid == "1.2.826.0.1.3680043.9.3811.3.0.4"


def test_open_gateway_accepts_unknown_caller(gateway: Gateway) -> None:
    accepted = request_association(gateway.port, "STRANGER", [verification(1)])
    assert accepted.pdu_type == 0x02


def test_unknown_called_title_rejected(gateway: Gateway) -> None:
    rejection = request_association(gateway.port, "CT_HERE", [verification(1)], called="OTHER")
    assert rejection.pdu_type == 0x03
    assert rejection.rejection == (REJECTED_PERMANENT, SERVICE_USER, CALLED_AE_NOT_RECOGNIZED)


def test_open_gateway_warns_at_start(
    gateway_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cirrus.gateway")
    with start_gateway(gateway_settings, config=OPEN_CONFIG):
        pass
    warnings = [r for r in caplog.records if "is open" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert SITE in warnings[0].getMessage()


def test_closed_gateway_does_not_warn(
    gateway_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cirrus.gateway")
    with start_gateway(gateway_settings, config=CLOSED_CONFIG):
        pass
    assert not [r for r in caplog.records if "is open" in r.getMessage()]


def test_local_stack_default_is_open(tmp_path: Path) -> None:
    assert LocalStackConfig().gateway_config().open
    path = tmp_path / "ae.json"
    path.write_text('{"sites": {}}', encoding="utf-8")
    assert not LocalStackConfig(ae_config=path).gateway_config().open


# --- what each caller may do -------------------------------------------------------------


def test_caller_without_store_gets_0124(
    closed_gateway: Gateway, archive: ObjectStore, tmp_path: Path
) -> None:
    path, key = fresh_ct(tmp_path)
    before = stored_objects(archive)
    with associate_as("WS_HERE", closed_gateway.port) as assoc:
        status = assoc.send_c_store(path)

    assert status.Status == NOT_AUTHORIZED
    assert "may not store" in status.ErrorComment
    assert key not in stored_objects(archive)
    assert stored_objects(archive) == before


def test_instances_land_under_caller_site(
    closed_gateway: Gateway, archive: ObjectStore, tmp_path: Path
) -> None:
    here_path, here_key = fresh_ct(tmp_path, SITE)
    there_path, there_key = fresh_ct(tmp_path, OTHER_SITE)
    for calling, path in (("CT_HERE", here_path), ("CT_THERE", there_path)):
        with associate_as(calling, closed_gateway.port) as assoc:
            assert assoc.send_c_store(path).Status == SUCCESS

    assert here_key in stored_objects(archive, SITE)
    assert there_key in stored_objects(archive, OTHER_SITE)
    assert there_key not in stored_objects(archive, SITE)
    assert here_key not in stored_objects(archive, OTHER_SITE)


# --- presentation contexts ---------------------------------------------------------------


def test_each_context_answered_on_its_merits(gateway: Gateway) -> None:
    answer = request_association(
        gateway.port,
        "TESTSCU",
        [
            verification(1),
            PresentationContextItem(3, UNKNOWN_SOP_CLASS, (ImplicitVRLittleEndian,)),
            PresentationContextItem(5, CTImageStorage, (UNKNOWN_TRANSFER_SYNTAX,)),
            PresentationContextItem(
                7, CTImageStorage, (UNKNOWN_TRANSFER_SYNTAX, ExplicitVRLittleEndian)
            ),
        ],
    )
    assert answer.pdu_type == 0x02
    assert answer.results == {
        1: ACCEPTANCE,
        3: ABSTRACT_SYNTAX_NOT_SUPPORTED,
        5: TRANSFER_SYNTAXES_NOT_SUPPORTED,
        7: ACCEPTANCE,
    }
    assert answer.transfer_syntaxes[7] == ExplicitVRLittleEndian


# pydicom warns about the padded UIDs that pynetdicom decodes, which is the point of the test.
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("padding", ["\0", " "])
def test_padded_uids_accepted(gateway: Gateway, padding: str) -> None:
    answer = request_association(
        gateway.port,
        "TESTSCU",
        [
            PresentationContextItem(1, Verification + padding, (ImplicitVRLittleEndian + padding,)),
            PresentationContextItem(
                3, CTImageStorage + padding, (ExplicitVRLittleEndian + padding,)
            ),
        ],
        application_context=APPLICATION_CONTEXT + padding,
    )
    assert answer.pdu_type == 0x02
    assert answer.results == {1: ACCEPTANCE, 3: ACCEPTANCE}
    assert answer.transfer_syntaxes[3] == ExplicitVRLittleEndian


def test_max_pdu_length_zero_accepted(gateway: Gateway, tmp_path: Path) -> None:
    answer = request_association(gateway.port, "TESTSCU", [verification(1)], max_pdu_length=0)
    assert answer.pdu_type == 0x02
    assert answer.results == {1: ACCEPTANCE}

    # Zero means no limit (PS3.8 D.1), so the gateway may send responses of any size.
    ae = AE("TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, gateway.port, ae_title=DEFAULT_AE_TITLE, max_pdu=0)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == SUCCESS
        path, _ = fresh_ct(tmp_path)
        assert assoc.send_c_store(path).Status == SUCCESS
    finally:
        assoc.release()


def test_released_associations_leave_no_threads(gateway: Gateway) -> None:
    for _ in range(3):
        request_association(gateway.port, "TESTSCU", [verification(1)])
    assert wait_until(lambda: not gateway.active_associations(), timeout=5)


@contextmanager
def associate_as(calling: str, port: int) -> Iterator[Association]:
    """Open an association for CT Image Storage with the calling AE title ``calling``."""
    ae = AE(calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=DEFAULT_AE_TITLE)
    assert assoc.is_established, f"the gateway did not accept {calling}"
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


# --- PDU helpers -------------------------------------------------------------------------


@dataclass(frozen=True)
class PresentationContextItem:
    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass
class AssociationAnswer:
    """The A-ASSOCIATE-AC or -RJ that the gateway sent."""

    pdu_type: int
    results: dict[int, int]
    transfer_syntaxes: dict[int, str]
    rejection: tuple[int, int, int] | None = None
    max_length: int | None = None
    implementation_class_uid: str | None = None


def verification(context_id: int) -> PresentationContextItem:
    return PresentationContextItem(context_id, Verification, (ImplicitVRLittleEndian,))


def request_association(
    port: int,
    calling: str,
    contexts: list[PresentationContextItem],
    *,
    called: str = DEFAULT_AE_TITLE,
    application_context: str = APPLICATION_CONTEXT,
    max_pdu_length: int = 16384,
) -> AssociationAnswer:
    """Send an A-ASSOCIATE-RQ, read the answer, and release an accepted association."""
    pdu = associate_rq(calling, called, contexts, application_context, max_pdu_length)
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(pdu)
        pdu_type, body = read_pdu(sock)
        if pdu_type == 0x03:
            return AssociationAnswer(pdu_type, {}, {}, rejection=(body[1], body[2], body[3]))
        answer = parse_associate_ac(pdu_type, body)
        if pdu_type == 0x02:
            sock.sendall(struct.pack(">BBL4x", 0x05, 0x00, 4))
            release_type, _ = read_pdu(sock)
            assert release_type == 0x06, f"expected A-RELEASE-RP, got PDU type {release_type:#04x}"
        return answer


def item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0x00, len(value)) + value


def associate_rq(
    calling: str,
    called: str,
    contexts: list[PresentationContextItem],
    application_context: str,
    max_pdu_length: int,
) -> bytes:
    variable = item(0x10, application_context.encode("ascii"))
    for context in contexts:
        sub_items = item(0x30, context.abstract_syntax.encode("ascii"))
        for syntax in context.transfer_syntaxes:
            sub_items += item(0x40, syntax.encode("ascii"))
        variable += item(0x20, struct.pack(">BBBB", context.context_id, 0, 0, 0) + sub_items)
    user_information = item(0x51, struct.pack(">L", max_pdu_length))
    user_information += item(0x52, b"1.2.826.0.1.3680043.9.9999.1")
    variable += item(0x50, user_information)
    header = struct.pack(
        ">HH16s16s32x",
        0x0001,
        0,
        called.ljust(16).encode("ascii"),
        calling.ljust(16).encode("ascii"),
    )
    body = header + variable
    return struct.pack(">BBL", 0x01, 0x00, len(body)) + body


def read_exactly(sock: socket.socket, length: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {length} bytes")
        data += chunk
    return data


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    pdu_type, _, length = struct.unpack(">BBL", read_exactly(sock, 6))
    return pdu_type, read_exactly(sock, length)


def read_user_information(answer: AssociationAnswer, value: bytes) -> None:
    """Read Maximum Length and Implementation Class UID from a User Information item."""
    offset = 0
    while offset < len(value):
        sub_type, _, length = struct.unpack_from(">BBH", value, offset)
        sub_value = value[offset + 4 : offset + 4 + length]
        offset += 4 + length
        if sub_type == 0x51:
            (answer.max_length,) = struct.unpack(">L", sub_value)
        elif sub_type == 0x52:
            answer.implementation_class_uid = sub_value.decode("ascii")


def parse_associate_ac(pdu_type: int, body: bytes) -> AssociationAnswer:
    """Read the presentation context results of an A-ASSOCIATE-AC (PS3.8 9.3.3)."""
    answer = AssociationAnswer(pdu_type, {}, {})
    offset = 68  # protocol version, reserved, called and calling AE, 32 reserved bytes
    while offset < len(body):
        item_type, _, length = struct.unpack_from(">BBH", body, offset)
        value = body[offset + 4 : offset + 4 + length]
        offset += 4 + length
        if item_type == 0x50:
            read_user_information(answer, value)
        if item_type != 0x21:
            continue
        context_id, result = value[0], value[2]
        answer.results[context_id] = result
        if len(value) > 8 and value[4] == 0x40:
            (syntax_length,) = struct.unpack_from(">H", value, 6)
            answer.transfer_syntaxes[context_id] = value[8 : 8 + syntax_length].decode("ascii")
    return answer
