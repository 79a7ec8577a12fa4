"""C-GET from the gateway, with dcmtk's getscu and with pynetdicom as the requester.

The C-STORE sub-operations go back over the requesting association, in the presentation
contexts that the requester proposed with SCP/SCU Role Selection for itself as SCP.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pynetdicom.association
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)

from cirrus.config import Settings
from cirrus.gateway import retrieve
from cirrus.gateway.aeconfig import AEConfig, SiteAEs
from cirrus.gateway.server import Gateway
from cirrus.local.moto_process import LOOPBACK
from cirrus.services import Services
from tests.gateway.gateways import start_gateway
from tests.gateway.retrieves import (
    Archived,
    archive,
    failed_uids,
    identifier,
    renamed,
    sop_uids,
)
from tests.gateway.scu import SITE, run_dcmtk
from tests.pydicom_files import bundled

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
Responses = list[tuple[Dataset, Dataset | None]]


@dataclass(frozen=True)
class GetArchive:
    patient_id: str
    study: list[Archived]
    gateway: Gateway

    @property
    def study_uid(self) -> str:
        return self.study[0].study


@pytest.fixture(scope="module")
def gets(gateway_settings: Settings) -> Iterator[GetArchive]:
    services = Services(gateway_settings)
    patient_id = f"GET-{uuid.uuid4().hex[:8]}"
    ct = pydicom.dcmread(bundled("CT_small.dcm"))
    mr_j2k = pydicom.dcmread(bundled("MR_small_jp2klossless.dcm"))
    mr_rle = pydicom.dcmread(bundled("MR_small_RLE.dcm"))
    study, ct_series, mr_series = generate_uid(), generate_uid(), generate_uid()
    instances = [
        archive(services, SITE, renamed(ct, patient_id, study, ct_series)),
        archive(services, SITE, renamed(mr_j2k, patient_id, study, mr_series)),
        archive(services, SITE, renamed(mr_rle, patient_id, study, mr_series)),
    ]
    everything = frozenset({"store", "query", "retrieve"})
    config = AEConfig(
        sites={
            SITE: SiteAEs(
                callers={
                    "GETSCU": everything,
                    "PYGET": everything,
                    "STOREONLY": frozenset({"store"}),
                }
            ),
            # A caller of another site, with every permission there.
            "other": SiteAEs(callers={"OTHERGET": everything}),
        }
    )
    with start_gateway(gateway_settings, config=config) as gateway:
        yield GetArchive(patient_id, instances, gateway)


@dataclass
class Receiver:
    """The requester's Storage SCP side: what it received and the status it returns."""

    answer: int = 0x0000
    rejected: frozenset[str] = frozenset()  # SOP Instance UIDs whose C-STORE returns 0xA700
    wait_before: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    received: list[Dataset] = field(default_factory=list)
    syntaxes: list[UID] = field(default_factory=list)

    def handle_store(self, event: Event) -> int:
        if self.wait_before is not None and len(self.received) + 1 == self.wait_before:
            self.release.wait(10)
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.received.append(ds)
        self.syntaxes.append(UID(event.context.transfer_syntax))
        if str(ds.SOPInstanceUID) in self.rejected:
            return 0xA700
        return self.answer

    def uids(self) -> set[str]:
        return {str(ds.SOPInstanceUID) for ds in self.received}


def _get_association(
    port: int,
    storage: Sequence[tuple[str, Sequence[str]]],
    receiver: Receiver,
    calling: str = "PYGET",
    roles: bool = True,
    get_syntax: str | None = None,
) -> Association:
    """Open a C-GET association; with ``roles`` each storage context asks the SCP role.

    ``get_syntax`` is the one transfer syntax proposed for Study Root GET; without it,
    pynetdicom's default syntaxes are proposed.
    """
    ae = AE(calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet, get_syntax)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    role_items = []
    for sop_class, syntaxes in storage:
        ae.add_requested_context(sop_class, list(syntaxes))
        role_items.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate(
        LOOPBACK,
        port,
        ae_title="CIRRUS",
        ext_neg=role_items if roles else [],
        evt_handlers=[(evt.EVT_C_STORE, receiver.handle_store)],
    )
    assert assoc.is_established
    return assoc


def _get(
    port: int,
    query: Dataset,
    storage: Sequence[tuple[str, Sequence[str]]],
    receiver: Receiver,
    model: str = StudyRootQueryRetrieveInformationModelGet,
    calling: str = "PYGET",
) -> Responses:
    assoc = _get_association(port, storage, receiver, calling)
    try:
        return list(assoc.send_c_get(query, model))
    finally:
        assoc.release()


