"""The gateway's EMF metrics: the values counted, their dimensions, the periodic flush."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from cirrus.config import Settings
from cirrus.gateway.commitment import STORAGE_COMMITMENT_INSTANCE
from cirrus.gateway.limits import GatewayLimits
from cirrus.gateway.metrics import GatewayMetrics
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import DATA_SET_DOES_NOT_MATCH, OUT_OF_RESOURCES, SUCCESS
from cirrus.local.moto_process import LOOPBACK
from cirrus.services import Services
from cirrus.storage.objects import ObjectStore
from tests.gateway.gateways import OPEN_CONFIG
from tests.gateway.scu import (
    associate,
    dataset_bytes,
    fresh_ct,
    send_file_as_is,
    wait_until,
    write_part10,
)
from tests.gateway.test_large import write_large_instance

CT_CONTEXT = [(CTImageStorage, ExplicitVRLittleEndian)]
NAMESPACE = "CirrusGatewayTest"


def metrics_gateway(
    settings: Settings, metrics: GatewayMetrics, limits: GatewayLimits | None = None
) -> Gateway:
    return Gateway.start(
        Services(settings), OPEN_CONFIG, LOOPBACK, 0, limits=limits, metrics=metrics
    )


def emf_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def metric_names(line: dict[str, Any]) -> set[str]:
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    return {metric["Name"] for metric in directive["Metrics"]}


def large_class(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID)


def test_flush_at_stop_counts_everything(
    gateway_settings: Settings,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    stream = io.StringIO()
    metrics = GatewayMetrics(NAMESPACE, {"Deployment": "test"}, 3600, stream)
    first, first_key = fresh_ct(tmp_path)
    second, second_key = fresh_ct(tmp_path)
    large = tmp_path / "large.dcm"
    write_large_instance(large, 600_000)
    # A CT data set sent under a request that names another SOP Instance UID.
    mismatched = write_part10(
        tmp_path / "mismatch.dcm",
        CTImageStorage,
        "1.2.3.4",
        ExplicitVRLittleEndian,
        dataset_bytes(first.read_bytes()),
    )
    limits = GatewayLimits(max_instance_bytes=200_000, spool_bytes=1_000_000)

    with metrics_gateway(gateway_settings, metrics, limits) as gateway:
        with associate(
            gateway.port, [*CT_CONTEXT, (large_class(large), ExplicitVRLittleEndian)]
        ) as assoc:
            statuses = [
                send_file_as_is(monkeypatch, assoc, path).Status
                for path in (first, second, large, mismatched)
            ]
        rejecting = AE("TESTSCU")
        rejecting.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        rejected = rejecting.associate(LOOPBACK, gateway.port, ae_title="NOT-CIRRUS")
        assert rejected.is_rejected
        assert wait_until(lambda: not gateway.active_associations())
    lines = emf_lines(stream)

    assert statuses == [SUCCESS, SUCCESS, OUT_OF_RESOURCES, DATA_SET_DOES_NOT_MATCH]
    totals, *failures = lines
    (directive,) = totals["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [["Deployment", "service"]]
    assert totals["Deployment"] == "test"
    assert totals["service"] == "cirrus-gateway"
    assert totals["AssociationsAccepted"] == [1.0]
    assert totals["AssociationsRejected"] == [1.0]
    assert totals["AssociationsAborted"] == [0.0]
    assert totals["InstancesStored"] == [2.0]
    stored_bytes = archive.size(first_key) + archive.size(second_key)
    assert totals["StoredBytes"] == [float(stored_bytes)]
    assert totals["ActiveAssociations"] == [0.0]
    assert totals["SpoolBytes"] == [0.0]
    units = {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]}
    assert units["StoredBytes"] == "Bytes"
    assert units["InstancesStored"] == "Count"
    by_status = {line["Status"]: line["StoreFailures"] for line in failures}
    assert by_status == {"0xA700": [1.0], "0xA900": [1.0]}
    for line in failures:
        (failure_directive,) = line["_aws"]["CloudWatchMetrics"]
        assert failure_directive["Dimensions"] == [["Deployment", "Status", "service"]]
        assert metric_names(line) == {"StoreFailures"}


def test_periodic_flush_resets_counts(
    gateway_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stream = io.StringIO()
    metrics = GatewayMetrics(NAMESPACE, {"Deployment": "test"}, 0.2, stream)
    path, _ = fresh_ct(tmp_path)

    with metrics_gateway(gateway_settings, metrics) as gateway:
        with associate(gateway.port, CT_CONTEXT) as assoc:
            status = send_file_as_is(monkeypatch, assoc, path)
        assert wait_until(lambda: len(emf_lines(stream)) >= 3)
    lines = emf_lines(stream)

    assert status.Status == SUCCESS
    assert sum(line["InstancesStored"][0] for line in lines) == 1.0
    assert sum(line["AssociationsAccepted"][0] for line in lines) == 1.0
    assert all(metric_names(line) >= {"InstancesStored", "StoredBytes"} for line in lines)
    timestamps = [line["_aws"]["Timestamp"] for line in lines]
    assert timestamps == sorted(timestamps)
    assert len(set(timestamps)) == len(timestamps)


@pytest.mark.parametrize("ending", ["abort", "connection-closed"])
def test_aborted_association_counted(gateway_settings: Settings, ending: str) -> None:
    stream = io.StringIO()
    metrics = GatewayMetrics(NAMESPACE, {"Deployment": "test"}, 3600, stream)

    with metrics_gateway(gateway_settings, metrics) as gateway:
        with associate(gateway.port, CT_CONTEXT) as assoc:
            if ending == "abort":
                assoc.abort()
            else:
                # The TCP connection ends without an A-RELEASE-RQ or A-ABORT.
                association_socket = assoc.dul.socket
                assert association_socket is not None
                assert association_socket.socket is not None
                association_socket.socket.shutdown(socket.SHUT_RDWR)
            scu_ended = wait_until(lambda: not assoc.is_established)
        gateway_ended = wait_until(lambda: not gateway.active_associations())
    (totals,) = emf_lines(stream)

    assert scu_ended
    assert gateway_ended
    assert totals["AssociationsAccepted"] == [1.0]
    assert totals["AssociationsAborted"] == [1.0]


def test_service_failures_counted(gateway_settings: Settings) -> None:
    stream = io.StringIO()
    metrics = GatewayMetrics(NAMESPACE, {"Deployment": "test"}, 3600, stream)
    find_model = StudyRootQueryRetrieveInformationModelFind
    move_model = StudyRootQueryRetrieveInformationModelMove
    get_model = StudyRootQueryRetrieveInformationModelGet
    study = Dataset()
    study.QueryRetrieveLevel = "STUDY"
    study.StudyInstanceUID = generate_uid()
    no_level = Dataset()
    no_level.PatientID = "P1"
    invalid_date = Dataset()
    invalid_date.QueryRetrieveLevel = "STUDY"
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):
        invalid_date.StudyDate = "2024"
    commitment_request = Dataset()
    commitment_request.TransactionUID = generate_uid()
    contexts = [
        (model, ExplicitVRLittleEndian)
        for model in (Verification, find_model, move_model, get_model, StorageCommitmentPushModel)
    ]

    with metrics_gateway(gateway_settings, metrics) as gateway:
        with associate(gateway.port, contexts) as assoc:
            echo = assoc.send_c_echo()
            found = list(assoc.send_c_find(study, find_model))
            no_level_find = list(assoc.send_c_find(no_level, find_model))
            invalid_find = list(assoc.send_c_find(invalid_date, find_model))
            move = list(assoc.send_c_move(study, "NOWHERE", move_model))
            get = list(assoc.send_c_get(no_level, get_model))
            # Action Type ID 2 is not Request Storage Commitment (1).
            action, _ = assoc.send_n_action(
                commitment_request, 2, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
            )
    lines = emf_lines(stream)

    # Final statuses: the C-FIND without a match succeeds, and each other request fails.
    assert echo.Status == SUCCESS
    assert [status.Status for status, _ in found] == [SUCCESS]
    assert [status.Status for status, _ in no_level_find] == [0xA900]
    assert [status.Status for status, _ in invalid_find] == [0xC000]
    assert [status.Status for status, _ in move] == [0xA801]
    assert [status.Status for status, _ in get] == [0xA900]
    assert action.Status == 0x0123
    totals, *failures = lines
    assert totals["AssociationsAborted"] == [0.0]
    by_status = {
        line["Status"]: {name: line[name] for name in metric_names(line)} for line in failures
    }
    assert by_status == {
        "0x0123": {"CommitmentFailures": [1.0]},
        "0xA801": {"MoveFailures": [1.0]},
        "0xA900": {"FindFailures": [1.0], "GetFailures": [1.0]},
        "0xC000": {"FindFailures": [1.0]},
    }
    for line in failures:
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        assert directive["Dimensions"] == [["Deployment", "Status", "service"]]
