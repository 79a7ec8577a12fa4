"""``cirrus import --get`` against a pynetdicom peer that sends each instance as it stores it.

The peer neither decodes nor encodes: an instance whose stored transfer syntax has no accepted
presentation context fails at the peer, as it does at Orthanc for a syntax it cannot decode.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from cirrus.bulk_import.dimse_source import (
    GET_TRANSFER_SYNTAXES,
    DimseSource,
    Peer,
    get_contexts,
)
from cirrus.bulk_import.outcome import Outcome, Result
from cirrus.bulk_import.sources import SourceUnavailableError, Unit
from cirrus.bulk_import.study_filter import StudyFilter
from tests.e2e.conftest import free_port
from tests.pydicom_files import bundled

PEER_AE = "PEER"
# Explicit VR Little Endian, JPEG 2000, JPEG Baseline and RLE Lossless.
FILES = ("CT_small.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_RLE.dcm")


class _Received:
    """A ``UnitImport`` that keeps the bytes of every instance and every failure."""

    def __init__(self) -> None:
        self.instances: dict[str, bytes] = {}
        self.failures: list[str] = []

    def file(self, path: Path, name: str) -> Outcome:
        raise AssertionError("a DICOM peer sends no files")

    def data(self, data: bytes, name: str, not_dicom: Result = Result.REJECTED) -> Outcome:
        self.instances[name] = data
        return Outcome(name, Result.STORED, size=len(data))

    def failed(self, name: str, reason: str) -> Outcome:
        self.failures.append(reason)
        return Outcome(name, Result.FAILED, reason)


def _study(study: str) -> list[Dataset]:
    """Return the instances of FILES in one study, one series per file."""
    instances = []
    for name in FILES:
        ds = pydicom.dcmread(bundled(name))
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        instances.append(ds)
    return instances


def _match(ds: Dataset, level: str) -> Dataset:
    match = Dataset()
    match.QueryRetrieveLevel = level
    match.StudyInstanceUID = ds.StudyInstanceUID
    if level in ("SERIES", "IMAGE"):
        match.SeriesInstanceUID = ds.SeriesInstanceUID
    if level == "IMAGE":
        match.SOPInstanceUID = ds.SOPInstanceUID
        match.SOPClassUID = ds.SOPClassUID
    return match


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> Iterator[tuple[Peer, list[Dataset]]]:
    """A C-FIND and C-GET SCP on 127.0.0.1 holding the study of FILES."""
    instances = _study(generate_uid())
    answers_image_level = getattr(request, "param", True)

    def on_find(event: Event) -> Iterator[tuple[int, Dataset | None]]:
        level = str(event.identifier.QueryRetrieveLevel)
        if level == "IMAGE" and not answers_image_level:
            yield 0xA900, None
            return
        if level == "STUDY":
            yield 0xFF00, _match(instances[0], level)
            return
        # Each instance is in a series of its own.
        series = event.identifier.get("SeriesInstanceUID", "")
        for ds in instances:
            if level == "SERIES" or ds.SeriesInstanceUID == series:
                yield 0xFF00, _match(ds, level)

    def on_get(event: Event) -> Iterator[int | tuple[int, Dataset]]:
        yield len(instances)
        for ds in instances:
            yield 0xFF00, ds

    ae = AE(ae_title=PEER_AE)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in {str(ds.SOPClassUID) for ds in instances}:
        ae.add_supported_context(
            sop_class, list(GET_TRANSFER_SYNTAXES), scu_role=True, scp_role=True
        )
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get)],
    )
    try:
        yield Peer(PEER_AE, "127.0.0.1", port), instances
    finally:
        server.shutdown()


def _get_study(peer: Peer, study: str) -> _Received:
    source = DimseSource(peer, StudyFilter(), use_get=True, timeout=30)
    received = _Received()
    try:
        source.import_unit(Unit(study, tracks_instances=True), received)
    finally:
        source.close()
    return received


def test_get_keeps_stored_syntaxes(peer: tuple[Peer, list[Dataset]]) -> None:
    address, instances = peer
    received = _get_study(address, str(instances[0].StudyInstanceUID))

    assert received.failures == []
    assert len(received.instances) == len(instances)
    for ds in instances:
        got = pydicom.dcmread(BytesIO(received.instances[str(ds.SOPInstanceUID)]))
        assert got.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert got.PixelData == ds.PixelData


@pytest.mark.parametrize("peer", [False], indirect=True)
def test_get_without_image_level_find(peer: tuple[Peer, list[Dataset]]) -> None:
    address, instances = peer
    received = _get_study(address, str(instances[0].StudyInstanceUID))

    # Only the uncompressed instance can be sent; this peer does not decompress the others.
    assert list(received.instances) == [str(instances[0].SOPInstanceUID)]
    assert len(received.failures) == 1
    assert "3 sub-operations failed at the peer" in received.failures[0]


def test_get_contexts_within_limit() -> None:
    classes = [f"1.2.3.{number}" for number in range(20)]
    contexts = get_contexts(classes)

    assert len(contexts) == 127
    assert all(len(syntaxes) == 1 for _, syntaxes in contexts)
    for sop_class in classes:
        proposed = [syntaxes[0] for uid, syntaxes in contexts if uid == sop_class]
        assert proposed[:2] == [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert len(get_contexts(classes[:2])) == 2 * len(GET_TRANSFER_SYNTAXES)


def test_association_rejection_reason() -> None:
    ae = AE(ae_title=PEER_AE)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.require_called_aet = True
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        source = DimseSource(Peer("WRONGAE", "127.0.0.1", port), StudyFilter(), use_get=True)
        with pytest.raises(SourceUnavailableError, match="Called AE title not recognised"):
            list(source.units())
    finally:
        server.shutdown()


def test_association_connection_refused() -> None:
    source = DimseSource(Peer(PEER_AE, "127.0.0.1", free_port()), StudyFilter(), use_get=True)
    with pytest.raises(SourceUnavailableError, match=r"cannot connect to 127\.0\.0\.1 port"):
        list(source.units())
