"""The gateway's own encoders and decoders against pynetdicom's and pydicom's.

``cirrus.gateway.store_responses``, ``cirrus.gateway.spool`` and ``cirrus.gateway.pdu_reads``
replace pynetdicom's encoding of C-STORE responses and File Meta Information, and its
decoding of P-DATA-TF PDUs, on the gateway's receive path. Each must produce the bytes or the
values that pynetdicom 3.0.4 produces, and leave to pynetdicom what it does not handle.
"""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass

from cirrus.gateway.pdu_reads import PDUDecodeError, decode_p_data_tf
from cirrus.gateway.spool import SpoolFileMeta
from cirrus.gateway.status import SUCCESS, StoreFailure, failure_status
from cirrus.gateway.store_responses import encode_store_response

SOP_INSTANCE_EVEN = "1.2.826.0.1.3680043.8.498.1234"
SOP_INSTANCE_ODD = "1.2.826.0.1.3680043.8.498.12345"


def store_response(status: Dataset | int, sop_instance: str = SOP_INSTANCE_EVEN) -> C_STORE:
    """Return the C-STORE response that pynetdicom's Storage SCP builds for ``status``."""
    response = C_STORE()
    response.MessageID = 7
    response.MessageIDBeingRespondedTo = 7
    response.AffectedSOPInstanceUID = sop_instance
    response.AffectedSOPClassUID = CTImageStorage
    scp = StorageServiceClass.__new__(StorageServiceClass)
    return scp.validate_status(status, response)


def pynetdicom_command_set(response: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(response)
    (pdata,) = message.encode_msg(1, 16_382)
    ((_, fragment),) = pdata.presentation_data_value_list
    return bytes(fragment[1:])


def status_dataset(status: int) -> Dataset:
    dataset = Dataset()
    dataset.Status = status
    return dataset


STATUSES: dict[str, Dataset | int] = {
    "success": SUCCESS,
    "success in a data set": status_dataset(SUCCESS),
    "warning as int": 0xB000,
    "failure with comment": failure_status(StoreFailure(0xA700, "full", "spool is full")),
    "odd comment": failure_status(StoreFailure(0xC000, "x", "odd")),
    "one offending element": failure_status(
        StoreFailure(0xA900, "x", "differs", offending_elements=(0x00080018,))
    ),
    "two offending elements": failure_status(
        StoreFailure(0xA900, "x", "differ", offending_elements=(0x00080018, 0x00080016))
    ),
}


@pytest.mark.parametrize("sop_instance", [SOP_INSTANCE_EVEN, SOP_INSTANCE_ODD])
@pytest.mark.parametrize("name", list(STATUSES))
def test_store_response_bytes_match_pynetdicom(name: str, sop_instance: str) -> None:
    response = store_response(STATUSES[name], sop_instance)

    assert encode_store_response(response) == pynetdicom_command_set(response)


def test_store_response_without_instance_matches() -> None:
    response = store_response(SUCCESS)
    response.AffectedSOPInstanceUID = None

    assert encode_store_response(response) == pynetdicom_command_set(response)


def test_non_ascii_comment_left_to_pynetdicom() -> None:
    response = store_response(SUCCESS)
    response.ErrorComment = "état"  # type: ignore[assignment]

    assert encode_store_response(response) is None


def test_invalid_offending_element_left_to_pynetdicom() -> None:
    response = store_response(SUCCESS)
    response.OffendingElement = ["PatientID"]  # type: ignore[assignment]

    assert encode_store_response(response) is None


def pydicom_file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    meta = create_file_meta(
        sop_class_uid=sop_class,  # type: ignore[arg-type]
        sop_instance_uid=sop_instance,  # type: ignore[arg-type]
        transfer_syntax=transfer_syntax,  # type: ignore[arg-type]
    )
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta)
    return buffer.getvalue()


@pytest.mark.parametrize("sop_instance", [SOP_INSTANCE_EVEN, SOP_INSTANCE_ODD])
@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_spool_file_meta_matches_pydicom(sop_instance: str, transfer_syntax: str) -> None:
    meta = SpoolFileMeta(CTImageStorage, sop_instance, transfer_syntax)

    assert meta.encode() == pydicom_file_meta(CTImageStorage, sop_instance, transfer_syntax)


@pytest.mark.parametrize(
    "values",
    [
        ("", SOP_INSTANCE_EVEN, ExplicitVRLittleEndian),
        (CTImageStorage, "1.2.é", ExplicitVRLittleEndian),
        (CTImageStorage, "1." * 40_000, ExplicitVRLittleEndian),
    ],
    ids=["empty", "non-ASCII", "longer than a short element"],
)
def test_spool_file_meta_left_to_pydicom(values: tuple[str, str, str]) -> None:
    assert SpoolFileMeta(*values).encode() is None


def p_data_tf(*values: tuple[int, bytes]) -> bytes:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[context, value] for context, value in values]  # type: ignore[misc]
    return P_DATA_TF(primitive).encode()


def test_p_data_tf_decoded_as_pynetdicom_does() -> None:
    encoded = p_data_tf((1, b"\x03command"), (3, b"\x00data set fragment"), (5, b"\x02"))
    expected = P_DATA_TF()
    expected.decode(encoded)

    pdu = decode_p_data_tf(bytearray(encoded))

    decoded = [
        (cid, bytes(value)) for cid, value in pdu.to_primitive().presentation_data_value_list
    ]
    assert decoded == expected.to_primitive().presentation_data_value_list


def test_p_data_tf_values_are_views() -> None:
    encoded = bytearray(p_data_tf((1, b"\x02fragment")))

    pdu = decode_p_data_tf(encoded)

    ((_, value),) = pdu.to_primitive().presentation_data_value_list
    assert isinstance(value, memoryview)
    assert value.obj is encoded


def test_p_data_tf_without_items_is_empty() -> None:
    pdu = decode_p_data_tf(bytearray(b"\x04\x00\x00\x00\x00\x00"))

    assert pdu.presentation_data_value_items == []


@pytest.mark.parametrize(
    "tail",
    [b"\x00\x00\x00", b"\x00\x00\x00\x09\x01\x02", b"\x00\x00\x00\x00\x01"],
    ids=["item header cut", "item past the end", "item of length 0"],
)
def test_p_data_tf_malformed_item_rejected(tail: bytes) -> None:
    encoded = bytearray(p_data_tf((1, b"\x02ok")) + tail)
    encoded[2:6] = (len(encoded) - 6).to_bytes(4, "big")

    with pytest.raises(PDUDecodeError):
        decode_p_data_tf(encoded)
