"""Storage Commitment Push Model over real associations, with pynetdicom as the SCU.

The SCU stores CT instances with C-STORE, requests their commitment with N-ACTION and waits
for the N-EVENT-REPORT, on the same association or, once it has released that one, on a new
association that the gateway opens to the SCU's listener from the AE configuration.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom.association
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dsutils import encode
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StorageCommitmentPushModel,
)
from pynetdicom.transport import ThreadedAssociationServer

from cirrus.config import DEFAULT_AE_TITLE, ResourceNames, Settings
from cirrus.gateway import commitment
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.commitment import (
    ALL_COMMITTED,
    CLASS_INSTANCE_CONFLICT,
    INVALID_ARGUMENT_VALUE,
    MAX_REFERENCED_INSTANCES,
    NO_SUCH_ACTION,
    NO_SUCH_OBJECT_INSTANCE,
    NO_SUCH_SOP_INSTANCE,
    PROCESSING_FAILURE,
    RESOURCE_LIMITATION,
    SOME_FAILED,
    STORAGE_COMMITMENT_INSTANCE,
    CommitmentService,
    Reference,
)
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import NOT_AUTHORIZED, SUCCESS
from cirrus.local.moto_process import LOOPBACK, MotoProcess
from cirrus.local.resources import create_resources
from cirrus.services import Services
from cirrus.storage.objects import ObjectStore
from tests.gateway.gateways import start_gateway
from tests.gateway.scu import SITE, fresh_ct, wait_until

OTHER_SITE = "gateway-commit"
# The SCU of most tests; its destination is the report listener.
SCU = "COMMIT_SCU"
# A caller of the same site without a destination, and one without the store permission.
NO_DESTINATION = "COMMIT_NODEST"
QUERY_ONLY = "COMMIT_QUERY"
OTHER_SCU = "COMMIT_OTHER"
REPORT_TIMEOUT_SECONDS = 15.0


@dataclass
class Reports:
    """N-EVENT-REPORT requests that an SCU received, with the calling AE of each.

    With ``hold_responses``, the SCU sends the response to each report only once that event is
    set, as a slow SCU does.
    """

    received: list[tuple[int, Dataset, str]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    hold_responses: threading.Event | None = None

    def handle(self, event: Event) -> tuple[int, None]:
        self.received.append(
            (int(event.event_type), event.event_information, event.assoc.requestor.ae_title)
        )
        self.arrived.set()
        if self.hold_responses is not None:
            self.hold_responses.wait(REPORT_TIMEOUT_SECONDS)
        return SUCCESS, None

    def wait(self) -> tuple[int, Dataset, str]:
        assert self.arrived.wait(REPORT_TIMEOUT_SECONDS), "no N-EVENT-REPORT arrived"
        assert len(self.received) == 1, f"{len(self.received)} reports arrived"
        return self.received[0]


@dataclass
class Listener:
    """The SCU's own Storage Commitment listener, for reports on a new association."""

    server: ThreadedAssociationServer
    reports: Reports

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    reports = Reports()
    ae = AE(SCU)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    # The gateway requests the association but proposes the SCP role for itself.
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = ae.start_server(
        (LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)]
    )
    assert server is not None
    running = Listener(server, reports)
    yield running
    running.server.shutdown()


def commitment_config(listener: Listener) -> AEConfig:
    return AEConfig.model_validate(
        {
            "sites": {
                SITE: {
                    "callers": {
                        SCU: ["store"],
                        NO_DESTINATION: ["store"],
                        QUERY_ONLY: ["query"],
                    },
                    "destinations": {SCU: {"host": LOOPBACK, "port": listener.port}},
                },
                OTHER_SITE: {"callers": {OTHER_SCU: ["store"]}},
            }
        }
    )


@pytest.fixture(scope="module")
def commitment_gateway(
    gateway_settings: Settings, archive: ObjectStore, listener: Listener
) -> Iterator[Gateway]:
    with start_gateway(gateway_settings, archive, commitment_config(listener)) as running:
        service = commitment_service(running)
        service._report_retry_seconds = 0.1
        yield running


