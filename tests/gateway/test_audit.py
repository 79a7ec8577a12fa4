"""Audit records of the gateway, written for dcmtk's storescu, findscu, movescu, getscu and echoscu.

Each test reads the records of the suite's audit table back through the same Queries as
``cirrus audit``, after waiting for the gateway's audit thread to write what it queued.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

import cirrus.audit
from cirrus.audit_table import AuditEntry
from cirrus.config import DEFAULT_AE_TITLE, Settings
from cirrus.errors import StoreUnavailableError
from cirrus.gateway.aeconfig import AEConfig, Destination, SiteAEs
from cirrus.gateway.metrics import GatewayMetrics
from cirrus.gateway.server import Gateway
from cirrus.local.moto_process import LOOPBACK
from cirrus.services import Services
from cirrus.storage.objects import ObjectStore
from tests.gateway.retrieves import Archived, archive, renamed, running_storescp
from tests.gateway.scu import (
    CT_SMALL,
    SITE,
    dataset_bytes,
    run_dcmtk,
    send_file_as_is,
    storescu,
    wait_until,
    write_part10,
)
from tests.gateway.scu import associate as associate_scu

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PATIENT_NAME = "Audited^Secret"
EVERYTHING = frozenset({"store", "query", "retrieve"})


@pytest.fixture(scope="module")
def storescp_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with running_storescp(tmp_path_factory.mktemp("storescp"), "STORESCP") as storescp:
        yield storescp.port


@pytest.fixture(scope="module")
def metrics_stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture(scope="module")
def gateway(
    gateway_settings: Settings,
    archive: ObjectStore,
    storescp_port: int,
    metrics_stream: io.StringIO,
) -> Iterator[Gateway]:
    config = AEConfig(
        sites={
            SITE: SiteAEs(
                callers={
                    "AUDITSCU": EVERYTHING,
                    "FINDSCU": EVERYTHING,
                    "TESTSCU": EVERYTHING,
                    "STOREONLY": frozenset({"store"}),
                    "QUERYONLY": frozenset({"query"}),
                },
                destinations={"STORESCP": Destination(host=LOOPBACK, port=storescp_port)},
            )
        }
    )
    services = Services(gateway_settings)
    services.store = archive
    metrics = GatewayMetrics(interval_seconds=3600, stream=metrics_stream)
    with Gateway.start(services, config, LOOPBACK, 0, metrics=metrics) as running:
        yield running


@pytest.fixture(scope="module")
def study(gateway: Gateway) -> list[Archived]:
    """An indexed study of two CT instances in one series, for the retrieve tests."""
    services = gateway.ae.context.services
    ct = pydicom.dcmread(CT_SMALL)
    ct.PatientName = PATIENT_NAME
    uid, series = generate_uid(), generate_uid()
    return [archive(services, SITE, renamed(ct, "AUDIT-1", uid, series)) for _ in range(2)]


def written(gateway: Gateway, since: datetime, ae_title: str) -> list[AuditEntry]:
    """Return the records whose requestor is ``ae_title``, written since ``since``.

    A peer may exit before the gateway has handled the end of its association, which queues
    the association's records, so the queue is flushed once no association is left.
    """
    assert wait_until(lambda: not gateway.active_associations(), timeout=30)
    assert gateway.ae.context.audit.flush(30), "the audit thread did not write its queue"
    log = gateway.ae.context.services.audit
    until = datetime.now(UTC) + timedelta(minutes=1)
    return [record for record in log.records_between(since, until) if user(record) == ae_title]


def participants(record: AuditEntry) -> list[dict[str, Any]]:
    return list(record.message["ActiveParticipant"])


def user(record: AuditEntry) -> str:
    return str(participants(record)[0]["UserID"])


def role(participant: dict[str, Any]) -> str | None:
    codes = participant.get("RoleIDCode") or []
    return str(codes[0]["csd-code"]) if codes else None


def sop_class_elements(record: AuditEntry, study: str) -> list[dict[str, Any]]:
    (study_object,) = [
        item
        for item in record.message.get("ParticipantObjectIdentification", ())
        if item["ParticipantObjectID"] == study
    ]
    return list(study_object["ParticipantObjectDescription"]["SOPClass"])


def instance_uids(record: AuditEntry, study: str) -> set[str]:
    return {
        instance["UID"]
        for element in sop_class_elements(record, study)
        for instance in element.get("Instance", ())
    }


def write_ct(folder: Path, study: str) -> pydicom.Dataset:
    ds = pydicom.dcmread(CT_SMALL)
    ds.PatientName = PATIENT_NAME
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return ds


def test_store_one_record_per_study(gateway: Gateway, tmp_path: Path) -> None:
    since = datetime.now(UTC)
    first_study, second_study = generate_uid(), generate_uid()
    sent = [write_ct(tmp_path, first_study), write_ct(tmp_path, first_study)]
    other = write_ct(tmp_path, second_study)

    storescu(gateway.port, *sorted(tmp_path.glob("*.dcm")), options=("-aet", "AUDITSCU"))

    records = written(gateway, since, "AUDITSCU")
    by_study = {record.studies: record for record in records}
    assert set(by_study) == {(first_study,), (second_study,)}
    record = by_study[(first_study,)]
    assert record.action == "store"
    assert record.outcome == 0
    assert record.site == SITE
    assert record.transport == "DIMSE"
    assert record.request_id.startswith("assoc-")
    # One association: both records carry its id.
    assert by_study[(second_study,)].request_id == record.request_id
    event = record.message["EventIdentification"]
    assert event["EventID"]["csd-code"] == "110104"
    assert event["EventActionCode"] == "C"
    requestor, cirrus = participants(record)
    assert requestor["UserID"] == "AUDITSCU"
    assert requestor["NetworkAccessPointID"] == LOOPBACK
    assert role(requestor) == "110153"
    assert cirrus["UserID"] == DEFAULT_AE_TITLE
    assert role(cirrus) == "110152"
    (element,) = sop_class_elements(record, first_study)
    assert element["UID"] == CT_IMAGE_STORAGE
    assert element["NumberOfInstances"] == 2
    assert instance_uids(record, first_study) == {ds.SOPInstanceUID for ds in sent}
    assert instance_uids(by_study[(second_study,)], second_study) == {other.SOPInstanceUID}
    assert record.message["AuditSourceIdentification"]["AuditEnterpriseSiteID"] == SITE
    assert PATIENT_NAME not in json.dumps([item.to_json() for item in records])


def test_store_failure_with_study(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance whose data set names another SOP Instance UID fails with 0xA900."""
    since = datetime.now(UTC)
    uid = generate_uid()
    ds = write_ct(tmp_path, uid)
    part10 = (tmp_path / f"{ds.SOPInstanceUID}.dcm").read_bytes()
    mismatched = write_part10(
        tmp_path / "mismatched.dcm",
        CT_IMAGE_STORAGE,
        generate_uid(),
        str(ds.file_meta.TransferSyntaxUID),
        dataset_bytes(part10),
    )

    with associate_scu(
        gateway.port, [(CT_IMAGE_STORAGE, str(ds.file_meta.TransferSyntaxUID))]
    ) as assoc:
        status = send_file_as_is(monkeypatch, assoc, mismatched)
    assert status.Status == 0xA900

    (record,) = written(gateway, since, "TESTSCU")
    assert record.studies == (uid,)
    assert record.outcome == 4
    description = record.message["EventIdentification"]["EventOutcomeDescription"]
    assert "1 of 1 instances failed with status 0xA900 (1)" in description
    assert instance_uids(record, uid) == set()