def test_getscu_study(gets: GetArchive, tmp_path: Path) -> None:
    result = run_dcmtk(
        "getscu",
        "-S",
        "-aet",
        "GETSCU",
        "-aec",
        "CIRRUS",
        "-od",
        str(tmp_path),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={gets.study_uid}",
        LOOPBACK,
        str(gets.gateway.port),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    received = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, tmp_path.iterdir())}
    assert set(received) == sop_uids(gets.study)
    # getscu accepts uncompressed syntaxes only, so the compressed instances are transcoded.
    j2k = received[gets.study[1].sop]
    assert j2k.file_meta.TransferSyntaxUID in UNCOMPRESSED
    original = pydicom.dcmread(bundled("MR_small_jp2klossless.dcm"))
    assert np.array_equal(j2k.pixel_array, original.pixel_array)


def test_get_as_stored(gets: GetArchive) -> None:
    receiver = Receiver()
    storage = [
        (CTImageStorage, [ExplicitVRLittleEndian]),
        (MRImageStorage, [JPEG2000Lossless]),
        (MRImageStorage, [RLELossless]),
    ]
    responses = _get(
        gets.gateway.port, identifier("STUDY", StudyInstanceUID=gets.study_uid), storage, receiver
    )
    pending = [status for status, _ in responses if status.Status == 0xFF00]
    assert [status.NumberOfRemainingSuboperations for status in pending] == [2, 1]
    status, _ = responses[-1]
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == 3
    assert receiver.uids() == sop_uids(gets.study)
    syntaxes = dict(
        zip([str(ds.SOPInstanceUID) for ds in receiver.received], receiver.syntaxes, strict=True)
    )
    assert syntaxes[gets.study[1].sop] == JPEG2000Lossless
    assert syntaxes[gets.study[2].sop] == RLELossless
    stored = pydicom.dcmread(bundled("MR_small_jp2klossless.dcm"))
    sent = next(ds for ds in receiver.received if ds.SOPInstanceUID == gets.study[1].sop)
    assert sent.PixelData == stored.PixelData


def test_get_image_level_patient_root(gets: GetArchive) -> None:
    receiver = Receiver()
    mr = gets.study[1:]
    query = identifier(
        "IMAGE",
        PatientID=gets.patient_id,
        StudyInstanceUID=gets.study_uid,
        SeriesInstanceUID=mr[0].series,
        SOPInstanceUID=[item.sop for item in mr],
    )
    responses = _get(
        gets.gateway.port,
        query,
        [(MRImageStorage, UNCOMPRESSED)],
        receiver,
        model=PatientRootQueryRetrieveInformationModelGet,
    )
    status, _ = responses[-1]
    assert status.Status == 0x0000
    assert receiver.uids() == sop_uids(mr)
    assert set(receiver.syntaxes) <= set(UNCOMPRESSED)


def test_get_without_context_for_one_class(gets: GetArchive) -> None:
    receiver = Receiver()
    responses = _get(
        gets.gateway.port,
        identifier("STUDY", StudyInstanceUID=gets.study_uid),
        [(MRImageStorage, UNCOMPRESSED)],
        receiver,
    )
    status, final_identifier = responses[-1]
    assert status.Status == 0xB000
    assert status.NumberOfCompletedSuboperations == 2
    assert status.NumberOfFailedSuboperations == 1
    assert failed_uids(final_identifier) == [gets.study[0].sop]
    assert receiver.uids() == sop_uids(gets.study[1:])


def test_get_without_any_context(gets: GetArchive) -> None:
    receiver = Receiver()
    responses = _get(
        gets.gateway.port, identifier("STUDY", StudyInstanceUID=gets.study_uid), [], receiver
    )
    status, final_identifier = responses[-1]
    assert status.Status == 0xA702
    assert status.NumberOfFailedSuboperations == 3
    assert sorted(failed_uids(final_identifier)) == sorted(sop_uids(gets.study))
    assert receiver.received == []


def test_get_without_role_selection(gets: GetArchive) -> None:
    receiver = Receiver()
    storage = [(CTImageStorage, UNCOMPRESSED), (MRImageStorage, UNCOMPRESSED)]
    assoc = _get_association(gets.gateway.port, storage, receiver, roles=False)
    try:
        responses = list(
            assoc.send_c_get(
                identifier("STUDY", StudyInstanceUID=gets.study_uid),
                StudyRootQueryRetrieveInformationModelGet,
            )
        )
    finally:
        assoc.release()
    status, final_identifier = responses[-1]
    assert status.Status == 0xA702
    assert sorted(failed_uids(final_identifier)) == sorted(sop_uids(gets.study))
    assert receiver.received == []


