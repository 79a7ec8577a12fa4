"""PDUs received into one buffer each, with P-DATA values passed on as views of it.

pynetdicom 3.0.4's ``DULServiceProvider._read_pdu_data`` reads a PDU 4,096 bytes at a time.
Each C-STORE fragment is then copied five times before it reaches the spool file, because
pynetdicom joins the reads, appends them to the PDU's header, converts the PDU to ``bytes``,
slices the PDU's items and slices each PDV's value (``DIMSEMessage.decode_msg``). For a
525 KB instance that is some 130 reads and 2.6 MB copied, and ``memcpy`` was 15 % of the
instructions that the stubbed gateway of ``bench/gateway_alone.py`` ran (callgrind).

``read_pdus_into_one_buffer`` makes an association read each PDU with ``recv_into`` into a
buffer of the PDU's size. A P-DATA-TF PDU is decoded into ``memoryview`` slices of that
buffer. ``DIMSEMessage.decode_msg`` slices them again without copying and writes them to the
spool file or the command set. Other PDUs, and every PDU while a handler is bound to
EVT_DATA_RECV, are decoded by pynetdicom's ``_decode_pdu``.

The association reads its P-DATA-TF PDUs into the same buffer again once no view of the
previous PDU remains (``ReceiveBuffer``), because a new ``bytearray`` is filled with zeros
first: for a 525 KB instance in 128 KiB PDUs, ``memset`` ran 0.56 M of the 6.28 M
instructions per instance (callgrind). The buffer has the size of the largest such PDU
received so far, and an idle association keeps it: at most the announced maximum PDU length
(1 MiB), so 25 MiB for the default 25 associations.

The DUL thread finds a new PDU with a non-blocking read of its header, and reads the rest
with ``os.readv`` before it falls back to ``recv_into``: CPython polls a socket that has a
time-out before each ``recv_into``, and pynetdicom ran a ``select`` before each PDU, so a PDU
took five system calls where two now do (``_start_pdu``, ``_receive_into``).

The events that each outcome puts on the DUL's event queue are those of pynetdicom 3.0.4:
Evt17 when the connection fails or closes before the PDU is whole, Evt19 for an unknown PDU
type or a PDU that cannot be decoded, and otherwise the event of the PDU's type. A read that
times out (the socket's time-out of ``cirrus.gateway.network_timeout``) is recorded there as
the network time-out, as ``AssociationSocket.recv`` records it.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Final

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_items import PresentationDataValueItem

from cirrus.gateway.context import peer
from cirrus.gateway.event_waits import receive_p_data_now
from cirrus.gateway.network_timeout import record_read_timeout

logger = logging.getLogger(__name__)

# PDU type, a reserved byte and the PDU length (PS3.8 9.3.1).
_PDU_HEADER: Final = struct.Struct(">BBL")
_PDV_LENGTH: Final = struct.Struct(">L")
_P_DATA_TF: Final = 0x04
_PDU_TYPES: Final = frozenset(range(0x01, 0x08))
# A PDU longer than the maximum that the gateway announced is read as pynetdicom reads it, in
# pieces of this size, so that a PDU length field alone cannot make it allocate up to 4 GiB.
_UNANNOUNCED_READ_BYTES: Final = 65_536


class PDUDecodeError(ValueError):
    """A P-DATA-TF PDU whose items do not fit its length."""


class ReceiveBuffer:
    """The buffer that one association reads its P-DATA-TF PDUs into."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def take(self, size: int) -> memoryview:
        """Return a view of ``size`` bytes to receive a PDU into.

        The bytes are those of the previous PDU when its buffer is large enough and no view of
        it remains. Otherwise they come from a new buffer, and the old one is freed with the
        last view that refers to it.
        """
        buffer = self._buffer
        if len(buffer) < size or _has_views(buffer):
            buffer = bytearray(size)
            self._buffer = buffer
        return memoryview(buffer)[:size]


def _has_views(buffer: bytearray) -> bool:
    """Tell whether a ``memoryview`` of ``buffer`` exists, which forbids resizing it."""
    try:
        buffer.append(0)
    except BufferError:
        return True
    buffer.pop()
    return False


def _reads_without_poll(sock: socket.socket) -> bool:
    """Tell whether ``_receive_into`` may read ``sock`` with ``os.readv`` before it waits.

    CPython 3.11 sets the descriptor of a socket with a time-out to non-blocking and polls it
    before each ``recv_into``. An ``os.readv`` of that descriptor returns what has arrived
    without the poll, or raises ``BlockingIOError``. A blocking socket (no time-out) would
    block in ``os.readv``, and a TLS socket must be read through ``ssl``.
    """
    return not isinstance(sock, ssl.SSLSocket) and sock.gettimeout() is not None


