"""DELETE of studies, series and instances over HTTP, with the index, store and audit checked."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from copy import deepcopy
from datetime import UTC, datetime, timedelta
from typing import Any

import pydicom
import pytest
import requests
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydicom.uid import generate_uid

import cirrus.audit
from cirrus.audit import AuditAction, AuditOutcome
from cirrus.audit_table import AuditEntry
from cirrus.config import Settings
from cirrus.dicomweb.app import request_actor
from cirrus.errors import NotFoundError, StoreUnavailableError
from cirrus.index.claims import CLAIM, claim_pk
from cirrus.index.deletion import IndexDeleter
from cirrus.index.models import STUDY, get_record, series_sk, study_pk
from cirrus.ingest import ObjectEvent, ingest_object
from tests.integration.dicomweb_stack import Stack, encode, post_instances, read, running_stack

PATIENT_NAME = "Deletable^Patient"


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


def build_study() -> tuple[str, list[pydicom.Dataset]]:
    """Return a study of two CT instances in one series and one MR instance in another."""
    study = generate_uid()
    ct_series = generate_uid()
    datasets = []
    for name, series in (("CT_small.dcm", ct_series), ("CT_small.dcm", ct_series)):
        ds = read(name)
        ds.SeriesInstanceUID = series
        datasets.append(ds)
    datasets.append(read("MR_small.dcm"))
    for ds in datasets:
        ds.StudyInstanceUID = study
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName = PATIENT_NAME
        ds.PatientID = "DEL-1"
    return study, datasets


def store_study(stack: Stack) -> tuple[str, list[pydicom.Dataset]]:
    study, datasets = build_study()
    response = post_instances(f"{stack.url}/studies", [encode(ds) for ds in datasets])
    assert response.status_code == 200, response.text
    assert stack.index() == len(datasets)
    return study, datasets


def url_of(stack: Stack, ds: pydicom.Dataset, level: str) -> str:
    url = f"{stack.url}/studies/{ds.StudyInstanceUID}"
    if level in ("series", "instance"):
        url += f"/series/{ds.SeriesInstanceUID}"
    if level == "instance":
        url += f"/instances/{ds.SOPInstanceUID}"
    return url


def study_record(stack: Stack, study: str) -> Any:
    return get_record(stack.model, study_pk(stack.site, study), STUDY, consistent_read=True)


def series_record(stack: Stack, study: str, series: str) -> Any:
    pk = study_pk(stack.site, study)
    return get_record(stack.model, pk, series_sk(series), consistent_read=True)


def audit_records(stack: Stack) -> list[AuditEntry]:
    """Return the records of successful deletions in the stack's audit table, oldest first.

    A delete request that fails has a record too, with outcome 4 or 8.
    """
    now = datetime.now(UTC)
    records = stack.services.audit.records_between(
        now - timedelta(hours=1), now + timedelta(minutes=1)
    )
    return [
        record
        for record in records
        if record.action == AuditAction.DELETE and record.outcome == AuditOutcome.SUCCESS
    ]


def deleted_uids(record: AuditEntry) -> list[str]:
    (study_object,) = record.message["ParticipantObjectIdentification"]
    return sorted(
        instance["UID"]
        for element in study_object["ParticipantObjectDescription"]["SOPClass"]
        for instance in element.get("Instance", ())
    )


def qido_study(stack: Stack, study: str) -> dict[str, Any]:
    (match,) = stack.client.search_for_studies(
        search_filters={"StudyInstanceUID": study},
    )
    return match


def test_delete_instance_keeps_counts(stack: Stack) -> None:
    study, (first, second, mr) = store_study(stack)

    response = requests.delete(url_of(stack, first, "instance"), timeout=30)

    assert response.status_code == 204
    assert response.content == b""
    assert first.SOPInstanceUID not in " ".join(stack.instance_keys())
    assert len(stack.instance_keys()) == 2
    series = series_record(stack, study, first.SeriesInstanceUID)
    assert series.instance_count == 1
    record = study_record(stack, study)
    assert record.instance_count == 2
    assert record.series_count == 2
    match = qido_study(stack, study)
    assert match["00201208"]["Value"] == [2]
    assert match["00201206"]["Value"] == [2]
    assert sorted(match["00080061"]["Value"]) == ["CT", "MR"]
    remaining = stack.client.search_for_instances(study_instance_uid=study)
    assert sorted(item["00080018"]["Value"][0] for item in remaining) == sorted(
        [second.SOPInstanceUID, mr.SOPInstanceUID]
    )
    claim = get_record(stack.model, claim_pk(stack.site, first.SOPInstanceUID), CLAIM)
    assert claim is None


def test_delete_series_updates_study(stack: Stack) -> None:
    study, (first, _, mr) = store_study(stack)

    response = requests.delete(url_of(stack, mr, "series"), timeout=30)

    assert response.status_code == 204
    assert series_record(stack, study, mr.SeriesInstanceUID) is None
    record = study_record(stack, study)
    assert record.series_count == 1
    assert record.instance_count == 2
    assert record.modalities == {"CT"}
    assert record.sop_classes == {first.SOPClassUID}
    match = qido_study(stack, study)
    assert match["00080061"]["Value"] == ["CT"]
    series = stack.client.search_for_series(study_instance_uid=study)
    assert [item["0020000E"]["Value"][0] for item in series] == [first.SeriesInstanceUID]


def test_delete_last_instances_removes_study(stack: Stack) -> None:
    study, datasets = store_study(stack)

    for ds in datasets:
        response = requests.delete(url_of(stack, ds, "instance"), timeout=30)
        assert response.status_code == 204, ds.SOPInstanceUID

    assert study_record(stack, study) is None
    for ds in datasets:
        assert series_record(stack, study, ds.SeriesInstanceUID) is None
    assert stack.instance_keys() == []
    assert stack.client.search_for_studies(search_filters={"StudyInstanceUID": study}) == []


def test_delete_study_then_again(stack: Stack) -> None:
    study, datasets = store_study(stack)
    url = url_of(stack, datasets[0], "study")

    first = requests.delete(url, timeout=30)
    second = requests.delete(url, timeout=30)

    assert first.status_code == 204
    assert second.status_code == 404
    assert second.json() == {"error": f"study {study} not found"}
    assert stack.instance_keys() == []
    assert study_record(stack, study) is None
    assert requests.get(f"{url}/metadata", timeout=30).status_code == 404
    for ds in datasets:
        claim = get_record(stack.model, claim_pk(stack.site, ds.SOPInstanceUID), CLAIM)
        assert claim is None, ds.SOPInstanceUID


def test_delete_unknown_resources(stack: Stack) -> None:
    _, (ct, _, _) = store_study(stack)
    study_url = url_of(stack, ct, "study")
    series_url = url_of(stack, ct, "series")

    for url in (
        f"{stack.url}/studies/1.2.3.4",
        f"{study_url}/series/1.2.3.4",
        f"{series_url}/instances/1.2.3.4",
        # A prefix of a stored SOP Instance UID names no instance.
        f"{series_url}/instances/{ct.SOPInstanceUID[:-1]}",
    ):
        response = requests.delete(url, timeout=30)
        assert response.status_code == 404, url
        assert "not found" in response.json()["error"], url
    assert len(stack.instance_keys()) == 3
    assert audit_records(stack) == []


def test_delete_audited_without_names(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    study, datasets = store_study(stack)
    caplog.set_level(logging.DEBUG, logger="cirrus")

    response = requests.delete(
        url_of(stack, datasets[0], "study"), headers={"User-Agent": "audit-test/1"}, timeout=30
    )

    assert response.status_code == 204
    (record,) = audit_records(stack)
    event = record.message["EventIdentification"]
    assert event["EventID"]["csd-code"] == "110105"
    assert event["EventActionCode"] == "D"
    assert event["EventDateTime"].endswith("+00:00")
    assert record.site == stack.site
    assert record.request_id
    assert record.user_agent == "audit-test/1"
    requestor = record.message["ActiveParticipant"][0]
    assert requestor["UserID"] == "127.0.0.1"
    assert requestor["UserIsRequestor"] is True
    assert requestor["NetworkAccessPointID"] == "127.0.0.1"
    (study_object,) = record.message["ParticipantObjectIdentification"]
    assert study_object["ParticipantObjectID"] == study
    assert deleted_uids(record) == sorted(ds.SOPInstanceUID for ds in datasets)
    audit_text = json.dumps(record.to_json())
    assert PATIENT_NAME not in audit_text
    assert "DEL-1" not in audit_text
    for log in caplog.records:
        assert PATIENT_NAME not in log.getMessage()
        assert PATIENT_NAME not in str(log.__dict__)


def test_request_actor_from_authorizer() -> None:
    cognito = APIGatewayProxyEvent(
        {
            "requestContext": {
                "authorizer": {"claims": {"sub": "abc-123", "cognito:username": "radiologist"}},
                "identity": {"sourceIp": "10.0.0.7", "userAgent": "OHIF"},
            }
        }
    )
    iam = APIGatewayProxyEvent(
        {"requestContext": {"identity": {"userArn": "arn:aws:iam::000000000000:user/ops"}}}
    )
    bare = APIGatewayProxyEvent({"requestContext": {"authorizer": None}})

    assert request_actor(cognito).principal == "radiologist"
    assert request_actor(cognito).source_ip == "10.0.0.7"
    assert request_actor(iam).principal == "arn:aws:iam::000000000000:user/ops"
    assert request_actor(bare).principal is None
    assert request_actor(bare).source_ip is None


def test_store_again_after_delete(stack: Stack) -> None:
    _, datasets = store_study(stack)
    assert requests.delete(url_of(stack, datasets[0], "study"), timeout=30).status_code == 204
    moved = deepcopy(datasets[0])
    moved.StudyInstanceUID = generate_uid()

    response = post_instances(f"{stack.url}/studies", [encode(moved)])

    assert response.status_code == 200, response.text
    assert stack.index() == 1
    assert study_record(stack, moved.StudyInstanceUID).instance_count == 1


def test_delete_failure_then_retry(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delete that fails half way gets 503, and sending it again completes it."""
    study, datasets = store_study(stack)
    url = url_of(stack, datasets[0], "study")
    original = IndexDeleter.remove
    calls: list[str] = []

    def fail_second(self: IndexDeleter, instance: Any) -> bool:
        calls.append(instance.key.sop)
        if len(calls) == 2:
            raise StoreUnavailableError("index delete failed: injected")
        return original(self, instance)

    monkeypatch.setattr(IndexDeleter, "remove", fail_second)
    failed = requests.delete(url, timeout=30)
    monkeypatch.setattr(IndexDeleter, "remove", original)

    assert failed.status_code == 503
    assert int(failed.headers["Retry-After"]) > 0
    # The objects of the batch are gone; two records are left for the retry to remove.
    assert stack.instance_keys() == []
    assert study_record(stack, study).instance_count == 2

    retried = requests.delete(url, timeout=30)

    assert retried.status_code == 204
    assert study_record(stack, study) is None
    for ds in datasets:
        assert series_record(stack, study, ds.SeriesInstanceUID) is None
    assert len(audit_records(stack)) == 2


