"""Ingest of a queue batch: new instances of one series indexed in one transaction."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from cirrus.archive import archive_instance
from cirrus.config import Settings
from cirrus.index.claims import CLAIM, InstanceClaims, claim_pk
from cirrus.index.models import (
    STUDY,
    get_record,
    instance_sk,
    modality_sk,
    series_sk,
    study_pk,
)
from cirrus.index.writer import IndexWriter
from cirrus.ingest import prepare_object
from cirrus.notifications import object_events
from cirrus.services import Services
from cirrus.storage.keys import InstanceKey
from functions.ingest import handler as ingest_handler
from tests.integration.test_ingest import _instance, _keys, _queued_bodies


@pytest.fixture
def services(settings: Settings) -> Services:
    return Services(settings)


def _archive(services: Services, study: str, series: str, count: int, modality: str = "CT"):
    return [
        archive_instance(services.store, "default", _instance(study, series, modality)).key
        for _ in range(count)
    ]


def _index_queued(services: Services) -> dict:
    return ingest_handler.handle({"Records": _queued_bodies(services)}, None, services)


def _count(services: Services, study: str, sk: str) -> int | None:
    record = get_record(services.index_model, study_pk("default", study), sk, consistent_read=True)
    return None if record is None else record.instance_count


def _no_single_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("an instance was indexed on its own, not in its series' batch")

    monkeypatch.setattr(IndexWriter, "put_instance", fail)


def test_series_batch_in_one_transaction(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, series = generate_uid(), generate_uid()
    _archive(services, study, series, 1)
    assert _index_queued(services) == {"batchItemFailures": []}
    keys = _archive(services, study, series, 10)
    _no_single_writes(monkeypatch)
    assert _index_queued(services) == {"batchItemFailures": []}
    assert _count(services, study, STUDY) == 11
    assert _count(services, study, series_sk(series)) == 11
    assert _count(services, study, modality_sk("CT")) == 11
    model = services.index_model
    for key in keys:
        instance = get_record(model, study_pk("default", study), instance_sk(series, key.sop))
        assert instance is not None
        assert instance.object_key == key.object_key
        claim = get_record(model, claim_pk("default", key.sop), CLAIM)
        assert claim is not None
        assert claim.object_key == key.object_key


def test_redelivered_batch_counts_once(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    _archive(services, study, series, 1)
    _index_queued(services)
    _archive(services, study, series, 5)
    records = _queued_bodies(services)
    event = {"Records": records}
    assert ingest_handler.handle(event, None, services) == {"batchItemFailures": []}
    assert ingest_handler.handle(event, None, services) == {"batchItemFailures": []}
    assert _count(services, study, STUDY) == 6
    assert _count(services, study, series_sk(series)) == 6


def test_new_modality_indexed_one_by_one(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    _archive(services, study, series, 1, modality="CT")
    _index_queued(services)
    _archive(services, study, series, 2, modality="CT")
    _archive(services, study, series, 1, modality="PT")
    assert _index_queued(services) == {"batchItemFailures": []}
    study_record = get_record(services.index_model, study_pk("default", study), STUDY)
    assert study_record is not None
    assert study_record.instance_count == 4
    assert study_record.modalities == {"CT", "PT"}
    assert _count(services, study, modality_sk("PT")) == 4
    assert _count(services, study, modality_sk("CT")) == 4


def test_bad_object_fails_alone_in_batch(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    _archive(services, study, series, 1)
    _index_queued(services)
    _archive(services, study, series, 3)
    bad_key = f"sites/default/studies/{study}/series/{series}/instances/1.2.3.dcm"
    services.store.put(bad_key, _instance(study, series))  # its SOP Instance UID is not 1.2.3
    records = _queued_bodies(services)
    result = ingest_handler.handle({"Records": records}, None, services)
    failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
    assert failed == {r["messageId"] for r in records if _keys(r) == [bad_key]}
    assert _count(services, study, series_sk(series)) == 4


def test_claim_conflict_writes_nothing(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    _archive(services, study, series, 1)
    _index_queued(services)
    keys = _archive(services, study, series, 3)
    prepared = [
        prepare_object(services.store, event)
        for record in _queued_bodies(services)
        for event in object_events(record["body"])
    ]
    claimed = keys[1]
    other = InstanceKey(claimed.site, claimed.study, generate_uid(), claimed.sop)
    InstanceClaims(services.index_model).claim(other)
    written = services.index_writer.put_new_instances(
        [(item.obj, item.metadata) for item in prepared], "v1"
    )
    assert written is False
    assert _count(services, study, series_sk(series)) == 1
    for key in keys:
        instance = get_record(
            services.index_model, study_pk("default", study), instance_sk(series, key.sop)
        )
        assert instance is None


def test_batch_needs_indexed_series(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    _archive(services, study, series, 2)
    prepared = [
        prepare_object(services.store, event)
        for record in _queued_bodies(services)
        for event in object_events(record["body"])
    ]
    entries = [(item.obj, item.metadata) for item in prepared]
    assert services.index_writer.put_new_instances(entries, "v1") is False
    assert _count(services, study, STUDY) is None


def test_batch_of_two_series_refused(services: Services) -> None:
    study = generate_uid()
    _archive(services, study, generate_uid(), 1)
    _archive(services, study, generate_uid(), 1)
    prepared = [
        prepare_object(services.store, event)
        for record in _queued_bodies(services)
        for event in object_events(record["body"])
    ]
    with pytest.raises(ValueError, match="one series"):
        services.index_writer.put_new_instances(
            [(item.obj, item.metadata) for item in prepared], "v1"
        )


@pytest.mark.parametrize("body", ["[]", "null", '{"Records": 3}', "not json"])
def test_malformed_message_fails_alone(services: Services, body: str) -> None:
    study, series = generate_uid(), generate_uid()
    _archive(services, study, series, 1)
    _index_queued(services)
    _archive(services, study, series, 2)
    records = [*_queued_bodies(services), {"messageId": "bad", "receiptHandle": "x", "body": body}]
    result = ingest_handler.handle({"Records": records}, None, services)
    assert result == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert _count(services, study, series_sk(series)) == 3