def _receive_into(sock: socket.socket, buffer: bytearray | memoryview, start: int) -> int:
    """Receive into ``buffer`` from ``start`` until it is full.

    Returns the number of bytes that ``buffer`` then contains, fewer when the peer closed the
    connection first. Bytes that have arrived already are read with one system call each
    (``_reads_without_poll``). Only a read that must wait goes through ``recv_into``, which
    waits at most the socket's time-out.
    """
    filled = start
    direct = _reads_without_poll(sock)
    with memoryview(buffer) as view:
        while filled < len(buffer):
            received: int | None = None
            if direct:
                try:
                    received = os.readv(sock.fileno(), [view[filled:]])
                except BlockingIOError:
                    received = None
            if received is None:
                received = sock.recv_into(view[filled:])
            if not received:
                break
            filled += received
    return filled


def _receive_in_pieces(sock: socket.socket, buffer: bytearray, size: int) -> None:
    """Append up to ``size`` bytes to ``buffer``, in pieces, until the peer closes."""
    end = len(buffer) + size
    while len(buffer) < end:
        piece = sock.recv(min(_UNANNOUNCED_READ_BYTES, end - len(buffer)))
        if not piece:
            return
        buffer += piece


def decode_p_data_tf(pdu_bytes: bytearray | memoryview) -> P_DATA_TF:
    """Decode a whole P-DATA-TF PDU; each PDV value is a ``memoryview`` of ``pdu_bytes``.

    Accepts what pynetdicom 3.0.4 accepts: items of length 1 (a context ID and no value)
    included. Raises ``PDUDecodeError`` for an item that runs past the end of the PDU.
    """
    pdu = P_DATA_TF()
    view = memoryview(pdu_bytes)
    offset = _PDU_HEADER.size
    end = len(pdu_bytes)
    while offset < end:
        if end - offset < 5:
            raise PDUDecodeError(f"PDV item header at offset {offset} is truncated")
        (item_length,) = _PDV_LENGTH.unpack_from(pdu_bytes, offset)
        item_end = offset + 4 + item_length
        if item_length < 1 or item_end > end:
            raise PDUDecodeError(f"PDV item of length {item_length} at offset {offset} is invalid")
        item = PresentationDataValueItem()
        item.presentation_context_id = pdu_bytes[offset + 4]
        # pynetdicom's P_DATA_TF declares the value as bytes, and every reader of it
        # (decode_msg, BytesIO.write, SpoolFile.write) takes any bytes-like object.
        item.presentation_data_value = view[offset + 5 : item_end]  # type: ignore[assignment]
        pdu.presentation_data_value_items.append(item)
        offset = item_end
    return pdu


def _read_pdu(
    dul: DULServiceProvider,
    announced: int,
    reusable: ReceiveBuffer,
    header: bytearray | None = None,
    header_received: int = 0,
) -> None:
    """Read one PDU from the association's socket; queue its event and the decoded PDU.

    ``announced`` is the maximum PDU length that the gateway announced, 0 for no maximum.
    A P-DATA-TF PDU is read into ``reusable`` unless a handler is bound to EVT_DATA_RECV.
    ``header`` contains the first ``header_received`` bytes of the PDU when they have been
    read already.
    """
    association_socket = dul.socket
    assert association_socket is not None  # called only when the socket has data
    sock = association_socket.socket
    assert sock is not None
    if header is None:
        header = bytearray(_PDU_HEADER.size)
    try:
        received = _receive_into(sock, header, header_received)
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            record_read_timeout(dul.assoc)
        logger.exception(
            "connection failed before the PDU header was received", extra=peer(dul.assoc)
        )
        dul.event_queue.put("Evt17")
        return
    if received < _PDU_HEADER.size:
        # The peer closed the connection: pynetdicom reports this as Evt17 without a log line.
        dul.event_queue.put("Evt17")
        return
    pdu_type, _, pdu_length = _PDU_HEADER.unpack(header)
    if pdu_type not in _PDU_TYPES:
        logger.error(
            "unknown PDU type 0x%02X received",
            pdu_type,
            extra={**peer(dul.assoc), "pdu_type": pdu_type},
        )
        dul.event_queue.put("Evt19")
        return
    pdu_bytes: bytearray | memoryview
    try:
        if announced and pdu_length <= announced:
            if pdu_type == _P_DATA_TF and not dul.assoc.get_handlers(evt.EVT_DATA_RECV):
                pdu_bytes = reusable.take(_PDU_HEADER.size + pdu_length)
            else:
                pdu_bytes = bytearray(_PDU_HEADER.size + pdu_length)
            pdu_bytes[: _PDU_HEADER.size] = header
            received = _receive_into(sock, pdu_bytes, _PDU_HEADER.size)
        else:
            pdu_bytes = header
            _receive_in_pieces(sock, pdu_bytes, pdu_length)
            received = len(pdu_bytes)
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            record_read_timeout(dul.assoc)
        logger.exception(
            "connection failed before the whole PDU was received",
            extra={**peer(dul.assoc), "pdu_type": pdu_type, "pdu_length": pdu_length},
        )
        dul.event_queue.put("Evt17")
        return
    if received != _PDU_HEADER.size + pdu_length:
        logger.error(
            "connection closed after %d of the PDU's %d bytes",
            received,
            _PDU_HEADER.size + pdu_length,
            extra={**peer(dul.assoc), "pdu_type": pdu_type, "pdu_length": pdu_length},
        )
        dul.event_queue.put("Evt17")
        return
    _decode(dul, pdu_type, pdu_bytes)