def test_get_requester_rejects(gets: GetArchive) -> None:
    receiver = Receiver(answer=0xA700)
    responses = _get(
        gets.gateway.port,
        identifier("STUDY", StudyInstanceUID=gets.study_uid),
        [(CTImageStorage, UNCOMPRESSED), (MRImageStorage, UNCOMPRESSED)],
        receiver,
    )
    status, final_identifier = responses[-1]
    assert status.Status == 0xA702
    assert sorted(failed_uids(final_identifier)) == sorted(sop_uids(gets.study))
    assert len(receiver.received) == 3


def test_get_some_failed(gets: GetArchive) -> None:
    rejected = gets.study[1].sop
    receiver = Receiver(rejected=frozenset({rejected}))
    responses = _get(
        gets.gateway.port,
        identifier("STUDY", StudyInstanceUID=gets.study_uid),
        [(CTImageStorage, UNCOMPRESSED), (MRImageStorage, UNCOMPRESSED)],
        receiver,
    )
    status, final_identifier = responses[-1]
    assert status.Status == 0xB000
    assert status.NumberOfCompletedSuboperations == 2
    assert status.NumberOfFailedSuboperations == 1
    assert status.NumberOfWarningSuboperations == 0
    assert failed_uids(final_identifier) == [rejected]
    assert receiver.uids() == sop_uids(gets.study)


def test_get_warning_status(gets: GetArchive) -> None:
    receiver = Receiver(answer=0xB000)
    responses = _get(
        gets.gateway.port,
        identifier("STUDY", StudyInstanceUID=gets.study_uid),
        [(CTImageStorage, UNCOMPRESSED), (MRImageStorage, UNCOMPRESSED)],
        receiver,
    )
    status, final_identifier = responses[-1]
    assert status.Status == 0xB000
    assert status.NumberOfWarningSuboperations == 3
    assert status.NumberOfFailedSuboperations == 0
    assert status.NumberOfCompletedSuboperations == 0
    assert failed_uids(final_identifier) == []
    assert receiver.uids() == sop_uids(gets.study)


def test_get_over_max_matches(gets: GetArchive, monkeypatch: pytest.MonkeyPatch) -> None:
    # The study has 3 instances, one more than this limit.
    monkeypatch.setattr(retrieve, "MAX_SUBOPERATIONS", 2)
    receiver = Receiver()
    responses = _get(
        gets.gateway.port,
        identifier("STUDY", StudyInstanceUID=gets.study_uid),
        [(CTImageStorage, UNCOMPRESSED), (MRImageStorage, UNCOMPRESSED)],
        receiver,
    )
    [(status, _)] = responses
    assert status.Status == 0xA701
    assert "3 instances match, more than 2" in status.ErrorComment
    assert "NumberOfCompletedSuboperations" not in status
    assert receiver.received == []


def test_get_at_max_matches(gets: GetArchive, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrieve, "MAX_SUBOPERATIONS", 3)
    receiver = Receiver()
    responses = _get(
        gets.gateway.port,
        identifier("STUDY", StudyInstanceUID=gets.study_uid),
        [(CTImageStorage, UNCOMPRESSED), (MRImageStorage, UNCOMPRESSED)],
        receiver,
    )
    status, _ = responses[-1]
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == 3
    assert receiver.uids() == sop_uids(gets.study)


def test_get_not_authorized(gets: GetArchive) -> None:
    receiver = Receiver()
    responses = _get(
        gets.gateway.port,
        identifier("STUDY", StudyInstanceUID=gets.study_uid),
        [(CTImageStorage, UNCOMPRESSED)],
        receiver,
        calling="STOREONLY",
    )
    status, _ = responses[-1]
    assert status.Status == 0x0124
    assert receiver.received == []


def test_get_other_site_sees_nothing(gets: GetArchive) -> None:
    """A caller of another site gets what it would get for a study that does not exist."""
    receiver = Receiver()
    responses = _get(
        gets.gateway.port,
        identifier("STUDY", StudyInstanceUID=gets.study_uid),
        [(CTImageStorage, UNCOMPRESSED)],
        receiver,
        calling="OTHERGET",
    )

    assert len(responses) == 1
    status, _ = responses[0]
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == 0
    assert receiver.received == []


def test_get_invalid_identifier(gets: GetArchive) -> None:
    receiver = Receiver()
    responses = _get(
        gets.gateway.port,
        identifier("SERIES", StudyInstanceUID=gets.study_uid),
        [(CTImageStorage, UNCOMPRESSED)],
        receiver,
    )
    status, _ = responses[-1]
    assert status.Status == 0xA900
    assert status.OffendingElement == 0x0020000E