def test_store_failure_of_archive(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    since = datetime.now(UTC)
    uid = generate_uid()
    write_ct(tmp_path, uid)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailableError("S3 request failed with InternalError")

    monkeypatch.setattr("cirrus.gateway.store.archive_file", fail)
    result = run_dcmtk(
        "storescu",
        "-aet",
        "AUDITSCU",
        "-aec",
        DEFAULT_AE_TITLE,
        LOOPBACK,
        str(gateway.port),
        *map(str, tmp_path.glob("*.dcm")),
    )
    monkeypatch.undo()
    # storescu exits with an error when a C-STORE fails.
    assert result.returncode != 0

    (record,) = written(gateway, since, "AUDITSCU")
    assert record.studies == (uid,)
    assert record.outcome == 8


def test_store_not_authorized(gateway: Gateway, tmp_path: Path) -> None:
    """A caller without the store permission is refused each C-STORE, with 0x0124."""
    since = datetime.now(UTC)
    write_ct(tmp_path, generate_uid())

    run_dcmtk(
        "storescu",
        "-aet",
        "QUERYONLY",
        "-aec",
        DEFAULT_AE_TITLE,
        LOOPBACK,
        str(gateway.port),
        *map(str, tmp_path.glob("*.dcm")),
    )

    (record,) = written(gateway, since, "QUERYONLY")
    assert record.action == "store"
    assert record.outcome == 4
    assert record.site == SITE
    # The gateway reads no data set that the caller may not store, so its study is unknown.
    assert record.studies == ()
    description = record.message["EventIdentification"]["EventOutcomeDescription"]
    assert "0x0124 (1)" in description


def test_find_records_keys_not_values(gateway: Gateway, tmp_path: Path) -> None:
    since = datetime.now(UTC)

    result = run_dcmtk(
        "findscu",
        "-S",
        "-aet",
        "FINDSCU",
        "-aec",
        DEFAULT_AE_TITLE,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"PatientName={PATIENT_NAME}*",
        "-k",
        "StudyInstanceUID",
        LOOPBACK,
        str(gateway.port),
    )
    assert result.returncode == 0, result.stdout + result.stderr

    (record,) = written(gateway, since, "FINDSCU")
    assert record.action == "query"
    assert record.outcome == 0
    assert record.site == SITE
    assert record.studies == ()
    event = record.message["EventIdentification"]
    assert event["EventID"]["csd-code"] == "110112"
    assert event["EventActionCode"] == "E"
    requestor, cirrus = participants(record)
    assert role(requestor) == "110153"
    assert role(cirrus) == "110152"
    assert cirrus["UserID"] == DEFAULT_AE_TITLE
    assert cirrus_keys(record) == ["PatientName", "StudyInstanceUID"]
    (query_object,) = record.message["ParticipantObjectIdentification"]
    assert query_object["ParticipantObjectID"] == "1.2.840.10008.5.1.4.1.2.2.1"
    assert "Audited" not in json.dumps(record.to_json())


def cirrus_keys(record: AuditEntry) -> list[str]:
    return cirrus.audit.query_keys_of(record.message)


def test_find_not_authorized(gateway: Gateway) -> None:
    since = datetime.now(UTC)

    run_dcmtk(
        "findscu",
        "-S",
        "-aet",
        "STOREONLY",
        "-aec",
        DEFAULT_AE_TITLE,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientID=AUDIT-1",
        LOOPBACK,
        str(gateway.port),
    )

    (record,) = written(gateway, since, "STOREONLY")
    assert record.action == "query"
    assert record.outcome == 4
    event = record.message["EventIdentification"]
    assert event["EventOutcomeDescription"] == "this calling AE title may not query"
    assert cirrus_keys(record) == ["PatientID"]
    assert "AUDIT-1" not in json.dumps(record.to_json())


def test_move_records_instances_sent(gateway: Gateway, study: list[Archived]) -> None:
    since = datetime.now(UTC)
    uid = study[0].study

    result = run_dcmtk(
        "movescu",
        "-S",
        "-aet",
        "AUDITSCU",
        "-aec",
        DEFAULT_AE_TITLE,
        "-aem",
        "STORESCP",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={uid}",
        LOOPBACK,
        str(gateway.port),
    )
    assert result.returncode == 0, result.stdout + result.stderr

    (record,) = written(gateway, since, "AUDITSCU")
    assert record.action == "retrieve"
    assert record.outcome == 0
    assert record.studies == (uid,)
    assert record.message["EventIdentification"]["EventActionCode"] == "R"
    requestor, cirrus, destination = participants(record)
    assert role(requestor) is None
    assert role(cirrus) == "110153"
    assert destination["UserID"] == "STORESCP"
    assert role(destination) == "110152"
    assert instance_uids(record, uid) == {item.sop for item in study}
    (element,) = sop_class_elements(record, uid)
    assert element["NumberOfInstances"] == 2


def test_get_records_instances_sent(
    gateway: Gateway, study: list[Archived], tmp_path: Path
) -> None:
    since = datetime.now(UTC)
    uid = study[0].study

    result = run_dcmtk(
        "getscu",
        "-S",
        "-aet",
        "AUDITSCU",
        "-aec",
        DEFAULT_AE_TITLE,
        "-od",
        str(tmp_path),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={uid}",
        LOOPBACK,
        str(gateway.port),
    )
    assert result.returncode == 0, result.stdout + result.stderr

    (record,) = written(gateway, since, "AUDITSCU")
    assert record.action == "retrieve"
    assert record.outcome == 0
    requestor, cirrus = participants(record)
    assert role(requestor) == "110152"
    assert role(cirrus) == "110153"
    assert instance_uids(record, uid) == {item.sop for item in study}


def test_move_to_unknown_destination(gateway: Gateway, study: list[Archived]) -> None:
    since = datetime.now(UTC)

    run_dcmtk(
        "movescu",
        "-S",
        "-aet",
        "AUDITSCU",
        "-aec",
        DEFAULT_AE_TITLE,
        "-aem",
        "NOWHERE",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study[0].study}",
        LOOPBACK,
        str(gateway.port),
    )

    (record,) = written(gateway, since, "AUDITSCU")
    assert record.outcome == 4
    assert record.studies == ()
    assert "0xA801" in record.message["EventIdentification"]["EventOutcomeDescription"]


