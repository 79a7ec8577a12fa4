"""C-MOVE from the gateway to dcmtk's storescp and to pynetdicom Storage SCPs.

The archive contains one patient with two studies in the suite's site, and a study of the same
patient plus an instance in one of the same studies in another site, which no request of the
suite's site may move. Requests come from dcmtk's movescu and from pynetdicom.
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pynetdicom.association
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)

from cirrus.config import ResourceNames, Settings
from cirrus.gateway import retrieve
from cirrus.gateway.aeconfig import AEConfig, Destination, SiteAEs
from cirrus.gateway.responses import return_responses_to_sender
from cirrus.gateway.server import MAX_PDU_BYTES, Gateway
from cirrus.gateway.tls import TLSConfig
from cirrus.local.moto_process import LOOPBACK, MotoProcess
from cirrus.local.resources import create_resources
from cirrus.services import Services
from tests.gateway.gateways import start_gateway
from tests.gateway.retrieves import (
    Archived,
    StoreSCP,
    archive,
    failed_uids,
    identifier,
    renamed,
    running_pynetdicom_scp,
    running_storescp,
    sop_uids,
)
from tests.gateway.scu import SITE, run_dcmtk
from tests.gateway.tls_certificates import issue, make_authority
from tests.peers.orthanc import free_port
from tests.pydicom_files import bundled

OTHER_SITE = "other-site"
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
ALL_SYNTAXES = [*UNCOMPRESSED, JPEG2000Lossless, RLELossless]
Responses = list[tuple[Dataset, Dataset | None]]


@dataclass(frozen=True)
class MoveArchive:
    """The indexed instances of the suite, the gateway and its destinations."""

    patient_id: str
    study: list[Archived]
    second_study: list[Archived]
    other_site: list[Archived]
    gateway: Gateway
    storescp: StoreSCP
    pynetdicom_port: int

    @property
    def study_uid(self) -> str:
        return self.study[0].study

    def series(self, index: int) -> list[Archived]:
        uids = list(dict.fromkeys(item.series for item in self.study))
        return [item for item in self.study if item.series == uids[index]]


def _config(storescp_port: int, pynetdicom_port: int) -> AEConfig:
    everything = frozenset({"store", "query", "retrieve"})
    return AEConfig(
        sites={
            SITE: SiteAEs(
                callers={"MOVESCU": everything, "STOREONLY": frozenset({"store"})},
                destinations={
                    "STORESCP": Destination(host=LOOPBACK, port=storescp_port),
                    "PYSCP": Destination(host=LOOPBACK, port=pynetdicom_port),
                    "NOWHERE": Destination(host=LOOPBACK, port=free_port()),
                    "SECURE": Destination(host=LOOPBACK, port=free_port(), tls=True),
                },
            ),
            OTHER_SITE: SiteAEs(
                callers={"OTHERSCU": everything},
                destinations={"STORESCP": Destination(host=LOOPBACK, port=storescp_port)},
            ),
        }
    )


@pytest.fixture(scope="module")
def moves(
    gateway_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MoveArchive]:
    services = Services(gateway_settings)
    patient_id = f"MOVE-{uuid.uuid4().hex[:8]}"
    ct = pydicom.dcmread(bundled("CT_small.dcm"))
    mr_j2k = pydicom.dcmread(bundled("MR_small_jp2klossless.dcm"))
    mr_rle = pydicom.dcmread(bundled("MR_small_RLE.dcm"))
    study, series_a, series_b = generate_uid(), generate_uid(), generate_uid()
    first = [
        archive(services, SITE, renamed(ct, patient_id, study, series_a)),
        archive(services, SITE, renamed(ct, patient_id, study, series_a)),
        archive(services, SITE, renamed(mr_j2k, patient_id, study, series_b)),
    ]
    second_uid = generate_uid()
    second = [archive(services, SITE, renamed(mr_rle, patient_id, second_uid, generate_uid()))]
    other = [
        archive(services, OTHER_SITE, renamed(ct, patient_id, generate_uid(), generate_uid())),
        archive(services, OTHER_SITE, renamed(ct, patient_id, study, generate_uid())),
    ]
    with running_storescp(tmp_path_factory.mktemp("storescp"), "STORESCP") as storescp:
        pynetdicom_port = free_port()
        config = _config(storescp.port, pynetdicom_port)
        with start_gateway(gateway_settings, config=config) as gateway:
            yield MoveArchive(patient_id, first, second, other, gateway, storescp, pynetdicom_port)


def _move(
    port: int,
    query: Dataset,
    destination: str,
    model: str = StudyRootQueryRetrieveInformationModelMove,
    calling: str = "MOVESCU",
) -> Responses:
    ae = AE(calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(model)
    assoc = ae.associate(LOOPBACK, port, ae_title="CIRRUS")
    assert assoc.is_established
    try:
        return list(assoc.send_c_move(query, destination, model))
    finally:
        assoc.release()


def _final(responses: Responses) -> tuple[Dataset, Dataset | None]:
    assert responses, "the gateway sent no C-MOVE response"
    return responses[-1]


def test_movescu_study_to_storescp(moves: MoveArchive) -> None:
    result = run_dcmtk(
        "movescu",
        "-S",
        "-aet",
        "MOVESCU",
        "-aec",
        "CIRRUS",
        "-aem",
        "STORESCP",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={moves.study_uid}",
        LOOPBACK,
        str(moves.gateway.port),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    received = moves.storescp.received()
    assert sop_uids(moves.study) <= set(received)
    assert not sop_uids(moves.other_site) & set(received)
    j2k = moves.study[2]
    # storescp accepts every syntax, so the JPEG 2000 instance arrives as stored.
    assert received[j2k.sop].file_meta.TransferSyntaxUID == JPEG2000Lossless


def test_move_destination_gets_response_hook(
    moves: MoveArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooked: list[str] = []

    def record(assoc: pynetdicom.association.Association) -> None:
        hooked.append(assoc.acceptor.ae_title)
        return_responses_to_sender(assoc)

    monkeypatch.setattr(retrieve, "return_responses_to_sender", record)
    result = run_dcmtk(
        "movescu", "-S", "-aet", "MOVESCU", "-aec", "CIRRUS", "-aem", "STORESCP",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={moves.study_uid}",
        LOOPBACK, str(moves.gateway.port),
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert hooked == ["STORESCP"]
    assert sop_uids(moves.study) <= set(moves.storescp.received())


def test_movescu_patient_level(moves: MoveArchive) -> None:
    result = run_dcmtk(
        "movescu",
        "-P",
        "-aet",
        "MOVESCU",
        "-aec",
        "CIRRUS",
        "-aem",
        "STORESCP",
        "-k",
        "QueryRetrieveLevel=PATIENT",
        "-k",
        f"PatientID={moves.patient_id}",
        LOOPBACK,
        str(moves.gateway.port),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    received = moves.storescp.received()
    assert sop_uids(moves.study) | sop_uids(moves.second_study) <= set(received)
    assert not sop_uids(moves.other_site) & set(received)


def test_move_pending_counts(moves: MoveArchive) -> None:
    with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, port=moves.pynetdicom_port) as scp:
        responses = _move(
            moves.gateway.port,
            identifier("STUDY", StudyInstanceUID=moves.study_uid),
            "PYSCP",
        )
    pending = [status for status, _ in responses if status.Status == 0xFF00]
    assert [status.NumberOfRemainingSuboperations for status in pending] == [2, 1]
    assert [status.NumberOfCompletedSuboperations for status in pending] == [1, 2]
    status, _ = _final(responses)
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == 3
    assert status.NumberOfFailedSuboperations == 0
    assert status.NumberOfWarningSuboperations == 0
    assert {str(ds.SOPInstanceUID) for ds in scp.received} == sop_uids(moves.study)
    assert {originator for originator in scp.originators} == {("MOVESCU", 1)}


def test_move_announces_gateway_max_pdu(moves: MoveArchive) -> None:
    with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, port=moves.pynetdicom_port) as scp:
        responses = _move(
            moves.gateway.port,
            identifier("STUDY", StudyInstanceUID=moves.study_uid),
            "PYSCP",
        )
    status, _ = _final(responses)
    assert status.Status == 0x0000
    assert scp.sender_max_pdus == [MAX_PDU_BYTES] * len(moves.study)


def test_move_series_list(moves: MoveArchive) -> None:
    series = [moves.series(0)[0].series, moves.series(1)[0].series]
    with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, port=moves.pynetdicom_port) as scp:
        responses = _move(
            moves.gateway.port,
            identifier("SERIES", StudyInstanceUID=moves.study_uid, SeriesInstanceUID=series),
            "PYSCP",
        )
    status, _ = _final(responses)
    assert status.Status == 0x0000
    assert {str(ds.SOPInstanceUID) for ds in scp.received} == sop_uids(moves.study)


def test_move_image_list(moves: MoveArchive) -> None:
    chosen = moves.series(0)
    query = identifier(
        "IMAGE",
        PatientID=moves.patient_id,
        StudyInstanceUID=moves.study_uid,
        SeriesInstanceUID=chosen[0].series,
        SOPInstanceUID=[item.sop for item in chosen] + [generate_uid()],
    )
    with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, port=moves.pynetdicom_port) as scp:
        responses = _move(
            moves.gateway.port, query, "PYSCP", model=PatientRootQueryRetrieveInformationModelMove
        )
    status, _ = _final(responses)
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == 2
    assert {str(ds.SOPInstanceUID) for ds in scp.received} == sop_uids(chosen)


def test_move_other_patient_matches_nothing(moves: MoveArchive) -> None:
    query = identifier("STUDY", PatientID="SOMEONE-ELSE", StudyInstanceUID=moves.study_uid)
    responses = _move(
        moves.gateway.port, query, "PYSCP", model=PatientRootQueryRetrieveInformationModelMove
    )
    status, _ = _final(responses)
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == 0
    assert len(responses) == 1


def test_move_study_root_ignores_patient_id(moves: MoveArchive) -> None:
    # Study Root has no patient level, so PatientID neither filters nor fails the request.
    query = identifier("STUDY", PatientID="*", StudyInstanceUID=moves.study_uid)
    with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, port=moves.pynetdicom_port) as scp:
        responses = _move(moves.gateway.port, query, "PYSCP")
    status, _ = _final(responses)
    assert status.Status == 0x0000
    assert {str(ds.SOPInstanceUID) for ds in scp.received} == sop_uids(moves.study)


def test_move_stays_in_site(moves: MoveArchive) -> None:
    with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, port=moves.pynetdicom_port) as scp:
        responses = _move(
            moves.gateway.port,
            identifier("STUDY", StudyInstanceUID=moves.study_uid),
            "PYSCP",
        )
    assert _final(responses)[0].Status == 0x0000
    received = {str(ds.SOPInstanceUID) for ds in scp.received}
    assert received == sop_uids(moves.study)
    assert moves.other_site[1].sop not in received


def test_move_other_site_caller(moves: MoveArchive) -> None:
    query = identifier("STUDY", StudyInstanceUID=moves.study_uid)
    responses = _move(moves.gateway.port, query, "STORESCP", calling="OTHERSCU")
    status, _ = _final(responses)
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == 1
    assert moves.other_site[1].sop in moves.storescp.received()


def test_move_other_site_destination_unknown(moves: MoveArchive) -> None:
    query = identifier("STUDY", StudyInstanceUID=moves.study_uid)
    status, _ = _final(_move(moves.gateway.port, query, "PYSCP", calling="OTHERSCU"))
    assert status.Status == 0xA801


def test_move_unknown_destination_keeps_association(moves: MoveArchive) -> None:
    ae = AE("MOVESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(LOOPBACK, moves.gateway.port, ae_title="CIRRUS")
    assert assoc.is_established
    query = identifier("STUDY", StudyInstanceUID=moves.study_uid)
    try:
        unknown = list(
            assoc.send_c_move(query, "UNKNOWN", StudyRootQueryRetrieveInformationModelMove)
        )
        assert len(unknown) == 1
        status, _ = unknown[0]
        assert status.Status == 0xA801
        assert "UNKNOWN" in status.ErrorComment
        assert "NumberOfCompletedSuboperations" not in status
        with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, port=moves.pynetdicom_port) as scp:
            known = list(
                assoc.send_c_move(query, "PYSCP", StudyRootQueryRetrieveInformationModelMove)
            )
        assert known[-1][0].Status == 0x0000
        assert len(scp.received) == 3
    finally:
        assoc.release()


def test_move_not_authorized(moves: MoveArchive) -> None:
    query = identifier("STUDY", StudyInstanceUID=moves.study_uid)
    status, _ = _final(_move(moves.gateway.port, query, "STORESCP", calling="STOREONLY"))
    assert status.Status == 0x0124
    assert "may not retrieve" in status.ErrorComment


@pytest.mark.parametrize(
    ("model", "query", "offending"),
    [
        (StudyRootQueryRetrieveInformationModelMove, identifier("STUDY"), 0x0020000D),
        (
            StudyRootQueryRetrieveInformationModelMove,
            identifier("PATIENT", PatientID="P"),
            0x00080052,
        ),
        (StudyRootQueryRetrieveInformationModelMove, identifier("FRAME"), 0x00080052),
        (
            StudyRootQueryRetrieveInformationModelMove,
            identifier("SERIES", StudyInstanceUID=["1.2.3", "1.2.4"], SeriesInstanceUID="1.2.5"),
            0x0020000D,
        ),
        (
            PatientRootQueryRetrieveInformationModelMove,
            identifier("PATIENT", PatientID="DOE*"),
            0x00100020,
        ),
        (PatientRootQueryRetrieveInformationModelMove, identifier("PATIENT"), 0x00100020),
        (
            StudyRootQueryRetrieveInformationModelMove,
            identifier("IMAGE", StudyInstanceUID="1.2.3", SOPInstanceUID="1.2.4"),
            0x0020000E,
        ),
    ],
)
def test_move_invalid_identifier(
    moves: MoveArchive, model: str, query: Dataset, offending: int
) -> None:
    status, _ = _final(_move(moves.gateway.port, query, "STORESCP", model=model))
    assert status.Status == 0xA900
    assert status.OffendingElement == offending
    assert status.ErrorComment


def test_move_undecodable_identifier(moves: MoveArchive, monkeypatch: pytest.MonkeyPatch) -> None:
    ae = AE("MOVESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, moves.gateway.port, ae_title="CIRRUS")
    assert assoc.is_established
    query = identifier("STUDY", StudyInstanceUID=generate_uid())
    try:
        # The requester's encoder returns (0008,0052) with the unknown VR "ZZ".
        with monkeypatch.context() as patch:
            patch.setattr(
                pynetdicom.association, "encode", lambda *args: b"\x08\x00\x52\x00ZZ\x02\x00AB"
            )
            responses = list(
                assoc.send_c_move(query, "STORESCP", StudyRootQueryRetrieveInformationModelMove)
            )
        status, _ = _final(responses)
        assert status.Status == 0xC000
        assert "decoded" in status.ErrorComment
        # The association still serves requests.
        again = list(
            assoc.send_c_move(query, "STORESCP", StudyRootQueryRetrieveInformationModelMove)
        )
        assert _final(again)[0].Status == 0x0000
    finally:
        assoc.release()


def test_move_some_failed(moves: MoveArchive) -> None:
    rejected = moves.study[1].sop

    def answer(ds: Dataset) -> int:
        return 0xA700 if ds.SOPInstanceUID == rejected else 0x0000

    with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, answer, port=moves.pynetdicom_port):
        responses = _move(
            moves.gateway.port, identifier("STUDY", StudyInstanceUID=moves.study_uid), "PYSCP"
        )
    status, final_identifier = _final(responses)
    assert status.Status == 0xB000
    assert status.NumberOfCompletedSuboperations == 2
    assert status.NumberOfFailedSuboperations == 1
    assert failed_uids(final_identifier) == [rejected]


def test_move_warning_status(moves: MoveArchive) -> None:
    with running_pynetdicom_scp(
        "PYSCP", ALL_SYNTAXES, lambda ds: 0xB000, port=moves.pynetdicom_port
    ):
        responses = _move(
            moves.gateway.port, identifier("STUDY", StudyInstanceUID=moves.study_uid), "PYSCP"
        )
    status, final_identifier = _final(responses)
    assert status.Status == 0xB000
    assert status.NumberOfWarningSuboperations == 3
    assert status.NumberOfFailedSuboperations == 0
    assert failed_uids(final_identifier) == []


def test_move_all_failed(moves: MoveArchive) -> None:
    with running_pynetdicom_scp(
        "PYSCP", ALL_SYNTAXES, lambda ds: 0xA700, port=moves.pynetdicom_port
    ):
        responses = _move(
            moves.gateway.port, identifier("STUDY", StudyInstanceUID=moves.study_uid), "PYSCP"
        )
    status, final_identifier = _final(responses)
    assert status.Status == 0xA702
    assert status.NumberOfFailedSuboperations == 3
    assert status.NumberOfCompletedSuboperations == 0
    assert sorted(failed_uids(final_identifier)) == sorted(sop_uids(moves.study))


def test_move_unreachable_destination(moves: MoveArchive) -> None:
    responses = _move(
        moves.gateway.port, identifier("STUDY", StudyInstanceUID=moves.study_uid), "NOWHERE"
    )
    status, final_identifier = _final(responses)
    assert status.Status == 0xA702
    assert status.NumberOfFailedSuboperations == 3
    assert sorted(failed_uids(final_identifier)) == sorted(sop_uids(moves.study))


def test_move_tls_destination_not_supported(moves: MoveArchive) -> None:
    responses = _move(
        moves.gateway.port, identifier("STUDY", StudyInstanceUID=moves.study_uid), "SECURE"
    )
    status, _ = _final(responses)
    assert status.Status == 0xC001
    assert "TLS" in status.ErrorComment


def test_move_transcodes_for_uncompressed_peer(moves: MoveArchive) -> None:
    with running_pynetdicom_scp("PYSCP", UNCOMPRESSED, port=moves.pynetdicom_port) as scp:
        responses = _move(
            moves.gateway.port, identifier("STUDY", StudyInstanceUID=moves.study_uid), "PYSCP"
        )
    assert _final(responses)[0].Status == 0x0000
    by_uid = {
        str(ds.SOPInstanceUID): (ds, syntax)
        for ds, syntax in zip(scp.received, scp.syntaxes, strict=True)
    }
    j2k = moves.study[2]
    received, syntax = by_uid[j2k.sop]
    assert syntax in UNCOMPRESSED
    original = pydicom.dcmread(bundled("MR_small_jp2klossless.dcm"))
    assert np.array_equal(received.pixel_array, original.pixel_array)


def test_move_cancel(moves: MoveArchive) -> None:
    release = threading.Event()
    stored: list[str] = []

    def answer(ds: Dataset) -> int:
        # The second C-STORE waits until the requester has sent its C-CANCEL.
        stored.append(str(ds.SOPInstanceUID))
        if len(stored) == 2:
            release.wait(10)
        return 0x0000

    ae = AE("MOVESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    collected: Responses = []
    with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, answer, port=moves.pynetdicom_port):
        assoc = ae.associate(LOOPBACK, moves.gateway.port, ae_title="CIRRUS")
        assert assoc.is_established
        try:
            responses = assoc.send_c_move(
                identifier("STUDY", StudyInstanceUID=moves.study_uid),
                "PYSCP",
                StudyRootQueryRetrieveInformationModelMove,
                msg_id=11,
            )
            for response in responses:
                collected.append(response)
                if len(collected) == 1:
                    assoc.send_c_cancel(11, assoc.accepted_contexts[0].context_id)
                    time.sleep(0.2)
                    release.set()
        finally:
            release.set()
            assoc.release()
    assert collected[0][0].Status == 0xFF00
    status, final_identifier = _final(collected)
    assert status.Status == 0xFE00
    assert status.NumberOfCompletedSuboperations == 2
    assert status.NumberOfRemainingSuboperations == 1
    assert status.NumberOfFailedSuboperations == 0
    assert failed_uids(final_identifier) == []
    assert len(stored) == 2


def test_move_missing_object(moves: MoveArchive, gateway_settings: Settings) -> None:
    services = Services(gateway_settings)
    ct = pydicom.dcmread(bundled("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    kept = archive(services, SITE, renamed(ct, moves.patient_id, study, series))
    lost = archive(services, SITE, renamed(ct, moves.patient_id, study, series))
    services.clients.s3.delete_object(Bucket=gateway_settings.bucket, Key=lost.object_key)
    with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, port=moves.pynetdicom_port) as scp:
        responses = _move(moves.gateway.port, identifier("STUDY", StudyInstanceUID=study), "PYSCP")
    status, final_identifier = _final(responses)
    assert status.Status == 0xB000
    assert status.NumberOfCompletedSuboperations == 1
    assert status.NumberOfFailedSuboperations == 1
    assert failed_uids(final_identifier) == [lost.sop]
    assert [str(ds.SOPInstanceUID) for ds in scp.received] == [kept.sop]


def test_move_index_unavailable(moto_server: MotoProcess) -> None:
    names = ResourceNames(deployment=f"g{uuid.uuid4().hex[:12]}")
    settings = create_resources(Settings.for_names(names, endpoint_url=moto_server.endpoint_url))
    Services(settings).index_model.delete_table()
    config = _config(free_port(), free_port())
    with start_gateway(settings, config=config) as gateway:
        responses = _move(
            gateway.port, identifier("STUDY", StudyInstanceUID=generate_uid()), "PYSCP"
        )
    status, _ = _final(responses)
    assert status.Status == 0xA701
    assert "index" in status.ErrorComment


def test_move_over_max_matches(moves: MoveArchive, monkeypatch: pytest.MonkeyPatch) -> None:
    # The study has 3 instances, one more than this limit.
    monkeypatch.setattr(retrieve, "MAX_SUBOPERATIONS", 2)
    with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, port=moves.pynetdicom_port) as scp:
        responses = _move(
            moves.gateway.port, identifier("STUDY", StudyInstanceUID=moves.study_uid), "PYSCP"
        )
    [(status, _)] = responses
    assert status.Status == 0xA701
    assert "3 instances match, more than 2" in status.ErrorComment
    assert "NumberOfCompletedSuboperations" not in status
    assert scp.received == []


def test_move_at_max_matches(moves: MoveArchive, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrieve, "MAX_SUBOPERATIONS", 3)
    with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, port=moves.pynetdicom_port) as scp:
        responses = _move(
            moves.gateway.port, identifier("STUDY", StudyInstanceUID=moves.study_uid), "PYSCP"
        )
    status, _ = _final(responses)
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == 3
    assert {str(ds.SOPInstanceUID) for ds in scp.received} == sop_uids(moves.study)


def test_move_unexpected_error(
    moves: MoveArchive, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(*args: Any) -> Any:
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(retrieve, "select_instances", fail)
    with running_pynetdicom_scp("PYSCP", ALL_SYNTAXES, port=moves.pynetdicom_port) as scp:
        responses = _move(
            moves.gateway.port, identifier("STUDY", StudyInstanceUID=moves.study_uid), "PYSCP"
        )
    [(status, _)] = responses
    assert status.Status == 0xC002
    assert status.ErrorComment == "internal error in the archive; retry later"
    assert scp.received == []
    assert "simulated fault" in caplog.text


def test_move_to_orthanc(moves: MoveArchive, tmp_path: Path) -> None:
    from tests.peers.orthanc import require_orthanc, running_orthanc

    require_orthanc()
    with running_orthanc(tmp_path / "orthanc", ae_title="ORTHANC") as orthanc:
        config = AEConfig(
            sites={
                SITE: SiteAEs(
                    callers={"MOVESCU": frozenset({"retrieve"})},
                    destinations={"ORTHANC": Destination(host=LOOPBACK, port=orthanc.dicom_port)},
                )
            }
        )
        with start_gateway(moves.gateway.ae.context.services.settings, config=config) as gateway:
            responses = _move(
                gateway.port, identifier("STUDY", StudyInstanceUID=moves.study_uid), "ORTHANC"
            )
        status, _ = _final(responses)
        assert status.Status == 0x0000
        assert status.NumberOfCompletedSuboperations == 3
        assert orthanc.instance_uids() == sop_uids(moves.study)


def test_move_over_tls(moves: MoveArchive, gateway_settings: Settings, tmp_path: Path) -> None:
    authority = make_authority(tmp_path, "retrieve-test-ca")
    gateway_pair = issue(authority, tmp_path, "gateway", server=True)
    destination_pair = issue(authority, tmp_path, "destination", server=True)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(destination_pair.certificate, destination_pair.private_key)
    tls = TLSConfig(
        certificate=gateway_pair.certificate,
        private_key=gateway_pair.private_key,
        port=0,
        ca_file=authority.certificate,
    )
    with running_pynetdicom_scp("SECURE", ALL_SYNTAXES, ssl_context=server_context) as scp:
        config = AEConfig(
            sites={
                SITE: SiteAEs(
                    callers={"MOVESCU": frozenset({"retrieve"})},
                    destinations={"SECURE": Destination(host=LOOPBACK, port=scp.port, tls=True)},
                )
            }
        )
        services = Services(gateway_settings)
        with Gateway.start(services, config, LOOPBACK, 0, tls) as gateway:
            responses = _move(
                gateway.port, identifier("STUDY", StudyInstanceUID=moves.study_uid), "SECURE"
            )
    status, _ = _final(responses)
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == 3
    assert {str(ds.SOPInstanceUID) for ds in scp.received} == sop_uids(moves.study)
