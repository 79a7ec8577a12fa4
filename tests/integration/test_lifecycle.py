"""Object tags, tiered retrieves, legal holds and retention, on the DICOMweb handler over moto."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import date

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from cirrus.audit import Actor, AuditAction, AuditOutcome
from cirrus.config import Settings
from cirrus.errors import InvalidRequestError, LegalHoldError, NotFoundError
from cirrus.events.model import INSTANCE_DELETED
from cirrus.index.models import STUDY, get_record, study_pk
from cirrus.lifecycle.holds import LegalHolds
from cirrus.lifecycle.retention import RETENTION_PRINCIPAL, Outcome, Retention
from cirrus.lifecycle.rules import LifecycleRules, parse_rules
from tests.integration.dicomweb_stack import Stack, encode, post_instances, read, running_stack
from tests.integration.test_event_bus import _journal

OPERATOR = Actor(principal="arn:aws:iam::111122223333:role/records-officer")
STORAGE_CLASS_WORDS = ("storage-class", "storageclass", "glacier", "standard_ia")


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    yield from running_stack(settings)


def ct_study(
    study_date: str = "20240105", count: int = 2, name: str = "CT_small.dcm"
) -> list[pydicom.Dataset]:
    study, series = generate_uid(), generate_uid()
    datasets = []
    for _ in range(count):
        ds = read(name)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if study_date:
            ds.StudyDate = study_date
        elif "StudyDate" in ds:
            del ds.StudyDate
        datasets.append(ds)
    return datasets


def store(stack: Stack, *studies: list[pydicom.Dataset]) -> None:
    parts = [encode(ds) for datasets in studies for ds in datasets]
    response = post_instances(f"{stack.url}/studies", parts)
    assert response.status_code == 200, response.text
    stack.index()


def object_key(stack: Stack, ds: pydicom.Dataset) -> str:
    return next(key for key in stack.instance_keys() if key.endswith(f"/{ds.SOPInstanceUID}.dcm"))


def study_exists(stack: Stack, study: str) -> bool:
    record = get_record(stack.model, study_pk(stack.site, study), STUDY, consistent_read=True)
    return record is not None


# --- tags and storage classes ---------------------------------------------------------------


def test_stow_tags_objects(stack: Stack) -> None:
    datasets = ct_study()
    mr = ct_study(name="MR_small.dcm", count=1)
    store(stack, datasets, mr)
    assert stack.store.tags(object_key(stack, datasets[0])) == {
        "site": stack.site,
        "modality": "CT",
    }
    assert stack.store.tags(object_key(stack, mr[0])) == {"site": stack.site, "modality": "MR"}


def test_instance_without_modality_tagged_by_site(stack: Stack) -> None:
    datasets = ct_study(count=1)
    del datasets[0].Modality
    store(stack, datasets)
    assert stack.store.tags(object_key(stack, datasets[0])) == {"site": stack.site}


@pytest.mark.parametrize("storage_class", ["GLACIER_IR", "STANDARD_IA"])
def test_tiered_object_retrieved(stack: Stack, storage_class: str) -> None:
    datasets = ct_study(count=1)
    store(stack, datasets)
    key = object_key(stack, datasets[0])
    original = stack.store.get(key)
    s3 = stack.services.clients.s3
    bucket = stack.services.settings.bucket
    # A lifecycle transition keeps the bytes and changes the class, as this copy in place does.
    s3.copy_object(
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": bucket, "Key": key},
        StorageClass=storage_class,
        MetadataDirective="COPY",
        TaggingDirective="COPY",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=stack.services.settings.kms_key_id,
    )
    assert s3.head_object(Bucket=bucket, Key=key)["StorageClass"] == storage_class

    ds = datasets[0]
    url = f"{stack.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    url += f"/instances/{ds.SOPInstanceUID}"
    response = requests.get(
        url, headers={"Accept": 'multipart/related; type="application/dicom"'}, timeout=30
    )
    assert response.status_code == 200
    assert original in response.content
    metadata = requests.get(f"{url}/metadata", timeout=30)
    assert metadata.status_code == 200
    for reply in (response, metadata):
        headers = json.dumps(dict(reply.headers)).lower()
        for word in STORAGE_CLASS_WORDS:
            assert word not in headers
    assert not any(word in metadata.text.lower() for word in STORAGE_CLASS_WORDS)


# --- legal hold -----------------------------------------------------------------------------


def test_held_study_rejects_delete(stack: Stack) -> None:
    datasets = ct_study()
    store(stack, datasets)
    study = datasets[0].StudyInstanceUID
    series = datasets[0].SeriesInstanceUID
    holds = LegalHolds(stack.store)
    hold = holds.set(stack.site, study, "litigation 2026-17", OPERATOR, stack.services.audit)
    assert hold.held_by == OPERATOR.principal

    for url in (
        f"{stack.url}/studies/{study}",
        f"{stack.url}/studies/{study}/series/{series}",
        f"{stack.url}/studies/{study}/series/{series}/instances/{datasets[0].SOPInstanceUID}",
    ):
        response = requests.delete(url, timeout=30)
        assert response.status_code == 409, url
        assert "legal hold" in response.text
    assert study_exists(stack, study)
    assert len(stack.instance_keys()) == 2
    denied = [
        entry
        for entry in stack.services.audit.records_of_study(study)
        if entry.action == AuditAction.DELETE
    ]
    assert len(denied) == 3
    assert all(entry.outcome != AuditOutcome.SUCCESS for entry in denied)

    # The same instances stored again replace the stored ones, as without a hold.
    store(stack, datasets)
    assert len(stack.instance_keys()) == 2


def test_held_study_rejects_changed_instance(stack: Stack) -> None:
    datasets = ct_study()
    store(stack, datasets)
    study = datasets[0].StudyInstanceUID
    LegalHolds(stack.store).set(stack.site, study, "litigation", OPERATOR, stack.services.audit)
    key = object_key(stack, datasets[0])
    original = stack.store.get(key)

    changed = copy.deepcopy(datasets[0])
    changed.SeriesDescription = "changed after the hold"
    response = post_instances(f"{stack.url}/studies", [encode(changed)])

    assert response.status_code == 409
    (failure,) = response.json()["00081198"]["Value"]
    assert failure["00081197"]["Value"] == [0x0111]
    assert f"study {study} is under legal hold" in response.headers["Warning"]
    assert stack.store.get(key) == original
    # A resend of the stored bytes still succeeds.
    response = post_instances(f"{stack.url}/studies", [encode(datasets[0])])
    assert response.status_code == 200


def test_released_hold_allows_delete(stack: Stack) -> None:
    datasets = ct_study()
    store(stack, datasets)
    study = datasets[0].StudyInstanceUID
    holds = LegalHolds(stack.store)
    audit = stack.services.audit
    holds.set(stack.site, study, "audit request", OPERATOR, audit)
    released = holds.release(stack.site, study, OPERATOR, audit, "case closed")
    assert released.reason == "audit request"
    assert holds.get(stack.site, study) is None

    response = requests.delete(f"{stack.url}/studies/{study}", timeout=30)
    assert response.status_code == 204
    assert not study_exists(stack, study)
    actions = [entry.action for entry in audit.records_of_study(study)]
    assert actions == [AuditAction.STORE, AuditAction.HOLD, AuditAction.RELEASE, AuditAction.DELETE]


def test_hold_audit_records_reason(stack: Stack) -> None:
    study = generate_uid()
    audit = stack.services.audit
    LegalHolds(stack.store).set(stack.site, study, "subpoena 42", OPERATOR, audit)
    (entry,) = list(audit.records_of_study(study))
    identification = entry.message["EventIdentification"]
    assert entry.action == AuditAction.HOLD
    assert entry.outcome == AuditOutcome.SUCCESS
    assert identification["EventActionCode"] == "U"
    assert identification["EventOutcomeDescription"] == "subpoena 42"
    assert entry.message["ActiveParticipant"][0]["UserID"] == OPERATOR.principal


def test_hold_twice_rejected(stack: Stack) -> None:
    study = generate_uid()
    holds = LegalHolds(stack.store)
    holds.set(stack.site, study, "first", OPERATOR, stack.services.audit)
    with pytest.raises(LegalHoldError, match="already"):
        holds.set(stack.site, study, "second", OPERATOR, stack.services.audit)
    assert holds.get(stack.site, study).reason == "first"  # type: ignore[union-attr]


def test_release_without_hold_not_found(stack: Stack) -> None:
    with pytest.raises(NotFoundError, match="no legal hold"):
        LegalHolds(stack.store).release(
            stack.site, generate_uid(), OPERATOR, stack.services.audit, "none"
        )


def test_holds_listed_per_site(stack: Stack) -> None:
    holds = LegalHolds(stack.store)
    studies = sorted(generate_uid() for _ in range(3))
    for study in studies:
        holds.set(stack.site, study, "review", OPERATOR, stack.services.audit)
    assert [hold.study for hold in holds.list(stack.site)] == studies
    assert holds.list("other-site") == []


def test_unreadable_hold_still_holds(stack: Stack) -> None:
    datasets = ct_study(count=1)
    store(stack, datasets)
    study = datasets[0].StudyInstanceUID
    stack.store.put(f"sites/{stack.site}/holds/{study}.json", b"not json")
    response = requests.delete(f"{stack.url}/studies/{study}", timeout=30)
    assert response.status_code == 409
    assert study_exists(stack, study)


# --- retention ------------------------------------------------------------------------------


def retention_of(stack: Stack, rules: LifecycleRules, today: date | None = None) -> Retention:
    services = stack.services
    return Retention(
        rules,
        stack.model,
        stack.store,
        services.audit,
        changes=services.change_feed,
        events=services.events,
        today=today,
    )


def retention_rules(site: str) -> str:
    return json.dumps(
        {
            "rules": [
                {"site": site, "modality": "CT", "retain_years": 10},
                {"site": site, "modality": "MR", "retain_days": 30},
            ]
        }
    )


def test_retention_deletes_expired_studies(stack: Stack) -> None:
    old = ct_study("20100301")
    recent = ct_study("20240105")
    held = ct_study("20090101")
    undated = ct_study("")
    # MR keeps 30 days only, so this study of a year ago is past its retention.
    old_mr = ct_study("20251201", count=1, name="MR_small.dcm")
    store(stack, old, recent, held, undated, old_mr)
    audit = stack.services.audit
    held_uid = held[0].StudyInstanceUID
    LegalHolds(stack.store).set(stack.site, held_uid, "litigation", OPERATOR, audit)
    rules = parse_rules(retention_rules(stack.site))
    retention = retention_of(stack, rules, today=date(2026, 12, 5))

    findings: list = []
    counts = retention.run(stack.site, True, findings.append)
    assert counts == {"would delete": 2, "held": 1, "skipped: no valid StudyDate": 1}
    assert study_exists(stack, old[0].StudyInstanceUID)

    findings.clear()
    counts = retention.run(stack.site, False, findings.append)
    assert counts == {"deleted": 2, "held": 1, "skipped: no valid StudyDate": 1}
    deleted_studies = {f.study: f for f in findings if f.outcome is Outcome.DELETED}
    assert set(deleted_studies) == {old[0].StudyInstanceUID, old_mr[0].StudyInstanceUID}
    deleted = deleted_studies[old[0].StudyInstanceUID]
    assert deleted.instances == 2
    assert not study_exists(stack, old[0].StudyInstanceUID)
    assert study_exists(stack, recent[0].StudyInstanceUID)
    assert study_exists(stack, held_uid)
    assert len(stack.instance_keys()) == 6

    (record,) = [
        entry
        for entry in audit.records_of_study(old[0].StudyInstanceUID)
        if entry.action == AuditAction.DELETE
    ]
    assert record.message["ActiveParticipant"][0]["UserID"] == RETENTION_PRINCIPAL
    assert record.record_id == deleted.audit_record
    assert record.transport == "retention"


def test_retention_writes_changes_and_events(stack: Stack) -> None:
    old = ct_study("20000101", count=3)
    store(stack, old)
    sops = sorted(ds.SOPInstanceUID for ds in old)
    rules = parse_rules(json.dumps({"rules": [{"site": stack.site, "retain_years": 10}]}))
    counts = retention_of(stack, rules).run(stack.site, False, lambda finding: None)
    assert counts == {"deleted": 1}

    reader = stack.services.change_reader
    assert reader is not None
    changes = reader.read(stack.site, 0).changes
    deleted = [change for change in changes if change.action == "deleted"]
    assert sorted(change.sop for change in deleted) == sops
    assert changes[-1].action == "deleted"

    events = _journal(stack.services, len(sops))
    deleted_events = [event for event in events if event["detail-type"] == INSTANCE_DELETED]
    assert sorted(event["detail"]["SOPInstanceUID"] for event in deleted_events) == sops
    assert {event["detail"]["StudyInstanceUID"] for event in deleted_events} == {
        old[0].StudyInstanceUID
    }


def test_retention_keeps_study_of_uncovered_modality(stack: Stack) -> None:
    rules = parse_rules(
        json.dumps({"rules": [{"site": stack.site, "modality": "CT", "retain_days": 1}]})
    )
    mixed = ct_study("20000101", count=1)
    mr = read("MR_small.dcm")
    mr.StudyInstanceUID = mixed[0].StudyInstanceUID
    mr.StudyDate = "20000101"
    store(stack, mixed, [mr])
    retention = retention_of(stack, rules)
    assert retention.run(stack.site, False, lambda finding: None) == {}
    assert study_exists(stack, mixed[0].StudyInstanceUID)


def test_retention_of_other_site_untouched(stack: Stack) -> None:
    old = ct_study("20000101", count=1)
    store(stack, old)
    rules = parse_rules(json.dumps({"rules": [{"site": "north", "retain_days": 1}]}))
    retention = retention_of(stack, rules)
    assert retention.run("north", False, lambda finding: None) == {}
    assert study_exists(stack, old[0].StudyInstanceUID)


def test_lifecycle_configuration_accepted_by_moto(stack: Stack) -> None:
    rules = parse_rules(
        json.dumps(
            {
                "rules": [
                    {
                        "site": "north",
                        "modality": "CT",
                        "transitions": [
                            {"days": 30, "storage_class": "STANDARD_IA"},
                            {"days": 180, "storage_class": "GLACIER_IR"},
                        ],
                        "retain_years": 10,
                    },
                    {
                        "site": "south",
                        "transitions": [{"days": 0, "storage_class": "INTELLIGENT_TIERING"}],
                    },
                ]
            }
        )
    )
    s3 = stack.services.clients.s3
    bucket = stack.services.settings.bucket
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": rules.s3_rules()}
    )
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    by_id = {rule["ID"]: rule for rule in stored}
    assert set(by_id) == {"tier-north-CT", "tier-south-all"}
    north = by_id["tier-north-CT"]
    assert north["Filter"]["And"]["Prefix"] == "sites/north/"
    assert north["Filter"]["And"]["Tags"] == [{"Key": "modality", "Value": "CT"}]
    assert [t["StorageClass"] for t in north["Transitions"]] == ["STANDARD_IA", "GLACIER_IR"]


def test_hold_of_other_site_ignored(stack: Stack) -> None:
    datasets = ct_study(count=1)
    store(stack, datasets)
    study = datasets[0].StudyInstanceUID
    LegalHolds(stack.store).set("other-site", study, "other case", OPERATOR, stack.services.audit)
    response = requests.delete(f"{stack.url}/studies/{study}", timeout=30)
    assert response.status_code == 204
    assert LegalHolds(stack.store).get("other-site", study) is not None


@pytest.mark.parametrize("study", ["../../etc", "1.2.3/4", "", "x" * 65])
def test_hold_of_invalid_uid_rejected(stack: Stack, study: str) -> None:
    with pytest.raises(InvalidRequestError, match="StudyInstanceUID"):
        LegalHolds(stack.store).set(stack.site, study, "reason", OPERATOR, stack.services.audit)
    assert list(stack.store.list_keys(f"sites/{stack.site}/holds/")) == []


@pytest.mark.parametrize("reason", ["", "   ", "x" * 1001])
def test_hold_reason_length_checked(stack: Stack, reason: str) -> None:
    with pytest.raises(InvalidRequestError, match="reason"):
        LegalHolds(stack.store).set(
            stack.site, generate_uid(), reason, OPERATOR, stack.services.audit
        )