def _decode(dul: DULServiceProvider, pdu_type: int, pdu_bytes: bytearray | memoryview) -> None:
    assoc = dul.assoc
    try:
        if pdu_type == _P_DATA_TF and not assoc.get_handlers(evt.EVT_DATA_RECV):
            pdu = decode_p_data_tf(pdu_bytes)
            evt.trigger(assoc, evt.EVT_PDU_RECV, {"pdu": pdu})
            if receive_p_data_now(dul, pdu):
                return
            event = "Evt10"
        else:
            # A P-DATA-TF PDU is a view of a reusable buffer unless EVT_DATA_RECV had a handler
            # when it was read, and pynetdicom's decoding takes a bytearray of its own.
            owned = pdu_bytes if isinstance(pdu_bytes, bytearray) else bytearray(pdu_bytes)
            pdu, event = dul._decode_pdu(owned)  # type: ignore[assignment]
    except Exception:
        # pynetdicom ends the association with Evt19 for any error of the decoding as well.
        logger.exception(
            "received PDU could not be decoded", extra={**peer(assoc), "pdu_type": pdu_type}
        )
        dul.event_queue.put("Evt19")
        return
    dul.event_queue.put(event)
    dul._recv_pdu.put(pdu)


def _start_pdu(
    dul: DULServiceProvider, announced: int, reusable: ReceiveBuffer, check: Callable[[], bool]
) -> bool:
    """Read the next PDU if its first bytes have arrived; return whether anything was read.

    Does what pynetdicom 3.0.4's ``_is_transport_event`` does outside state Sta13, with a read
    in place of its ``select``: a read that finds no bytes returns False, and one that finds
    the connection closed queues Evt17. A P-DATA-TF PDU may have gone to DIMSE at once
    (``receive_p_data_now``) instead of onto the event queue. ``check`` is pynetdicom's
    method, which this calls for Sta13, for a TLS socket and for a socket without a time-out.
    """
    association_socket = dul.socket
    if dul.state_machine.current_state == "Sta13" or association_socket is None:
        return check()
    sock = association_socket.socket
    if sock is None or not association_socket._is_connected or not _reads_without_poll(sock):
        return check()
    descriptor = sock.fileno()
    if descriptor < 0:
        # A closed socket, for which pynetdicom's ``select`` fails and queues Evt17.
        dul.event_queue.put("Evt17")
        return False
    header = bytearray(_PDU_HEADER.size)
    try:
        received = os.readv(descriptor, [header])
    except BlockingIOError:
        return False
    except OSError:
        # ``select`` would report the failed socket as readable, and the read would fail.
        logger.exception(
            "connection failed before the PDU header was received", extra=peer(dul.assoc)
        )
        dul.event_queue.put("Evt17")
        return True
    if not received:
        # The peer closed the connection: pynetdicom reports this as Evt17 without a log line.
        dul.event_queue.put("Evt17")
        return True
    _read_pdu(dul, announced, reusable, header, received)
    return True


def read_pdus_into_one_buffer(assoc: Association) -> None:
    """Make the DUL thread of the acceptor ``assoc`` read its PDUs with ``_read_pdu``.

    The DUL thread also looks for a new PDU with a read instead of a ``select``
    (``_start_pdu``).
    """
    dul = assoc.dul
    # Set from the AE when pynetdicom creates an acceptor association.
    announced = assoc.acceptor.maximum_length or 0
    reusable = ReceiveBuffer()
    check_with_pynetdicom = dul._is_transport_event

    def read_pdu_data() -> None:
        _read_pdu(dul, announced, reusable)

    def is_transport_event() -> bool:
        return _start_pdu(dul, announced, reusable, check_with_pynetdicom)

    dul._read_pdu_data = read_pdu_data  # type: ignore[method-assign]
    dul._is_transport_event = is_transport_event  # type: ignore[method-assign]