def test_delete_settle_failure_then_retry(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty aggregates left by a failure before they were settled are removed by a retry."""
    study, datasets = store_study(stack)
    url = url_of(stack, datasets[2], "series")

    def fail(self: IndexDeleter, *args: Any) -> None:
        raise StoreUnavailableError("index update failed: injected")

    monkeypatch.setattr(IndexDeleter, "settle", fail)
    assert requests.delete(url, timeout=30).status_code == 503
    monkeypatch.undo()
    assert series_record(stack, study, datasets[2].SeriesInstanceUID).instance_count == 0

    retried = requests.delete(url, timeout=30)

    assert retried.status_code == 204
    assert series_record(stack, study, datasets[2].SeriesInstanceUID) is None
    record = study_record(stack, study)
    assert record.series_count == 1
    assert record.modalities == {"CT"}
    assert requests.delete(url, timeout=30).status_code == 404


def test_delete_audit_failure_deletes_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, datasets = store_study(stack)

    def fail(*args: Any) -> None:
        raise StoreUnavailableError("audit record was not written: InternalServerError")

    monkeypatch.setattr(cirrus.audit, "write_entry", fail)

    response = requests.delete(url_of(stack, datasets[0], "study"), timeout=30)

    assert response.status_code == 503
    assert len(stack.instance_keys()) == 3
    assert study_record(stack, study).instance_count == 3


def test_delete_before_indexing(stack: Stack) -> None:
    """Objects stored but not indexed yet are deleted too, and a late notification fails."""
    study, datasets = build_study()
    response = post_instances(f"{stack.url}/studies", [encode(ds) for ds in datasets])
    assert response.status_code == 200
    pending = stack.instance_keys()

    deleted = requests.delete(url_of(stack, datasets[0], "study"), timeout=30)

    assert deleted.status_code == 204
    assert stack.instance_keys() == []
    (record,) = audit_records(stack)
    assert len(deleted_uids(record)) == len(datasets)
    for key in pending:
        with pytest.raises(NotFoundError):
            ingest_object(stack.store, stack.services.index_writer, ObjectEvent(key))
    assert study_record(stack, study) is None
    moved = deepcopy(datasets[0])
    moved.StudyInstanceUID = generate_uid()
    assert post_instances(f"{stack.url}/studies", [encode(moved)]).status_code == 200


def test_delete_instance_not_indexed(stack: Stack) -> None:
    study, (first, _, _) = store_study(stack)
    extra = deepcopy(first)
    extra.SOPInstanceUID = generate_uid()
    extra.file_meta.MediaStorageSOPInstanceUID = extra.SOPInstanceUID
    assert post_instances(f"{stack.url}/studies", [encode(extra)]).status_code == 200

    response = requests.delete(url_of(stack, extra, "instance"), timeout=30)

    assert response.status_code == 204
    assert extra.SOPInstanceUID not in " ".join(stack.instance_keys())
    assert len(stack.instance_keys()) == 3
    assert study_record(stack, study).instance_count == 3
    assert series_record(stack, study, first.SeriesInstanceUID).instance_count == 2


def test_delete_refreshes_metadata(stack: Stack) -> None:
    study, (first, second, mr) = store_study(stack)
    study_url = url_of(stack, first, "study")
    gzip = {"Accept-Encoding": "gzip"}
    before = requests.get(f"{study_url}/metadata", headers=gzip, timeout=30)
    assert len(before.json()) == 3
    folder = f"sites/{stack.site}/studies/{study}/"
    stored_bundles = [obj.key for obj in stack.store.list_keys(folder) if "/metadata/" in obj.key]
    assert stored_bundles

    assert requests.delete(url_of(stack, first, "instance"), timeout=30).status_code == 204

    assert [obj.key for obj in stack.store.list_keys(folder) if "/metadata/" in obj.key] == []
    after = requests.get(f"{study_url}/metadata", headers=gzip, timeout=30)
    assert after.status_code == 200
    assert sorted(item["00080018"]["Value"][0] for item in after.json()) == sorted(
        [second.SOPInstanceUID, mr.SOPInstanceUID]
    )
    assert after.headers["ETag"] != before.headers["ETag"]


def test_delete_removes_modality_markers(stack: Stack) -> None:
    study, (ct, _, mr) = store_study(stack)
    pk = study_pk(stack.site, study)
    model = stack.model

    def markers() -> list[str]:
        return sorted(r.sk for r in model.query(pk, model.sk.startswith("MODALITY#")))

    assert markers() == ["MODALITY#CT", "MODALITY#MR"]
    assert requests.delete(url_of(stack, mr, "series"), timeout=30).status_code == 204
    assert markers() == ["MODALITY#CT"]
    by_mr = stack.client.search_for_studies(search_filters={"ModalitiesInStudy": "MR"})
    assert by_mr == []
    by_ct = stack.client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})
    assert [item["0020000D"]["Value"][0] for item in by_ct] == [study]

    assert requests.delete(url_of(stack, ct, "study"), timeout=30).status_code == 204
    assert markers() == []
    assert list(model.query(pk)) == []