@pytest.fixture(autouse=True)
def clear_listener(listener: Listener) -> None:
    listener.reports.received.clear()
    listener.reports.arrived.clear()


def commitment_service(gateway: Gateway) -> CommitmentService:
    (service,) = [s for s in gateway.ae.dimse_services if isinstance(s, CommitmentService)]
    return service


@contextmanager
def scu_association(
    gateway: Gateway, calling: str = SCU, commitment_syntax: str | None = None
) -> Iterator[tuple[Association, Reports]]:
    """Open an association for CT storage and Storage Commitment, with its own report log.

    ``commitment_syntax`` is the one transfer syntax proposed for Storage Commitment;
    without it, pynetdicom's default syntaxes are proposed.
    """
    reports = Reports()
    ae = AE(calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StorageCommitmentPushModel, commitment_syntax)
    assoc = ae.associate(
        LOOPBACK,
        gateway.port,
        ae_title=DEFAULT_AE_TITLE,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)],
    )
    assert assoc.is_established, f"the gateway did not accept {calling}"
    try:
        yield assoc, reports
    finally:
        if assoc.is_established:
            assoc.release()


def store_cts(assoc: Association, tmp_path: Path, count: int) -> list[Reference]:
    references = []
    for _ in range(count):
        path, _ = fresh_ct(tmp_path)
        assert assoc.send_c_store(path).Status == SUCCESS
        references.append(Reference(CTImageStorage, pydicom.dcmread(path).SOPInstanceUID))
    return references


