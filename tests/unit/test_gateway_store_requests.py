"""The gateway's decoding of C-STORE requests and its reuse of PDU buffers.

``cirrus.gateway.store_requests`` reads the command set of a C-STORE request without pydicom
and must give the primitive the values that pynetdicom 3.0.4 gives it, or leave the message to
pynetdicom. ``cirrus.gateway.pdu_reads.ReceiveBuffer`` may hand out the bytes of a PDU again
only once no view of them remains.
"""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode

from cirrus.gateway.pdu_reads import ReceiveBuffer
from cirrus.gateway.store_requests import SpooledStoreRequest, decode_store_request

SOP_INSTANCE_EVEN = "1.2.826.0.1.3680043.8.498.1234"
SOP_INSTANCE_ODD = "1.2.826.0.1.3680043.8.498.12345"


def store_request(
    sop_instance: str = SOP_INSTANCE_EVEN, message_id: int = 7, priority: int = 2
) -> C_STORE:
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = sop_instance
    request.Priority = priority
    request.DataSet = BytesIO(b"\x08\x00\x18\x00")
    return request


def encoded_command_set(message: DIMSEMessage, primitive: C_STORE | C_ECHO) -> bytes:
    """Return the command set of ``primitive`` as pynetdicom encodes it."""
    message.primitive_to_message(primitive)
    (pdata, *_) = message.encode_msg(1, 16_382)
    ((_, fragment), *_) = pdata.presentation_data_value_list
    return bytes(fragment[1:])


def pynetdicom_primitive(encoded: bytes) -> C_STORE:
    """Return the primitive that pynetdicom converts the command set ``encoded`` to."""
    message = DIMSEMessage()
    message.command_set = decode(BytesIO(encoded), True, True)
    message.__class__ = C_STORE_RQ
    primitive = message.message_to_primitive()
    assert isinstance(primitive, C_STORE)
    return primitive


def element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, tag, len(value)) + value


@pytest.mark.parametrize("sop_instance", [SOP_INSTANCE_EVEN, SOP_INSTANCE_ODD])
@pytest.mark.parametrize(("message_id", "priority"), [(1, 0), (7, 1), (65_535, 2)])
def test_store_request_values_match_pynetdicom(
    sop_instance: str, message_id: int, priority: int
) -> None:
    encoded = encoded_command_set(C_STORE_RQ(), store_request(sop_instance, message_id, priority))
    expected = pynetdicom_primitive(encoded)

    command = decode_store_request(encoded)

    assert command is not None
    assert command.message_id == expected.MessageID
    assert command.priority == expected.Priority
    assert command.sop_class_uid == expected.AffectedSOPClassUID
    assert command.sop_instance_uid == expected.AffectedSOPInstanceUID


@pytest.mark.parametrize("sop_instance", [SOP_INSTANCE_EVEN, SOP_INSTANCE_ODD])
def test_store_request_primitive_matches_pynetdicom(sop_instance: str) -> None:
    encoded = encoded_command_set(C_STORE_RQ(), store_request(sop_instance, 9, 1))
    expected = pynetdicom_primitive(encoded)
    message = SpooledStoreRequest(None)  # type: ignore[arg-type]
    message._command = decode_store_request(encoded)

    primitive = message.message_to_primitive()

    assert isinstance(primitive, C_STORE)
    for name in ("AffectedSOPClassUID", "AffectedSOPInstanceUID", "MessageID", "Priority"):
        assert getattr(primitive, name) == getattr(expected, name), name
        assert type(getattr(primitive, name)) is type(getattr(expected, name)), name
    assert primitive.AffectedSOPInstanceUID.is_valid


def test_store_request_read_from_view() -> None:
    encoded = encoded_command_set(C_STORE_RQ(), store_request())

    command = decode_store_request(memoryview(b"\x03" + encoded)[1:])

    assert command is not None
    assert command.sop_instance_uid == SOP_INSTANCE_EVEN


def test_store_request_without_group_length_read() -> None:
    encoded = encoded_command_set(C_STORE_RQ(), store_request())

    command = decode_store_request(encoded[12:])

    assert command is not None
    assert command.message_id == 7


def test_echo_request_left_to_pynetdicom() -> None:
    echo = C_ECHO()
    echo.MessageID = 3
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"

    assert decode_store_request(encoded_command_set(C_ECHO_RQ(), echo)) is None


def test_move_originator_left_to_pynetdicom() -> None:
    request = store_request()
    request.MoveOriginatorApplicationEntityTitle = "MOVER"
    request.MoveOriginatorMessageID = 4

    assert decode_store_request(encoded_command_set(C_STORE_RQ(), request)) is None


def modified_request(change: str) -> bytes:
    """Return a C-STORE-RQ command set with one change that pynetdicom must decode."""
    sop_class = CTImageStorage.encode() + b"\0"
    sop_instance = SOP_INSTANCE_EVEN.encode()
    elements = {
        0x0002: sop_class,
        0x0100: struct.pack("<H", 0x0001),
        0x0110: struct.pack("<H", 7),
        0x0700: struct.pack("<H", 2),
        0x0800: struct.pack("<H", 0x0001),
        0x1000: sop_instance,
    }
    if change == "no data set":
        elements[0x0800] = struct.pack("<H", 0x0101)
    elif change == "leading zero in a UID":
        elements[0x1000] = b"1.2.03.4"
    elif change == "two message IDs":
        elements[0x0110] = struct.pack("<HH", 7, 8)
    elif change == "empty UID":
        elements[0x1000] = b""
    elif change == "UID of 66 characters":
        elements[0x1000] = b"1." * 32 + b"12"
    elif change == "missing priority":
        del elements[0x0700]
    elif change == "non-ASCII UID":
        elements[0x1000] = "1.2.é".encode("latin-1") + b"\0"
    encoded = b"".join(element(tag, value) for tag, value in sorted(elements.items()))
    if change == "elements out of order":
        first, rest = encoded[: 8 + len(sop_class)], encoded[8 + len(sop_class) :]
        encoded = rest + first
    elif change == "truncated":
        encoded = encoded[:-3]
    return element(0x0000, struct.pack("<I", len(encoded))) + encoded


@pytest.mark.parametrize(
    "change",
    [
        "no data set",
        "leading zero in a UID",
        "two message IDs",
        "empty UID",
        "UID of 66 characters",
        "missing priority",
        "non-ASCII UID",
        "elements out of order",
        "truncated",
    ],
)
def test_unusual_store_request_left_to_pynetdicom(change: str) -> None:
    assert decode_store_request(modified_request(change)) is None


def test_modified_request_helper_unchanged_is_read() -> None:
    command = decode_store_request(modified_request("none"))

    assert command is not None
    assert command.sop_instance_uid == SOP_INSTANCE_EVEN


def test_receive_buffer_reused_without_views() -> None:
    buffer = ReceiveBuffer()
    first = buffer.take(100)
    first[:3] = b"abc"
    first.release()

    second = buffer.take(50)

    assert len(second) == 50
    assert bytes(second[:3]) == b"abc"


def test_receive_buffer_not_reused_under_view() -> None:
    buffer = ReceiveBuffer()
    first = buffer.take(100)
    fragment = first[10:20]
    first.release()
    fragment[:3] = b"abc"

    second = buffer.take(100)
    second[10:13] = b"xyz"

    assert bytes(fragment[:3]) == b"abc"


def test_receive_buffer_grows_for_larger_pdu() -> None:
    buffer = ReceiveBuffer()
    buffer.take(10).release()

    assert len(buffer.take(1_000)) == 1_000
