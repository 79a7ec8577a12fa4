"""C-STORE requests decoded by the gateway instead of through a pydicom command set.

pynetdicom 3.0.4 decodes the command set of every received DIMSE message into a pydicom
``Dataset`` (``DIMSEMessage.decode_msg``) and then copies each element into the request
primitive (``message_to_primitive``), converting and validating every value on the way. In
the stubbed gateway of ``bench/gateway_alone.py`` that took 1.0 M of the 7.3 M instructions
per stored instance (callgrind).

``receive_store_requests_directly`` makes an association start each received message as a
``SpooledStoreRequest``. The first fragment of the message may be a whole command set that
``decode_store_request`` reads as a C-STORE request with a data set. The message then builds
the ``C_STORE`` primitive from those values and writes the data set to the spool file as
pynetdicom does, with the preamble, the "DICM" prefix and the File Meta Information in one
write. Any other message continues as pynetdicom's ``DIMSEMessage`` from its first fragment.
The pydicom command set is decoded only when something reads ``command_set``, such as a
handler of EVT_DIMSE_RECV.
"""

from __future__ import annotations

import re
import struct
from io import BytesIO
from pathlib import Path
from typing import Any, Final

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE, DimsePrimitiveType
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA

from cirrus.gateway.spool import PREAMBLE_AND_PREFIX, SpoolFileMeta, spool_of, write_file_meta

# Tag, value length and value of an element of an Implicit VR Little Endian command set.
_ELEMENT_HEADER: Final = struct.Struct("<HHI")
_US: Final = struct.Struct("<H")
# Command elements (group 0000) of a C-STORE-RQ (PS3.7 9.3.1.1).
_GROUP_LENGTH: Final = 0x0000
_AFFECTED_SOP_CLASS: Final = 0x0002
_COMMAND_FIELD: Final = 0x0100
_MESSAGE_ID: Final = 0x0110
_PRIORITY: Final = 0x0700
_DATA_SET_TYPE: Final = 0x0800
_AFFECTED_SOP_INSTANCE: Final = 0x1000
_US_ELEMENTS: Final = frozenset({_COMMAND_FIELD, _MESSAGE_ID, _PRIORITY, _DATA_SET_TYPE})
_UID_ELEMENTS: Final = frozenset({_AFFECTED_SOP_CLASS, _AFFECTED_SOP_INSTANCE})
_REQUIRED_ELEMENTS: Final = _US_ELEMENTS | _UID_ELEMENTS
_C_STORE_RQ_COMMAND: Final = 0x0001
_NO_DATA_SET: Final = 0x0101
# A conformant UID (PS3.5 9.1): no component has a leading zero. pydicom and pynetdicom accept
# these without a warning, so they convert to the same value as pynetdicom's decoding gives.
_UID_PATTERN: Final = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_MAX_UID_LENGTH: Final = 64
# The Message Control Header bits of a PDV: command information, last fragment (PS3.8 E.2).
_COMMAND_BIT: Final = 0x01
_LAST_FRAGMENT_BIT: Final = 0x02


class StoreRequestCommand:
    """The values of a C-STORE-RQ command set that the request primitive takes."""

    __slots__ = ("message_id", "priority", "sop_class_uid", "sop_instance_uid")

    def __init__(
        self, message_id: int, priority: int, sop_class_uid: str, sop_instance_uid: str
    ) -> None:
        self.message_id = message_id
        self.priority = priority
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


def _uid(value: bytes) -> str | None:
    """Return a UI value without its padding, or None unless it is a conformant UID."""
    if not value.isascii():
        return None
    text = value.decode("ascii").rstrip("\0 ")
    if len(text) > _MAX_UID_LENGTH or _UID_PATTERN.fullmatch(text) is None:
        return None
    return text


def _checked_uid(value: str) -> UID:
    """Return ``value``, which ``_uid`` accepted, as a pydicom ``UID`` without validating it."""
    return str.__new__(UID, value)


def decode_store_request(encoded: bytes | memoryview) -> StoreRequestCommand | None:
    """Return the values of the Implicit VR Little Endian command set ``encoded``.

    Returns None unless it is a C-STORE-RQ with a data set whose elements are exactly those
    that a C-STORE-RQ requires, and the Command Group Length, each once and in ascending
    order. Its values must be ones that pynetdicom accepts without a warning: US values of one
    number and conformant UIDs. For any other command set, pynetdicom decodes the message.
    """
    values: dict[int, bytes] = {}
    offset = 0
    end = len(encoded)
    previous = -1
    while offset < end:
        if end - offset < _ELEMENT_HEADER.size:
            return None
        group, element, length = _ELEMENT_HEADER.unpack_from(encoded, offset)
        offset += _ELEMENT_HEADER.size
        if group != 0x0000 or element <= previous or offset + length > end:
            return None
        values[element] = bytes(encoded[offset : offset + length])
        offset += length
        previous = element
    group_length = values.pop(_GROUP_LENGTH, None)
    if group_length is not None and len(group_length) != 4:
        return None
    if values.keys() != _REQUIRED_ELEMENTS:
        return None
    numbers: dict[int, int] = {}
    for element in _US_ELEMENTS:
        value = values[element]
        if len(value) != _US.size:
            return None
        (numbers[element],) = _US.unpack(value)
    if numbers[_COMMAND_FIELD] != _C_STORE_RQ_COMMAND or numbers[_DATA_SET_TYPE] == _NO_DATA_SET:
        return None
    sop_class = _uid(values[_AFFECTED_SOP_CLASS])
    sop_instance = _uid(values[_AFFECTED_SOP_INSTANCE])
    if sop_class is None or sop_instance is None:
        return None
    return StoreRequestCommand(numbers[_MESSAGE_ID], numbers[_PRIORITY], sop_class, sop_instance)


