"""Ingest under duplicate, reordered and interrupted delivery of S3 notifications.

Each test builds a reference index by one in-order delivery, and a second index from the
same objects (same bucket, a table of its own) under the fault, then compares full scans of
both tables. Only ``metadata_version``, a fresh random token per write, is left out.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import UID, generate_uid

from cirrus.archive import archive_instance
from cirrus.config import ResourceNames, Settings
from cirrus.index.models import STUDY, get_record, series_sk, study_pk
from cirrus.local.moto_process import MotoProcess
from cirrus.local.resources import create_resources
from cirrus.services import Services
from functions.ingest import handler as ingest_handler
from tests.fault_proxy import FaultProxy, dynamodb
from tests.integration.index_snapshot import (
    index_snapshot,
    notifications_of,
    queue_url,
    queued_messages,
    second_index,
    wait_for,
)
from tests.integration.test_ingest import _instance, _keys, _queued_bodies
from tests.pydicom_files import bundled

pytestmark = pytest.mark.timeout(180)

BATCH = 10


@pytest.fixture
def services(settings: Settings) -> Services:
    return Services(settings)


def _deliver(services: Services, records: list[dict[str, Any]]) -> None:
    """Hand ``records`` to the ingest handler in queue batches, in the order given."""
    for start in range(0, len(records), BATCH):
        batch = records[start : start + BATCH]
        assert ingest_handler.handle({"Records": batch}, None, services) == {
            "batchItemFailures": []
        }


def _sequenced(records: list[dict[str, Any]], first: int) -> list[dict[str, Any]]:
    """Give each notification an S3 sequencer, growing in the order of ``records``.

    moto's notifications have none; S3's let ingest skip a notification older than the
    object version that it indexed already.
    """
    sequenced = []
    for number, record in enumerate(records, start=first):
        body = json.loads(record["body"])
        body["Records"][0]["s3"]["object"]["sequencer"] = f"{number:016X}"
        sequenced.append({**record, "body": json.dumps(body)})
    return sequenced


def _with_sop(study: str, series: str, sop: str, description: str) -> bytes:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
    ds.ImageComments = description
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _archive_studies(services: Services) -> list[str]:
    """Archive two studies: one with two CT series and a PT series, one with a CT series."""
    first, second = generate_uid(), generate_uid()
    series = [(first, "CT", 4), (first, "CT", 3), (first, "PT", 2), (second, "CT", 3)]
    for study, modality, count in series:
        uid = generate_uid()
        for _ in range(count):
            archive_instance(services.store, "default", _instance(study, uid, modality))
    return [first, second]


@pytest.fixture(scope="module")
def in_order(moto_server: MotoProcess) -> Services:
    """A deployment of its own, indexed once for every test of delivery order."""
    names = ResourceNames(deployment=f"t{uuid.uuid4().hex[:12]}")
    settings = Settings.for_names(names, endpoint_url=moto_server.endpoint_url)
    return Services(create_resources(settings))


@pytest.fixture(scope="module")
def delivered(
    in_order: Services,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """Index the archived studies in order, with one replaced instance; return the messages.

    Returns the notifications of the first writes, the notification of the replacement, and
    the study UIDs.
    """
    services = in_order
    studies = _archive_studies(services)
    study, series, sop = studies[0], generate_uid(), generate_uid()
    services.store.put(
        f"sites/default/studies/{study}/series/{series}/instances/{sop}.dcm",
        _with_sop(study, series, sop, "first version"),
    )
    records = _sequenced(_queued_bodies(services), first=1)
    _drain(services)
    _deliver(services, records)
    services.store.put(
        f"sites/default/studies/{study}/series/{series}/instances/{sop}.dcm",
        _with_sop(study, series, sop, "second version"),
    )
    (replacement,) = _sequenced(_queued_bodies(services), first=len(records) + 1)
    _drain(services)
    _deliver(services, [replacement])
    return records, replacement, studies


def _drain(services: Services) -> None:
    """Delete every message of the ingest queue; the test delivers them itself."""
    sqs = services.clients.sqs
    url = queue_url(services)
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _orders(
    records: list[dict[str, Any]], replacement: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    shuffled = list(records)
    random.Random(7).shuffle(shuffled)
    twice = [record for record in records for _ in range(2)]
    random.Random(11).shuffle(twice)
    return {
        # The replacement first: every older notification of its key then arrives late.
        "reversed": [replacement, *reversed(records)],
        "shuffled": [*shuffled[:5], replacement, *shuffled[5:]],
        # Each message twice, in one batch or in two, and the replacement in between.
        "duplicated": [*twice[:9], replacement, *twice[9:], replacement],
    }


@pytest.mark.parametrize("order", ["reversed", "shuffled", "duplicated"])
def test_delivery_order_gives_same_index(
    in_order: Services,
    moto_server: MotoProcess,
    delivered: tuple[list[dict[str, Any]], dict[str, Any], list[str]],
    order: str,
) -> None:
    records, replacement, studies = delivered
    other = second_index(in_order.settings, moto_server.endpoint_url)
    _deliver(other, _orders(records, replacement)[order])
    expected = index_snapshot(in_order.index_model)
    # 13 instances with their 13 claims, 5 series, 2 studies and 3 modality markers.
    assert len(expected) == 36
    assert index_snapshot(other.index_model) == expected
    study = get_record(other.index_model, study_pk("default", studies[0]), STUDY)
    assert study is not None
    assert study.instance_count == 10
    assert study.series_count == 4
    (key,) = _keys(replacement)
    obj = json.loads(replacement["body"])["Records"][0]["s3"]["object"]
    replaced = [v for v in expected.values() if v["level"] == "INSTANCE" and v["object_key"] == key]
    assert [(r["etag"], r["sequencer"]) for r in replaced] == [(obj["eTag"], obj["sequencer"])]


def _worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.ingest_worker"],
            env=env,
            stdout=stderr,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize("write_lands", [True, False], ids=["write-lands", "write-lost"])
def test_worker_killed_mid_batch(
    services: Services,
    moto_server: MotoProcess,
    proxy: FaultProxy,
    tmp_path: Path,
    write_lands: bool,
) -> None:
    sqs = services.clients.sqs
    # Messages of the killed worker become visible again after 1 s instead of 120 s.
    sqs.set_queue_attributes(QueueUrl=queue_url(services), Attributes={"VisibilityTimeout": "1"})
    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    for uid in series:
        for _ in range(4):
            archive_instance(services.store, "default", _instance(study, uid))
    records = notifications_of(services, f"sites/default/studies/{study}/")
    assert len(records) == 8
    proxied = dataclasses.replace(services.settings, endpoint_url=proxy.endpoint_url)
    # The first instance of each new series is indexed alone and the other three of its
    # batch together, so the second transaction writes three instances of the first series.
    hold = proxy.hold(dynamodb("TransactWriteItems"), nth=2)
    log = tmp_path / "worker.log"
    worker = _worker(proxied, log)
    try:
        assert hold.reached.wait(60), log.read_text()
        record = get_record(services.index_model, study_pk("default", study), STUDY)
        assert record is not None
        assert record.instance_count == 1
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        hold.release(forward=write_lands)
        assert hold.finished.wait(30)
        proxy.clear()
        worker = _worker(proxied, log)
        wait_for(lambda: queued_messages(services) == 0, timeout=90)
    finally:
        worker.kill()
        worker.wait(10)
    assert queued_messages(services, dead_letter=True) == 0

    reference = second_index(services.settings, moto_server.endpoint_url)
    _deliver(reference, records)
    assert index_snapshot(services.index_model) == index_snapshot(reference.index_model)
    model = services.index_model
    study_record = get_record(model, study_pk("default", study), STUDY)
    assert study_record is not None
    assert study_record.instance_count == 8
    for uid in series:
        series_record = get_record(model, study_pk("default", study), series_sk(uid))
        assert series_record is not None
        assert series_record.instance_count == 4
