"""Bad input over real associations: each is rejected with its status and reason, nothing of it
is stored, and the gateway goes on serving the same association and new ones."""

from __future__ import annotations

import logging
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    RTPlanStorage,
    Verification,
)

from cirrus.gateway.server import Gateway
from cirrus.gateway.status import (
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH,
    ERROR_COMMENT_MAX_LENGTH,
    SUCCESS,
)
from cirrus.local.moto_process import LOOPBACK
from cirrus.storage.objects import ObjectStore
from tests.gateway.scu import (
    CT_SMALL,
    associate,
    dataset_bytes,
    fresh_ct,
    pydicom_file,
    send_file_as_is,
    stored_objects,
    wait_until,
    write_part10,
)

PIXEL_DATA_HEADER = b"\xe0\x7f\x10\x00OW\x00\x00"  # (7FE0,0010), explicit VR little endian
STUDY_UID_HEADER = b"\x20\x00\x0d\x00UI"  # (0020,000D)


@dataclass(frozen=True)
class BadInput:
    """A data set to send, under the SOP class and UID that the C-STORE request names."""

    dataset: bytes
    sop_class: str = CTImageStorage
    sop_instance: str = ""
    transfer_syntax: str = ExplicitVRLittleEndian


def fresh_ct_dataset() -> tuple[Dataset, bytes]:
    """Return CT_small with new UIDs and its encoding, so that no other test has its key."""
    ds = pydicom.dcmread(CT_SMALL)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    return ds, encode(ds, implicit_vr=False)


def truncated_in_pixel_data() -> BadInput:
    ds, dataset = fresh_ct_dataset()
    cut = dataset.index(PIXEL_DATA_HEADER) + 12 + 1000
    return BadInput(dataset[:cut], sop_instance=ds.SOPInstanceUID)


def truncated_in_header_element() -> BadInput:
    ds, dataset = fresh_ct_dataset()
    cut = dataset.index(STUDY_UID_HEADER) + 8 + 10
    return BadInput(dataset[:cut], sop_instance=ds.SOPInstanceUID)


def without_sop_instance_uid() -> BadInput:
    ds, _ = fresh_ct_dataset()
    del ds.SOPInstanceUID
    return BadInput(encode(ds, implicit_vr=False))


def random_bytes() -> BadInput:
    return BadInput(random.Random(0).randbytes(4096))


def sop_instance_uid_differs() -> BadInput:
    _, dataset = fresh_ct_dataset()
    return BadInput(dataset, sop_instance=generate_uid())


def sop_class_uid_differs() -> BadInput:
    ds, dataset = fresh_ct_dataset()
    return BadInput(dataset, sop_class=MRImageStorage, sop_instance=ds.SOPInstanceUID)


def file_with_wrong_meta() -> BadInput:
    # pydicom's rtplan.dcm names one SOP Instance UID in its file meta and another in its data.
    path = pydicom_file("rtplan.dcm")
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    return BadInput(
        dataset_bytes(path.read_bytes()),
        sop_class=RTPlanStorage,
        sop_instance=meta.MediaStorageSOPInstanceUID,
        transfer_syntax=ImplicitVRLittleEndian,
    )


def truncated_file() -> BadInput:
    return BadInput(dataset_bytes(pydicom_file("MR_truncated.dcm").read_bytes()))


def unknown_vr() -> BadInput:
    ds, dataset = fresh_ct_dataset()
    sop_class = dataset.index(b"\x08\x00\x16\x00UI")
    changed = dataset[: sop_class + 4] + b"HI" + dataset[sop_class + 6 :]
    return BadInput(changed, sop_instance=ds.SOPInstanceUID)