def commitment_request(references: list[Reference], transaction_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid or generate_uid()
    items = []
    for reference in references:
        item = Dataset()
        item.ReferencedSOPClassUID = reference.sop_class_uid
        item.ReferencedSOPInstanceUID = reference.sop_instance_uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def request_commitment(
    assoc: Association,
    request: Dataset,
    action_type: int = 1,
    instance: str = STORAGE_COMMITMENT_INSTANCE,
) -> Dataset:
    status, _ = assoc.send_n_action(request, action_type, StorageCommitmentPushModel, instance)
    assert "Status" in status, "no N-ACTION response"
    return status


def uids(sequence: Any) -> set[str]:
    return {str(item.ReferencedSOPInstanceUID) for item in sequence}


def failure_reasons(report: Dataset) -> dict[str, int]:
    return {
        str(item.ReferencedSOPInstanceUID): int(item.FailureReason)
        for item in report.FailedSOPSequence
    }


# --- reports on the requesting association -----------------------------------------------


def test_all_committed(commitment_gateway: Gateway, tmp_path: Path) -> None:
    with scu_association(commitment_gateway) as (assoc, reports):
        references = store_cts(assoc, tmp_path, 2)
        request = commitment_request(references)
        assert request_commitment(assoc, request).Status == SUCCESS
        event_type, report, calling = reports.wait()

    assert event_type == ALL_COMMITTED
    assert report.TransactionUID == request.TransactionUID
    assert report.RetrieveAETitle == DEFAULT_AE_TITLE
    assert uids(report.ReferencedSOPSequence) == {r.sop_instance_uid for r in references}
    assert "FailedSOPSequence" not in report
    assert calling == SCU


def test_some_failed(commitment_gateway: Gateway, tmp_path: Path) -> None:
    with scu_association(commitment_gateway) as (assoc, reports):
        stored, mislabelled = store_cts(assoc, tmp_path, 2)
        unknown = Reference(CTImageStorage, generate_uid())
        wrong_class = Reference(MRImageStorage, mislabelled.sop_instance_uid)
        request = commitment_request([stored, unknown, wrong_class])
        assert request_commitment(assoc, request).Status == SUCCESS
        event_type, report, _ = reports.wait()

    assert event_type == SOME_FAILED
    assert report.TransactionUID == request.TransactionUID
    assert uids(report.ReferencedSOPSequence) == {stored.sop_instance_uid}
    assert failure_reasons(report) == {
        unknown.sop_instance_uid: NO_SUCH_OBJECT_INSTANCE,
        wrong_class.sop_instance_uid: CLASS_INSTANCE_CONFLICT,
    }
    (conflict,) = [
        item
        for item in report.FailedSOPSequence
        if item.ReferencedSOPInstanceUID == wrong_class.sop_instance_uid
    ]
    assert conflict.ReferencedSOPClassUID == MRImageStorage


def test_unknown_instance_fails(commitment_gateway: Gateway) -> None:
    unknown = Reference(CTImageStorage, generate_uid())
    with scu_association(commitment_gateway) as (assoc, reports):
        assert request_commitment(assoc, commitment_request([unknown])).Status == SUCCESS
        event_type, report, _ = reports.wait()

    assert event_type == SOME_FAILED
    assert "ReferencedSOPSequence" not in report
    assert failure_reasons(report) == {unknown.sop_instance_uid: NO_SUCH_OBJECT_INSTANCE}


def test_other_site_instance_fails(commitment_gateway: Gateway, tmp_path: Path) -> None:
    with scu_association(commitment_gateway, OTHER_SCU) as (assoc, _):
        (theirs,) = store_cts(assoc, tmp_path, 1)

    with scu_association(commitment_gateway) as (assoc, reports):
        assert request_commitment(assoc, commitment_request([theirs])).Status == SUCCESS
        event_type, report, _ = reports.wait()

    assert event_type == SOME_FAILED
    assert failure_reasons(report) == {theirs.sop_instance_uid: NO_SUCH_OBJECT_INSTANCE}


def test_deleted_object_fails(
    commitment_gateway: Gateway, archive: ObjectStore, tmp_path: Path
) -> None:
    # The claim record still names the key, but the object is gone from S3.
    path, key = fresh_ct(tmp_path)
    reference = Reference(CTImageStorage, pydicom.dcmread(path).SOPInstanceUID)
    with scu_association(commitment_gateway) as (assoc, reports):
        assert assoc.send_c_store(path).Status == SUCCESS
        archive.delete([key])
        assert request_commitment(assoc, commitment_request([reference])).Status == SUCCESS
        event_type, report, _ = reports.wait()

    assert event_type == SOME_FAILED
    assert failure_reasons(report) == {reference.sop_instance_uid: NO_SUCH_OBJECT_INSTANCE}


def test_unparsable_object_processing_failure(
    commitment_gateway: Gateway, archive: ObjectStore, tmp_path: Path
) -> None:
    # The claim record names the key, but the object there is no longer a DICOM file.
    path, key = fresh_ct(tmp_path)
    damaged = Reference(CTImageStorage, pydicom.dcmread(path).SOPInstanceUID)
    with scu_association(commitment_gateway) as (assoc, reports):
        assert assoc.send_c_store(path).Status == SUCCESS
        (intact,) = store_cts(assoc, tmp_path, 1)
        archive.put(key, b"not a DICOM file")
        request = commitment_request([intact, damaged])
        assert request_commitment(assoc, request).Status == SUCCESS
        event_type, report, _ = reports.wait()

    assert event_type == SOME_FAILED
    assert uids(report.ReferencedSOPSequence) == {intact.sop_instance_uid}
    assert failure_reasons(report) == {damaged.sop_instance_uid: PROCESSING_FAILURE}


def test_index_unavailable_processing_failure(moto_server: MotoProcess, listener: Listener) -> None:
    # A deployment without its index table: every claim read fails.
    names = ResourceNames(deployment=f"g{uuid.uuid4().hex[:12]}")
    settings = create_resources(Settings.for_names(names, endpoint_url=moto_server.endpoint_url))
    Services(settings).index_model.delete_table()
    references = [Reference(CTImageStorage, generate_uid()) for _ in range(2)]
    with start_gateway(settings, config=commitment_config(listener)) as gateway:
        with scu_association(gateway) as (assoc, reports):
            request = commitment_request(references)
            assert request_commitment(assoc, request).Status == SUCCESS
            event_type, report, _ = reports.wait()

    assert event_type == SOME_FAILED
    assert report.TransactionUID == request.TransactionUID
    assert "ReferencedSOPSequence" not in report
    assert failure_reasons(report) == {
        reference.sop_instance_uid: PROCESSING_FAILURE for reference in references
    }


def release_later(event: threading.Event) -> None:
    """Set ``event`` 0.3 s from now, once the request sent meanwhile has reached the gateway."""
    timer = threading.Timer(0.3, event.set)
    timer.daemon = True
    timer.start()


def test_second_request_while_report_pending(
    commitment_gateway: Gateway, listener: Listener, tmp_path: Path
) -> None:
    # The second N-ACTION reaches the gateway while the first report awaits its response.
    with scu_association(commitment_gateway) as (assoc, reports):
        first, second = store_cts(assoc, tmp_path, 2)
        first_request = commitment_request([first])
        second_request = commitment_request([second])
        reports.hold_responses = threading.Event()
        assert request_commitment(assoc, first_request).Status == SUCCESS
        assert reports.arrived.wait(REPORT_TIMEOUT_SECONDS), "the first report did not arrive"
        release_later(reports.hold_responses)
        second_status = request_commitment(assoc, second_request)
        both_arrived = wait_until(lambda: len(reports.received) == 2, REPORT_TIMEOUT_SECONDS)
        still_established = assoc.is_established

    assert second_status.Status == SUCCESS
    assert both_arrived, f"{len(reports.received)} reports arrived"
    transactions = [str(report.TransactionUID) for _, report, _ in reports.received]
    assert transactions == [first_request.TransactionUID, second_request.TransactionUID]
    assert [event_type for event_type, _, _ in reports.received] == [ALL_COMMITTED] * 2
    assert still_established
    assert not listener.reports.received


def test_store_while_report_pending(commitment_gateway: Gateway, tmp_path: Path) -> None:
    with scu_association(commitment_gateway) as (assoc, reports):
        references = store_cts(assoc, tmp_path, 1)
        reports.hold_responses = threading.Event()
        assert request_commitment(assoc, commitment_request(references)).Status == SUCCESS
        assert reports.arrived.wait(REPORT_TIMEOUT_SECONDS), "the report did not arrive"
        release_later(reports.hold_responses)
        path, _ = fresh_ct(tmp_path)
        store_status = assoc.send_c_store(path)
        still_established = assoc.is_established

    assert store_status.get("Status") == SUCCESS
    assert still_established
    assert len(reports.received) == 1


def test_unanswered_report_sent_again_on_new_association(
    gateway_settings: Settings,
    archive: ObjectStore,
    listener: Listener,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.WARNING, logger="cirrus.gateway")
    with start_gateway(gateway_settings, archive, commitment_config(listener)) as gateway:
        gateway.ae.dimse_timeout = 0.5
        with scu_association(gateway) as (assoc, reports):
            # The SCU sends no response to the report on its association.
            reports.hold_responses = threading.Event()
            try:
                references = store_cts(assoc, tmp_path, 1)
                request = commitment_request(references)
                assert request_commitment(assoc, request).Status == SUCCESS
                event_type, report, _ = listener.reports.wait()
                aborted = wait_until(lambda: assoc.is_aborted)
            finally:
                reports.hold_responses.set()

    assert event_type == ALL_COMMITTED
    assert report.TransactionUID == request.TransactionUID
    assert aborted
    [warning] = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert "no N-EVENT-REPORT response within 0.5 s" in warning.getMessage()


# --- reports on a new association --------------------------------------------------------


def hold_commitments(monkeypatch: pytest.MonkeyPatch, gateway: Gateway) -> threading.Event:
    """Make the gateway's commitments wait for the returned event, so the SCU releases first."""
    service = commitment_service(gateway)
    release_done = threading.Event()
    original = service.commit

    def commit_after_release(*args: Any) -> Any:
        assert release_done.wait(REPORT_TIMEOUT_SECONDS)
        return original(*args)

    monkeypatch.setattr(service, "commit", commit_after_release)
    return release_done


def test_report_on_new_association(
    commitment_gateway: Gateway,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    release_done = hold_commitments(monkeypatch, commitment_gateway)
    with scu_association(commitment_gateway) as (assoc, same_association):
        references = store_cts(assoc, tmp_path, 1)
        request = commitment_request(references)
        assert request_commitment(assoc, request).Status == SUCCESS
        assoc.release()
    release_done.set()

    event_type, report, calling = listener.reports.wait()
    assert event_type == ALL_COMMITTED
    assert report.TransactionUID == request.TransactionUID
    assert uids(report.ReferencedSOPSequence) == {references[0].sop_instance_uid}
    assert calling == DEFAULT_AE_TITLE
    assert not same_association.received


def test_no_destination_logs_error(
    commitment_gateway: Gateway,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO, logger="cirrus.gateway")
    release_done = hold_commitments(monkeypatch, commitment_gateway)
    with scu_association(commitment_gateway, NO_DESTINATION) as (assoc, _):
        references = store_cts(assoc, tmp_path, 1)
        assert request_commitment(assoc, commitment_request(references)).Status == SUCCESS
        assoc.release()
    release_done.set()

    assert commitment_service(commitment_gateway).wait_idle(REPORT_TIMEOUT_SECONDS)
    errors = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR
    assert NO_DESTINATION in errors[0].getMessage()
    assert "the caller released the association" in errors[0].getMessage()
    assert not listener.reports.received


def test_aborted_association_logged_as_aborted(
    commitment_gateway: Gateway,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO, logger="cirrus.gateway")
    release_done = hold_commitments(monkeypatch, commitment_gateway)
    with scu_association(commitment_gateway, NO_DESTINATION) as (assoc, _):
        references = store_cts(assoc, tmp_path, 1)
        assert request_commitment(assoc, commitment_request(references)).Status == SUCCESS
        assoc.abort()
    assert wait_until(lambda: not commitment_gateway.active_associations())
    release_done.set()

    assert commitment_service(commitment_gateway).wait_idle(REPORT_TIMEOUT_SECONDS)
    [error] = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert "the association was aborted" in error.getMessage()
    assert "released" not in error.getMessage()
    assert not listener.reports.received


def test_unreachable_destination_retried(
    commitment_gateway: Gateway,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.WARNING, logger="cirrus.gateway")
    release_done = hold_commitments(monkeypatch, commitment_gateway)
    listener.server.shutdown()
    try:
        with scu_association(commitment_gateway) as (assoc, _):
            references = store_cts(assoc, tmp_path, 1)
            assert request_commitment(assoc, commitment_request(references)).Status == SUCCESS
            assoc.release()
        release_done.set()
        assert commitment_service(commitment_gateway).wait_idle(REPORT_TIMEOUT_SECONDS)
    finally:
        restart_listener(listener)

    attempts = [r for r in caplog.records if "(attempt" in r.getMessage()]
    assert len(attempts) == 3
    assert [r for r in caplog.records if "abandoned" in r.getMessage()]


def restart_listener(listener: Listener) -> None:
    """Listen again on the same port, because the gateway's configuration names it."""
    ae = AE(SCU)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = ae.start_server(
        (LOOPBACK, listener.port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, listener.reports.handle)],
    )
    assert server is not None
    listener.server = server


def test_shutdown_waits_for_pending_report(
    gateway_settings: Settings,
    archive: ObjectStore,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    gateway = start_gateway(gateway_settings, archive, commitment_config(listener))
    release_done = hold_commitments(monkeypatch, gateway)
    with scu_association(gateway) as (assoc, _):
        references = store_cts(assoc, tmp_path, 1)
        assert request_commitment(assoc, commitment_request(references)).Status == SUCCESS
        assoc.release()
    release_done.set()
    gateway.shutdown(grace_seconds=REPORT_TIMEOUT_SECONDS)

    # The report was sent before shutdown returned.
    assert listener.reports.arrived.is_set()
    event_type, _, _ = listener.reports.wait()
    assert event_type == ALL_COMMITTED


def test_shutdown_logs_lost_report(
    gateway_settings: Settings,
    archive: ObjectStore,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.WARNING, logger="cirrus.gateway")
    gateway = start_gateway(gateway_settings, archive, commitment_config(listener))
    release_done = hold_commitments(monkeypatch, gateway)
    try:
        with scu_association(gateway) as (assoc, _):
            references = store_cts(assoc, tmp_path, 1)
            assert request_commitment(assoc, commitment_request(references)).Status == SUCCESS
            assoc.release()
        gateway.shutdown(grace_seconds=0.2)
    finally:
        release_done.set()
        # The held report goes out now; wait for it so that it cannot reach a later test.
        assert commitment_service(gateway).wait_idle(REPORT_TIMEOUT_SECONDS)

    lost = [r for r in caplog.records if "pending at shutdown" in r.getMessage()]
    assert len(lost) == 1
    assert lost[0].__dict__["count"] == 1


# --- rejected requests -------------------------------------------------------------------


def test_caller_without_store_refused(commitment_gateway: Gateway) -> None:
    reference = Reference(CTImageStorage, generate_uid())
    with scu_association(commitment_gateway, QUERY_ONLY) as (assoc, reports):
        status = request_commitment(assoc, commitment_request([reference]))
    assert status.Status == NOT_AUTHORIZED
    assert "may not store" in status.ErrorComment
    assert not reports.received


def empty_sequence() -> Dataset:
    return commitment_request([])


def no_transaction() -> Dataset:
    ds = commitment_request([Reference(CTImageStorage, generate_uid())])
    del ds.TransactionUID
    return ds


def bad_transaction() -> Dataset:
    return commitment_request([Reference(CTImageStorage, generate_uid())], "1.2.03.x")


def item_without_class() -> Dataset:
    ds = commitment_request([Reference(CTImageStorage, generate_uid())])
    del ds.ReferencedSOPSequence[0].ReferencedSOPClassUID
    return ds


def duplicate_reference() -> Dataset:
    reference = Reference(CTImageStorage, generate_uid())
    return commitment_request([reference, reference])


# pydicom warns about the invalid Transaction UID that one case sends on purpose.
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize(
    ("build", "comment"),
    [
        (duplicate_reference, "referenced twice"),
        (empty_sequence, "Referenced SOP Sequence"),
        (no_transaction, "Transaction UID"),
        (bad_transaction, "Transaction UID"),
        (item_without_class, "lacks its SOP Class"),
    ],
)
def test_invalid_request_rejected(commitment_gateway: Gateway, build: Any, comment: str) -> None:
    with scu_association(commitment_gateway) as (assoc, reports):
        status = request_commitment(assoc, build())
    assert status.Status == INVALID_ARGUMENT_VALUE
    assert comment in status.ErrorComment
    assert not reports.received


def test_unknown_action_rejected(commitment_gateway: Gateway) -> None:
    request = commitment_request([Reference(CTImageStorage, generate_uid())])
    with scu_association(commitment_gateway) as (assoc, _):
        status = request_commitment(assoc, request, action_type=2)
    assert status.Status == NO_SUCH_ACTION


def test_other_instance_rejected(commitment_gateway: Gateway) -> None:
    request = commitment_request([Reference(CTImageStorage, generate_uid())])
    with scu_association(commitment_gateway) as (assoc, _):
        status = request_commitment(assoc, request, instance=generate_uid())
    assert status.Status == NO_SUCH_SOP_INSTANCE


def assert_no_report(gateway: Gateway, reports: Reports) -> None:
    """Check that no commitment runs or reports, once every started one has ended."""
    assert commitment_service(gateway).wait_idle(REPORT_TIMEOUT_SECONDS)
    assert not reports.received


def test_too_many_references_rejected(commitment_gateway: Gateway) -> None:
    count = MAX_REFERENCED_INSTANCES + 1
    references = [Reference(CTImageStorage, generate_uid()) for _ in range(count)]
    with scu_association(commitment_gateway) as (assoc, reports):
        status = request_commitment(assoc, commitment_request(references))
        assert_no_report(commitment_gateway, reports)
    assert status.Status == RESOURCE_LIMITATION
    assert f"{count} instances in one request" in status.ErrorComment


def test_unexpected_error_processing_failure(
    commitment_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any) -> Any:
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(commitment, "_check_references", fail)
    request = commitment_request([Reference(CTImageStorage, generate_uid())])
    with scu_association(commitment_gateway) as (assoc, reports):
        status = request_commitment(assoc, request)
        assert_no_report(commitment_gateway, reports)
    assert status.Status == PROCESSING_FAILURE
    assert status.ErrorComment == "internal error in the archive"


def with_unknown_vr(request: Dataset, tag: bytes) -> bytes:
    """Encode ``request`` in Explicit VR Little Endian with an unknown VR in element ``tag``.

    ``tag`` is the element's 4 encoded tag bytes. Its VR "UI" becomes "ZZ", which is not a
    DICOM VR, so pydicom cannot decode the element.
    """
    encoded = encode(request, False, True)
    assert encoded is not None
    assert encoded.count(tag + b"UI") == 1
    return encoded.replace(tag + b"UI", tag + b"ZZ")


@pytest.mark.parametrize(
    "tag",
    [b"\x08\x00\x95\x11", b"\x08\x00\x55\x11"],
    ids=["transaction-uid", "referenced-sop-instance-uid"],
)
def test_undecodable_action_information_rejected(
    commitment_gateway: Gateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tag: bytes
) -> None:
    with scu_association(commitment_gateway, SCU, ExplicitVRLittleEndian) as (assoc, reports):
        # A stored instance, which a request that the gateway accepted would commit.
        references = store_cts(assoc, tmp_path, 1)
        request = commitment_request(references)
        encoded = with_unknown_vr(request, tag)
        with monkeypatch.context() as patch:
            # The requester's encoder returns the damaged Action Information.
            patch.setattr(pynetdicom.association, "encode", lambda *args: encoded)
            status = request_commitment(assoc, request)
        assert_no_report(commitment_gateway, reports)
    assert status.Status == INVALID_ARGUMENT_VALUE
    assert "Action Information cannot be decoded" in status.ErrorComment


def test_truncated_action_information_rejected(
    commitment_gateway: Gateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with scu_association(commitment_gateway, SCU, ExplicitVRLittleEndian) as (assoc, reports):
        references = store_cts(assoc, tmp_path, 1)
        request = commitment_request(references)
        encoded = encode(request, False, True)
        assert encoded is not None
        # The last Referenced SOP Instance UID loses its final bytes, so its length runs past
        # the end of the message, as does the length of every item and sequence around it.
        truncated = encoded[:-6]
        with monkeypatch.context() as patch:
            patch.setattr(pynetdicom.association, "encode", lambda *args: truncated)
            status = request_commitment(assoc, request)
        assert_no_report(commitment_gateway, reports)
    assert status.Status == INVALID_ARGUMENT_VALUE
    assert status.ErrorComment == "Action Information cannot be decoded: data set is truncated"


def test_gateway_serves_after_rejections(commitment_gateway: Gateway, tmp_path: Path) -> None:
    with scu_association(commitment_gateway) as (assoc, reports):
        assert request_commitment(assoc, empty_sequence()).Status == INVALID_ARGUMENT_VALUE
        references = store_cts(assoc, tmp_path, 1)
        assert request_commitment(assoc, commitment_request(references)).Status == SUCCESS
        event_type, _, _ = reports.wait()
    assert event_type == ALL_COMMITTED
    assert wait_until(lambda: not commitment_gateway.active_associations())