class SpooledStoreRequest(C_STORE_RQ):
    """A received DIMSE message that is read as a C-STORE request while it qualifies.

    pynetdicom's ``DIMSEServiceProvider.receive_primitive`` passes it each P-DATA primitive of
    the message and then converts it with ``message_to_primitive``. A message that does not
    qualify becomes a plain ``DIMSEMessage`` before anything of it is read.
    """

    def __init__(self, assoc: Association) -> None:
        # The attributes of a new DIMSEMessage, without its empty pydicom command set.
        self.context_id: int | None = None
        self.encoded_command_set = BytesIO()
        self.data_set: BytesIO | None = BytesIO()
        self._data_set_path: Path | tuple[Path, int] | None = None
        self._data_set_file: Any = None
        self._assoc = assoc
        self._command: StoreRequestCommand | None = None
        self._decoded_command_set: Dataset | None = None

    @property
    def command_set(self) -> Dataset:
        """The command set as pydicom decodes it, decoded on first use."""
        if self._decoded_command_set is None:
            encoded = BytesIO(self.encoded_command_set.getvalue())
            self._decoded_command_set = decode(encoded, True, True)
        return self._decoded_command_set

    @command_set.setter
    def command_set(self, value: Dataset) -> None:
        self._decoded_command_set = value

    def decode_msg(self, primitive: P_DATA, assoc: Association | None = None) -> bool:
        if primitive.__class__ is not P_DATA:
            return False
        fragments = list(primitive.presentation_data_value_list)
        if self._command is None:
            if not fragments or not self._start(*fragments[0]):
                return self._continue_with_pynetdicom(primitive, assoc, keep_command=False)
            fragments = fragments[1:]
        for index, (_, data) in enumerate(fragments):
            if data[0] & _COMMAND_BIT:
                rest = P_DATA()
                rest.presentation_data_value_list = fragments[index:]
                return self._continue_with_pynetdicom(rest, assoc, keep_command=True)
            spool_file = self._data_set_file
            assert spool_file is not None  # opened by _start
            spool_file.write(data[1:])
            if data[0] & _LAST_FRAGMENT_BIT:
                return True
        return False

    def _start(self, context_id: int, data: bytes) -> bool:
        """Read the first fragment; open the spool file if it is a C-STORE request's command set.

        Returns False, having changed nothing, when the message does not qualify.
        """
        if data[0] & (_COMMAND_BIT | _LAST_FRAGMENT_BIT) != _COMMAND_BIT | _LAST_FRAGMENT_BIT:
            return False
        command = decode_store_request(memoryview(data)[1:])
        spool = spool_of(self._assoc)
        if command is None or spool is None:
            return False
        self.encoded_command_set.write(data[1:])
        self.context_id = context_id
        self._command = command
        # pynetdicom raises the same KeyError here for a context that was not accepted.
        transfer_syntax = str(self._assoc._accepted_cx[context_id].transfer_syntax[0])
        spool_file = spool.open_file(self._assoc)
        self._data_set_file = spool_file
        self._data_set_path = Path(spool_file.name)
        meta = SpoolFileMeta(command.sop_class_uid, command.sop_instance_uid, transfer_syntax)
        encoded_meta = meta.encode()
        if encoded_meta is not None:
            spool_file.write(PREAMBLE_AND_PREFIX + encoded_meta)
        else:
            spool_file.write(PREAMBLE_AND_PREFIX)
            write_file_meta(spool_file, meta)
        return True

    def _continue_with_pynetdicom(
        self, primitive: P_DATA, assoc: Association | None, keep_command: bool
    ) -> bool:
        """Hand the rest of the message to pynetdicom's ``decode_msg``, from ``primitive`` on.

        With ``keep_command``, the command set read so far stays, as pynetdicom would have it.
        """
        command_set = self.command_set if keep_command else Dataset()
        message_class = C_STORE_RQ if keep_command else DIMSEMessage
        self.__class__ = message_class  # type: ignore[assignment]
        # An attribute of the instance again, as DIMSEMessage has it.
        self.command_set = command_set
        return message_class.decode_msg(self, primitive, assoc)

    def message_to_primitive(self) -> DimsePrimitiveType:
        command = self._command
        if command is None:
            return super().message_to_primitive()
        primitive = C_STORE()
        # decode_store_request accepted only conformant UIDs without padding, for which
        # pydicom's UID() and pynetdicom's setters return the same value after validating it
        # with regular expressions three times over. The values are set without that.
        primitive._affected_sop_class_uid = _checked_uid(command.sop_class_uid)
        primitive.MessageID = command.message_id
        primitive.Priority = command.priority
        primitive._affected_sop_instance_uid = _checked_uid(command.sop_instance_uid)
        primitive.DataSet = self.data_set
        primitive._context_id = self.context_id
        primitive._dataset_path = self._data_set_path
        primitive._dataset_file = self._data_set_file
        return primitive


def receive_store_requests_directly(assoc: Association) -> None:
    """Make the acceptor ``assoc`` start every received message as a ``SpooledStoreRequest``.

    Does nothing for an association of an AE without a spool.
    """
    if spool_of(assoc) is None:
        return
    dimse = assoc.dimse
    receive_with_pynetdicom = dimse.receive_primitive

    def receive_primitive(primitive: Any) -> None:
        if dimse.message is None:
            dimse.message = SpooledStoreRequest(assoc)
        receive_with_pynetdicom(primitive)

    dimse.receive_primitive = receive_primitive  # type: ignore[method-assign]