def encode(ds: Dataset, implicit_vr: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit_vr
    fp.is_little_endian = True
    write_dataset(fp, ds)
    return fp.getvalue()


NO_SOP_INSTANCE = "instance has no SOPInstanceUID (0008,0018)"
SOP_INSTANCE_DIFFERS = "SOPInstanceUID (0008,0018) differs"

# (builder, expected status, expected start of the Error Comment)
BAD_INPUTS = [
    (truncated_in_pixel_data, CANNOT_UNDERSTAND, "data set is truncated: element (7FE0,0010)"),
    (truncated_in_header_element, CANNOT_UNDERSTAND, "data set is truncated: element (0020,000D)"),
    (truncated_file, CANNOT_UNDERSTAND, "data set is truncated"),
    (random_bytes, CANNOT_UNDERSTAND, "not a valid DICOM data set"),
    (unknown_vr, CANNOT_UNDERSTAND, ""),  # pydicom fails on the VR; any reason will do
    (without_sop_instance_uid, DATA_SET_DOES_NOT_MATCH, NO_SOP_INSTANCE),
    (sop_instance_uid_differs, DATA_SET_DOES_NOT_MATCH, SOP_INSTANCE_DIFFERS),
    (sop_class_uid_differs, DATA_SET_DOES_NOT_MATCH, "SOPClassUID (0008,0016) differs"),
    (file_with_wrong_meta, DATA_SET_DOES_NOT_MATCH, SOP_INSTANCE_DIFFERS),
]


@pytest.mark.parametrize(
    ("build", "status", "comment"),
    [pytest.param(*case, id=case[0].__name__) for case in BAD_INPUTS],
)
def test_bad_input_rejected_then_good_stored(
    gateway: Gateway,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    build: Callable[[], BadInput],
    status: int,
    comment: str,
) -> None:
    caplog.set_level(logging.INFO, logger="cirrus")
    bad = build()
    sop_instance = bad.sop_instance or generate_uid()
    bad_path = write_part10(
        tmp_path / "bad.dcm", bad.sop_class, sop_instance, bad.transfer_syntax, bad.dataset
    )
    good_path, good_key = fresh_ct(tmp_path)
    before = stored_objects(archive)
    contexts = [(bad.sop_class, bad.transfer_syntax), (CTImageStorage, ExplicitVRLittleEndian)]

    with associate(gateway.port, contexts) as assoc:
        rejected = send_file_as_is(monkeypatch, assoc, bad_path)
        after_bad = stored_objects(archive)
        accepted = send_file_as_is(monkeypatch, assoc, good_path)

    assert rejected.Status == status
    assert rejected.ErrorComment
    assert rejected.ErrorComment.startswith(comment), rejected.ErrorComment
    assert len(rejected.ErrorComment) <= ERROR_COMMENT_MAX_LENGTH
    assert after_bad == before
    assert accepted.Status == SUCCESS
    assert stored_objects(archive).keys() == before.keys() | {good_key}
    failures = [r for r in caplog.records if r.getMessage().startswith("C-STORE of")]
    assert len(failures) == 1
    assert failures[0].levelno >= logging.WARNING
    assert failures[0].sop_instance_uid == sop_instance


def test_mismatch_names_offending_element(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = sop_instance_uid_differs()
    path = write_part10(
        tmp_path / "bad.dcm", bad.sop_class, bad.sop_instance, bad.transfer_syntax, bad.dataset
    )

    with associate(gateway.port, [(CTImageStorage, ExplicitVRLittleEndian)]) as assoc:
        status = send_file_as_is(monkeypatch, assoc, path)

    assert status.Status == DATA_SET_DOES_NOT_MATCH
    assert status.OffendingElement == 0x00080018


def test_disconnect_mid_transfer_stores_nothing(
    gateway: Gateway,
    archive: ObjectStore,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO, logger="cirrus")
    ds, dataset = fresh_ct_dataset()
    before = stored_objects(archive)

    with associate(gateway.port, [(CTImageStorage, ExplicitVRLittleEndian)]) as assoc:
        request = C_STORE()
        request.MessageID = 1
        request.AffectedSOPClassUID = ds.SOPClassUID
        request.AffectedSOPInstanceUID = ds.SOPInstanceUID
        request.Priority = 2
        request.DataSet = BytesIO(dataset)
        message = C_STORE_RQ()
        message.primitive_to_message(request)
        context_id = assoc.accepted_contexts[0].context_id
        # Send the command and the first 4 KB of the data set, then drop the connection.
        fragments = list(message.encode_msg(context_id, 4096))
        for fragment in fragments[:2]:
            assoc.dul.send_pdu(fragment)
        assert len(fragments) > 2
        time.sleep(0.2)
        assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
        assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)

        assert wait_until(lambda: _logged(caplog, "association aborted"))

    assert stored_objects(archive) == before
    (aborted,) = [r for r in caplog.records if r.getMessage().startswith("association aborted")]
    assert aborted.stored == 0
    assert_gateway_serves(gateway)


def test_garbage_instead_of_association_request(gateway: Gateway) -> None:
    with socket.create_connection((LOOPBACK, gateway.port), timeout=5) as sock:
        sock.sendall(random.Random(1).randbytes(2048))
        sock.shutdown(socket.SHUT_WR)
        # The gateway sends an A-ABORT or closes the connection; either ends the read.
        while sock.recv(4096):
            pass

    assert wait_until(lambda: not gateway.active_associations(), timeout=2)
    assert_gateway_serves(gateway)


def test_association_request_with_huge_length(gateway: Gateway) -> None:
    # An A-ASSOCIATE-RQ PDU header that announces a 4 GB body, then nothing.
    with socket.create_connection((LOOPBACK, gateway.port), timeout=5) as sock:
        sock.sendall(struct.pack(">BBL", 0x01, 0x00, 0xFFFFFFFF))
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass

    assert_gateway_serves(gateway)


def test_connection_closed_without_request(gateway: Gateway) -> None:
    # A load balancer's TCP health check connects and closes at once.
    for _ in range(3):
        socket.create_connection((LOOPBACK, gateway.port), timeout=5).close()

    # pynetdicom alone would keep each acceptor thread for acse_timeout (30 s).
    assert wait_until(lambda: not gateway.active_associations(), timeout=2)
    assert_gateway_serves(gateway)


def test_accepted_socket_has_no_delay(gateway: Gateway) -> None:
    with associate(gateway.port, [(Verification, ExplicitVRLittleEndian)]) as requestor:
        assert requestor.dul.socket is not None and requestor.dul.socket.socket is not None
        ours = requestor.dul.socket.socket.getsockname()
        # An association of an earlier test may still be ending; pick the one that is ours.
        (acceptor,) = [
            assoc
            for assoc in gateway.active_associations()
            if assoc.dul.socket is not None
            and assoc.dul.socket.socket is not None
            and assoc.dul.socket.socket.getpeername() == ours
        ]
        option = acceptor.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    assert option != 0


def assert_gateway_serves(gateway: Gateway) -> None:
    with associate(gateway.port, [(Verification, ImplicitVRLittleEndian)]) as assoc:
        status = assoc.send_c_echo()
    assert status.Status == SUCCESS


def _logged(caplog: pytest.LogCaptureFixture, prefix: str) -> bool:
    return any(record.getMessage().startswith(prefix) for record in caplog.records)
