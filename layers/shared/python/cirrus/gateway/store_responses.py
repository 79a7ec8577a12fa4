"""C-STORE responses encoded by the gateway instead of through a pydicom data set.

pynetdicom 3.0.4 sends each DIMSE message through ``DIMSEServiceProvider.send_msg``, which
builds a ``DIMSEMessage`` with a pydicom ``Dataset`` command set, encodes that data set twice
(once for the Command Group Length, once to send it) and fragments it into P-DATA primitives.
For a C-STORE response of 100 to 150 bytes, that was 16 % of the instructions that the
stubbed gateway of ``bench/gateway_alone.py`` ran per stored instance (callgrind).

``send_store_responses_directly`` makes an association encode its C-STORE responses with
``encode_store_response``, which writes the same bytes from the response primitive, and
queue them to the DUL as one P-DATA primitive. Other messages, and responses with a value
that this encoder does not handle, still go through pynetdicom. Handlers of EVT_DIMSE_SENT
(the gateway's metrics) get a ``C_STORE_RSP`` whose command set is decoded from the bytes
sent.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Sequence
from io import BytesIO
from typing import Final

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE, DimsePrimitiveType
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA

from cirrus.gateway.event_waits import send_p_data_now

logger = logging.getLogger(__name__)

# Command Field of a C-STORE-RSP, and Command Data Set Type "no data set" (PS3.7 9.3.1.2, E.1).
_C_STORE_RSP_COMMAND: Final = 0x8001
_NO_DATA_SET: Final = 0x0101
# The Message Control Header of a PDV that contains a whole command set (PS3.8 E.2).
_LAST_COMMAND_FRAGMENT: Final = b"\x03"
# The bytes of a P-DATA-TF PDV item outside its fragment: item length (4), presentation
# context ID (1) and Message Control Header (1). A PDV fits in a PDU of the peer's maximum
# length when the fragment has at most that many bytes less, as pynetdicom counts.
_PDV_OVERHEAD: Final = 6
_MAX_US: Final = 0xFFFF
_MAX_TAG: Final = 0xFFFFFFFF

_ELEMENT_HEADER: Final = struct.Struct("<HHI")
_US: Final = struct.Struct("<H")
_UL: Final = struct.Struct("<I")
_AT: Final = struct.Struct("<HH")


def _element(element: int, value: bytes) -> bytes:
    """Return a command element of group 0000, Implicit VR Little Endian (PS3.7 6.3.1)."""
    return _ELEMENT_HEADER.pack(0x0000, element, len(value)) + value


def _us(value: object) -> bytes | None:
    if not isinstance(value, int) or not 0 <= value <= _MAX_US:
        return None
    return _US.pack(value)


def _text(value: object, padding: bytes) -> bytes | None:
    """Return an ASCII ``str`` padded to even length, or None for any other value."""
    if not isinstance(value, str) or not value.isascii():
        return None
    encoded = value.encode("ascii")
    return encoded + padding if len(encoded) % 2 else encoded


def _tags(value: object) -> bytes | None:
    """Return an AT value of one tag or a sequence of tags, or None for any other value."""
    if isinstance(value, int):
        tags: Iterable[object] = [value]
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        tags = value
    else:
        return None
    encoded = b""
    for tag in tags:
        if not isinstance(tag, int) or not 0 <= tag <= _MAX_TAG:
            return None
        encoded += _AT.pack(tag >> 16, tag & 0xFFFF)
    return encoded


def encode_store_response(primitive: C_STORE) -> bytes | None:
    """Return the encoded command set of the C-STORE response ``primitive``.

    The elements and their order are those of pynetdicom 3.0.4's ``C_STORE_RSP``, and
    parameters that are None are left out, as pynetdicom does. Returns None for a value
    that pynetdicom would encode differently or reject: a UID or Error Comment that is not
    ASCII, a number outside US, an Offending Element that is not a tag.
    """
    values: list[tuple[int, bytes | None]] = [(0x0100, _us(_C_STORE_RSP_COMMAND))]
    if primitive.AffectedSOPClassUID is not None:
        values.append((0x0002, _text(primitive.AffectedSOPClassUID, b"\0")))
    values.append((0x0120, _us(primitive.MessageIDBeingRespondedTo)))
    values.append((0x0800, _us(_NO_DATA_SET)))
    if primitive.Status is not None:
        values.append((0x0900, _us(primitive.Status)))
    if primitive.OffendingElement is not None:
        values.append((0x0901, _tags(primitive.OffendingElement)))
    if primitive.ErrorComment is not None:
        values.append((0x0902, _text(primitive.ErrorComment, b" ")))
    if primitive.AffectedSOPInstanceUID is not None:
        values.append((0x1000, _text(primitive.AffectedSOPInstanceUID, b"\0")))
    elements = []
    for element, value in sorted(values, key=lambda item: item[0]):
        if value is None:
            return None
        elements.append(_element(element, value))
    body = b"".join(elements)
    return _element(0x0000, _UL.pack(len(body))) + body


def _sent_message(encoded: bytes, context_id: int) -> DIMSEMessage:
    """Return the ``C_STORE_RSP`` of ``encoded``, as pynetdicom passes it to EVT_DIMSE_SENT."""
    message = DIMSEMessage()
    message.command_set = decode(BytesIO(encoded), True, True)
    # pynetdicom's decode_msg sets the message type the same way.
    message.__class__ = C_STORE_RSP
    message.context_id = context_id
    return message


def send_store_responses_directly(assoc: Association) -> None:
    """Make ``assoc`` send its C-STORE responses as encoded by ``encode_store_response``."""
    dimse = assoc.dimse
    send_with_pynetdicom = dimse.send_msg

    def send_msg(primitive: DimsePrimitiveType, context_id: int) -> None:
        if type(primitive) is not C_STORE or primitive.MessageIDBeingRespondedTo is None:
            send_with_pynetdicom(primitive, context_id)
            return
        encoded = encode_store_response(primitive)
        max_pdu = dimse.maximum_pdu_size
        if encoded is None or (max_pdu and len(encoded) > max_pdu - _PDV_OVERHEAD):
            send_with_pynetdicom(primitive, context_id)
            return
        if assoc.get_handlers(evt.EVT_DIMSE_SENT):
            message = _sent_message(encoded, context_id)
            evt.trigger(assoc, evt.EVT_DIMSE_SENT, {"message": message})
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, _LAST_COMMAND_FRAGMENT + encoded))
        if not send_p_data_now(dimse.dul, pdata):
            dimse.dul.send_pdu(pdata)

    dimse.send_msg = send_msg  # type: ignore[method-assign]