def test_get_undecodable_identifier(gets: GetArchive, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = Receiver()
    storage = [(CTImageStorage, UNCOMPRESSED), (MRImageStorage, UNCOMPRESSED)]
    assoc = _get_association(
        gets.gateway.port, storage, receiver, get_syntax=ExplicitVRLittleEndian
    )
    query = identifier("STUDY", StudyInstanceUID=gets.study_uid)
    try:
        # The requester's encoder returns (0008,0052) with the unknown VR "ZZ".
        with monkeypatch.context() as patch:
            patch.setattr(
                pynetdicom.association, "encode", lambda *args: b"\x08\x00\x52\x00ZZ\x02\x00AB"
            )
            responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
        assert receiver.received == []
        # The association still serves requests.
        again = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    [(status, _)] = responses
    assert status.Status == 0xC000
    assert "decoded" in status.ErrorComment
    assert again[-1][0].Status == 0x0000
    assert receiver.uids() == sop_uids(gets.study)


def test_get_truncated_identifier(gets: GetArchive, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = Receiver()
    storage = [(CTImageStorage, UNCOMPRESSED), (MRImageStorage, UNCOMPRESSED)]
    assoc = _get_association(
        gets.gateway.port, storage, receiver, get_syntax=ExplicitVRLittleEndian
    )
    query = identifier("STUDY", StudyInstanceUID=gets.study_uid)
    # The level STUDY, then StudyInstanceUID (0020,000D) with 60 bytes stated and 4 sent.
    truncated = b"\x08\x00\x52\x00CS\x06\x00STUDY \x20\x00\x0d\x00UI\x3c\x001.2."
    try:
        with monkeypatch.context() as patch:
            patch.setattr(pynetdicom.association, "encode", lambda *args: truncated)
            responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
        again = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    [(status, _)] = responses
    assert status.Status == 0xC000
    assert status.ErrorComment == "identifier could not be decoded: data set is truncated"
    assert receiver.uids() == sop_uids(gets.study)
    assert again[-1][0].Status == 0x0000


def test_get_no_match(gets: GetArchive) -> None:
    receiver = Receiver()
    responses = _get(
        gets.gateway.port,
        identifier("STUDY", StudyInstanceUID=generate_uid()),
        [(CTImageStorage, UNCOMPRESSED)],
        receiver,
    )
    assert len(responses) == 1
    status, _ = responses[0]
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == 0


def test_get_cancel(gets: GetArchive) -> None:
    receiver = Receiver(wait_before=2)
    storage = [(CTImageStorage, UNCOMPRESSED), (MRImageStorage, UNCOMPRESSED)]
    assoc = _get_association(gets.gateway.port, storage, receiver)
    collected: Responses = []
    try:
        responses = assoc.send_c_get(
            identifier("STUDY", StudyInstanceUID=gets.study_uid),
            StudyRootQueryRetrieveInformationModelGet,
            msg_id=21,
        )
        for response in responses:
            collected.append(response)
            if len(collected) == 1:
                context_id = next(
                    cx.context_id
                    for cx in assoc.accepted_contexts
                    if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet
                )
                assoc.send_c_cancel(21, context_id)
                time.sleep(0.2)
                receiver.release.set()
    finally:
        receiver.release.set()
        assoc.release()
    assert collected[0][0].Status == 0xFF00
    status, _ = collected[-1]
    assert status.Status == 0xFE00
    assert status.NumberOfCompletedSuboperations == 2
    assert status.NumberOfRemainingSuboperations == 1
    assert len(receiver.received) == 2


def test_get_compresses_for_compressed_context(gets: GetArchive) -> None:
    receiver = Receiver()
    ct = gets.study[0]
    responses = _get(
        gets.gateway.port,
        identifier(
            "IMAGE", StudyInstanceUID=ct.study, SeriesInstanceUID=ct.series, SOPInstanceUID=ct.sop
        ),
        [(CTImageStorage, [JPEG2000Lossless, ExplicitVRLittleEndian])],
        receiver,
    )
    status, _ = responses[-1]
    assert status.Status == 0x0000
    # The Storage SCP's preference accepts JPEG 2000 Lossless, so the CT goes compressed.
    assert receiver.syntaxes == [JPEG2000Lossless]
    original = pydicom.dcmread(bundled("CT_small.dcm"))
    assert np.array_equal(receiver.received[0].pixel_array, original.pixel_array)