def test_rejected_caller(gateway: Gateway) -> None:
    since = datetime.now(UTC)

    result = run_dcmtk(
        "echoscu", "-aet", "STRANGER", "-aec", DEFAULT_AE_TITLE, LOOPBACK, str(gateway.port)
    )

    assert result.returncode != 0
    (record,) = written(gateway, since, "STRANGER")
    assert record.outcome == 4
    assert record.site is None
    requestor = participants(record)[0]
    assert requestor["NetworkAccessPointID"] == LOOPBACK
    description = record.message["EventIdentification"]["EventOutcomeDescription"]
    assert description.startswith("association rejected: ")


def test_audit_failure_keeps_object(
    gateway: Gateway,
    archive: ObjectStore,
    metrics_stream: io.StringIO,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ds = write_ct(tmp_path, generate_uid())

    def fail(*args: Any) -> None:
        raise StoreUnavailableError("audit record was not written: InternalServerError")

    monkeypatch.setattr(cirrus.audit, "write_entry", fail)
    storescu(gateway.port, *tmp_path.glob("*.dcm"), options=("-aet", "AUDITSCU"))
    assert gateway.ae.context.audit.flush(30)
    monkeypatch.undo()

    key = f"sites/{SITE}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/"
    assert [obj.key for obj in archive.list_keys(key) if ds.SOPInstanceUID in obj.key]
    failures = [log for log in caplog.records if log.getMessage().startswith("audit record not")]
    assert failures
    for log in failures:
        assert PATIENT_NAME not in str(log.__dict__)
        assert ds.StudyInstanceUID not in str(log.__dict__)
    assert gateway.ae.metrics is not None
    gateway.ae.metrics.flush()
    lines = [json.loads(line) for line in metrics_stream.getvalue().splitlines()]
    assert sum(line.get("AuditFailures", [0])[0] for line in lines) >= 1


def test_shutdown_writes_queued_records(
    gateway_settings: Settings, archive: ObjectStore, tmp_path: Path
) -> None:
    config = AEConfig(sites={SITE: SiteAEs(callers={"AUDITSCU": EVERYTHING})})
    services = Services(gateway_settings)
    services.store = archive
    uid = generate_uid()
    write_ct(tmp_path, uid)
    with Gateway.start(services, config, LOOPBACK, 0) as other:
        storescu(other.port, *tmp_path.glob("*.dcm"), options=("-aet", "AUDITSCU"))

    (record,) = services.audit.records_of_study(uid)
    assert record.action == "store"


def test_rejected_caller_storing(gateway: Gateway, tmp_path: Path) -> None:
    since = datetime.now(UTC)
    write_ct(tmp_path, generate_uid())

    result = run_dcmtk(
        "storescu",
        "-aet",
        "STRANGER2",
        "-aec",
        DEFAULT_AE_TITLE,
        LOOPBACK,
        str(gateway.port),
        *map(str, tmp_path.glob("*.dcm")),
    )

    assert result.returncode != 0
    (record,) = written(gateway, since, "STRANGER2")
    assert record.action == "store"
    assert record.outcome == 4
    assert record.studies == ()
