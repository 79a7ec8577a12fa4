"""Series and study metadata bundles on moto over HTTP: exactness, ETags and gzip.

Instances are written to S3 and indexed by calling ingest directly; DICOMweb runs behind the
local HTTP adapter, so responses are checked as a client receives them.
"""

from __future__ import annotations

import functools
import gzip
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pydicom
import pytest
import requests
from pynamodb.transactions import TransactWrite

from cirrus.config import Settings
from cirrus.dicomweb.app import DicomwebServices, _accepts_gzip
from cirrus.dicomweb.bundle_refresh import BundleRefresher, RefreshRequest
from cirrus.dicomweb.bundles import (
    MetadataBundles,
    base_urls_key,
    bundle_key,
    compress_bundle,
    read_tag,
)
from cirrus.index.models import instance_sk, series_sk, study_pk
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.http import HttpServer, serve_http
from cirrus.services import Services
from cirrus.storage.keys import InstanceKey
from functions.dicomweb.handler import handle
from functions.ingest import handler as ingest_handler
from tests.integration.dicomweb_stack import start_stack
from tests.pydicom_files import bundled

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.1"
OTHER_SERIES = "1.2.826.0.1.3680043.8.498.1.2"
SOP_UID = "00080018"
PIXEL_DATA = "7FE00010"


@dataclass
class Stack:
    services: Services
    server: HttpServer
    bundles: MetadataBundles

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/dicomweb"

    @property
    def site(self) -> str:
        return self.services.settings.default_site

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/dicomweb"

    def store(
        self,
        sop: str,
        series: str = SERIES,
        description: str = "first",
        refresher: BundleRefresher | None = None,
    ) -> None:
        """Write one CT instance to S3 and index it, as the ingest queue would."""
        key = InstanceKey(self.site, STUDY, series, sop)
        stored = self.services.store.put(key.object_key, _instance(series, sop, description))
        event = ObjectEvent(key.object_key, size=stored.size, etag=stored.etag)
        ingest_object(self.services.store, self.services.index_writer, event, refresher)

    def queue_url(self) -> str:
        sqs = self.services.clients.sqs
        return str(sqs.get_queue_url(QueueName=self.services.settings.ingest_queue)["QueueUrl"])

    def drain_queue(self) -> list[dict[str, Any]]:
        """Receive and delete every visible message of the ingest queue."""
        sqs = self.services.clients.sqs
        url = self.queue_url()
        messages: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not batch:
                return messages
            for message in batch:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            messages.extend(batch)

    def refresher(self) -> BundleRefresher:
        sqs = self.services.clients.sqs
        return BundleRefresher(self.bundles, sqs, self.queue_url(), delay_seconds=0)

    def stored_sops(self, series: str | None) -> list[str]:
        stored = self.services.store.get(bundle_key(self.site, STUDY, series, self.base_url))
        assert read_tag(stored) == self.bundles.record_tag(self.site, STUDY, series)
        return [item[SOP_UID]["Value"][0] for item in json.loads(gzip.decompress(stored))]

    def remove(self, sop: str, series: str = SERIES) -> None:
        """Remove an instance record as a delete does: one transaction with the counters."""
        model = self.services.index_model
        pk = study_pk(self.site, STUDY)
        connection = self.services.index_writer._connection
        with TransactWrite(connection=connection) as transaction:
            transaction.delete(model(pk, instance_sk(series, sop)))
            for sort_key in (series_sk(series), "STUDY"):
                transaction.update(model(pk, sort_key), actions=[model.instance_count.add(-1)])

    def series_sops(self, headers: dict[str, str] | None = None) -> list[str]:
        response = requests.get(
            f"{self.url}/studies/{STUDY}/series/{SERIES}/metadata", headers=headers, timeout=30
        )
        assert response.status_code == 200, response.text
        return [item[SOP_UID]["Value"][0] for item in response.json()]


def _instance(series: str, sop: str, description: str) -> bytes:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SeriesDescription = description
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _sop(number: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.1.1.{number}"


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    services = Services(settings)
    bundles = MetadataBundles(services.index_model, services.store)
    view = DicomwebServices(
        store=services.store,
        reader=services.index_reader,
        qido=None,
        site=settings.default_site,
        bundles=bundles,
    )
    server = serve_http(functools.partial(handle, services=view), "127.0.0.1", 0)
    yield Stack(services, server, bundles)
    server.shutdown()


def test_bundle_stored_gzip_with_kms(stack: Stack) -> None:
    stack.store(_sop(1))
    stack.store(_sop(2))
    assert stack.series_sops() == [_sop(1), _sop(2)]
    s3 = stack.services.clients.s3
    bucket = stack.services.settings.bucket
    keys = [
        item["Key"]
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=f"sites/{stack.site}/")["Contents"]
        if item["Key"].endswith(".json.gz")
    ]
    assert len(keys) == 1
    assert keys[0].startswith(f"sites/{stack.site}/studies/{STUDY}/series/{SERIES}/metadata/")
    head = s3.head_object(Bucket=bucket, Key=keys[0])
    assert head["ServerSideEncryption"] == "aws:kms"
    stored = stack.services.store.get(keys[0])
    assert read_tag(stored) == stack.bundles.record_tag(stack.site, STUDY, SERIES)
    assert len(gzip.decompress(stored)) > len(stored)
    base_urls = json.loads(stack.services.store.get(base_urls_key(stack.site)))
    assert base_urls == [stack.base_url]


def test_new_instance_makes_bundle_stale(stack: Stack) -> None:
    stack.store(_sop(1))
    assert stack.series_sops() == [_sop(1)]
    stack.store(_sop(2))
    assert stack.series_sops() == [_sop(1), _sop(2)]
    # A store in another series changes the study but not this series.
    tag = stack.bundles.record_tag(stack.site, STUDY, SERIES)
    stack.store(_sop(3), series=OTHER_SERIES)
    assert stack.bundles.record_tag(stack.site, STUDY, SERIES) == tag
    assert stack.series_sops() == [_sop(1), _sop(2)]


def test_replaced_instance_served_new(stack: Stack) -> None:
    stack.store(_sop(1), description="first")
    url = f"{stack.url}/studies/{STUDY}/series/{SERIES}/metadata"
    first = requests.get(url, timeout=30)
    assert first.json()[0]["0008103E"]["Value"] == ["first"]
    stack.store(_sop(1), description="second")
    second = requests.get(url, timeout=30)
    assert second.json()[0]["0008103E"]["Value"] == ["second"]
    assert second.headers["ETag"] != first.headers["ETag"]


def test_removed_instance_left_out(stack: Stack) -> None:
    for number in (1, 2, 3):
        stack.store(_sop(number))
    assert stack.series_sops() == [_sop(1), _sop(2), _sop(3)]
    stack.remove(_sop(2))
    assert stack.series_sops() == [_sop(1), _sop(3)]
    # The token stays the same across a removal, the count does not, and a later store of
    # another instance gives a new token: the stored bundles never match a state they miss.
    stack.store(_sop(4))
    assert stack.series_sops() == [_sop(1), _sop(3), _sop(4)]


def test_unknown_series_not_found(stack: Stack) -> None:
    stack.store(_sop(1))
    response = requests.get(f"{stack.url}/studies/{STUDY}/series/1.2.3/metadata", timeout=30)
    assert response.status_code == 404
    response = requests.get(f"{stack.url}/studies/1.2.3/metadata", timeout=30)
    assert response.status_code == 404


def test_gzip_served_as_stored(stack: Stack) -> None:
    stack.store(_sop(1))
    url = f"{stack.url}/studies/{STUDY}/series/{SERIES}/metadata"
    response = requests.get(url, headers={"Accept-Encoding": "gzip"}, stream=True, timeout=30)
    raw = response.raw.read(decode_content=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Vary"] == "Accept-Encoding"
    key = bundle_key(stack.site, STUDY, SERIES, f"http://127.0.0.1:{stack.server.port}/dicomweb")
    assert raw == stack.services.store.get(key)


def test_identity_when_gzip_refused(stack: Stack) -> None:
    stack.store(_sop(1))
    url = f"{stack.url}/studies/{STUDY}/series/{SERIES}/metadata"
    zipped = requests.get(url, headers={"Accept-Encoding": "gzip"}, timeout=30)
    for value in ("identity", "gzip;q=0", "br"):
        plain = requests.get(url, headers={"Accept-Encoding": value}, timeout=30)
        assert "Content-Encoding" not in plain.headers, value
        assert plain.content == zipped.content, value
        assert plain.headers["ETag"] != zipped.headers["ETag"], value


def test_etag_and_not_modified(stack: Stack) -> None:
    stack.store(_sop(1))
    url = f"{stack.url}/studies/{STUDY}/series/{SERIES}/metadata"
    for coding in ("gzip", "identity"):
        first = requests.get(url, headers={"Accept-Encoding": coding}, timeout=30)
        etag = first.headers["ETag"]
        assert etag.startswith('"'), coding
        assert not etag.startswith("W/"), coding
        cached = {"Accept-Encoding": coding, "If-None-Match": etag}
        again = requests.get(url, headers=cached, timeout=30)
        assert again.status_code == 304, coding
        assert again.headers["ETag"] == etag, coding
        assert again.content == b"", coding
    stack.store(_sop(2))
    changed = requests.get(url, headers={"If-None-Match": etag}, timeout=30)
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag


def test_bulkdata_uris_follow_base_url(stack: Stack) -> None:
    stack.store(_sop(1))
    for host in ("viewer-a.example", "viewer-b.example:8443"):
        headers = {"Host": host, "X-Forwarded-Proto": "https", "X-Forwarded-Port": "443"}
        response = requests.get(
            f"{stack.url}/studies/{STUDY}/series/{SERIES}/metadata", headers=headers, timeout=30
        )
        (item,) = response.json()
        instance = f"https://{host}/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{_sop(1)}"
        assert item[PIXEL_DATA]["BulkDataURI"] == f"{instance}/bulkdata/{PIXEL_DATA}", host


def test_study_metadata_bundle(stack: Stack) -> None:
    stack.store(_sop(1))
    stack.store(_sop(2), series=OTHER_SERIES)
    url = f"{stack.url}/studies/{STUDY}/metadata"
    first = requests.get(url, headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert first.headers["Content-Encoding"] == "gzip"
    assert [item[SOP_UID]["Value"][0] for item in first.json()] == [_sop(1), _sop(2)]
    cached = requests.get(url, headers={"If-None-Match": first.headers["ETag"]}, timeout=30)
    assert cached.status_code == 304
    stack.store(_sop(3), series=OTHER_SERIES)
    after = requests.get(url, timeout=30)
    assert [item[SOP_UID]["Value"][0] for item in after.json()] == [_sop(1), _sop(2), _sop(3)]
    key = bundle_key(stack.site, STUDY, None, f"http://127.0.0.1:{stack.server.port}/dicomweb")
    stored = stack.services.store.get(key)
    assert read_tag(stored) == stack.bundles.record_tag(stack.site, STUDY, None)


def test_stale_stored_bundle_rebuilt(stack: Stack) -> None:
    stack.store(_sop(1))
    base = f"http://127.0.0.1:{stack.server.port}/dicomweb"
    tag = stack.bundles.record_tag(stack.site, STUDY, SERIES)
    # A stale bundle is one whose tag is not the record's, so a bundle written with an old
    # tag is one.
    stack.services.store.put(
        bundle_key(stack.site, STUDY, SERIES, base), compress_bundle(b"[]", "old.1")
    )
    assert stack.series_sops() == [_sop(1)]
    assert read_tag(stack.services.store.get(bundle_key(stack.site, STUDY, SERIES, base))) == tag


def test_concurrent_stores_stay_exact(stack: Stack) -> None:
    """Writers add instances to one series while readers fetch its metadata."""
    writers, per_writer = 4, 5
    done: set[str] = set()
    done_lock = threading.Lock()
    violations: list[str] = []
    stop = threading.Event()
    all_sops = {
        _sop(100 * writer + number) for writer in range(writers) for number in range(per_writer)
    }

    def write(writer: int) -> None:
        for number in range(per_writer):
            sop = _sop(100 * writer + number)
            stack.store(sop)
            with done_lock:
                done.add(sop)

    def read() -> None:
        while not stop.is_set():
            with done_lock:
                before = set(done)
            if not before:
                time.sleep(0.01)
                continue
            bundle = stack.bundles.fetch(
                stack.site,
                STUDY,
                SERIES,
                "http://reader",
                stack.bundles.record_tag(stack.site, STUDY, SERIES),
            )
            served = {item[SOP_UID]["Value"][0] for item in json.loads(bundle.body())}
            if not before <= served:
                violations.append(f"missing {sorted(before - served)}")
            if not served <= all_sops:
                violations.append(f"unknown {sorted(served - all_sops)}")

    # The first instance creates the series record, so it goes before the threads start.
    stack.store(_sop(0))
    all_sops.add(_sop(0))
    done.add(_sop(0))
    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads + readers:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    stop.set()
    for thread in readers:
        thread.join(timeout=60)
    assert violations == []
    assert sorted(stack.series_sops()) == sorted(all_sops)
    model = stack.services.index_model
    series = model.get(study_pk(stack.site, STUDY), series_sk(SERIES), consistent_read=True)
    study = model.get(study_pk(stack.site, STUDY), "STUDY", consistent_read=True)
    assert series.instance_count == len(all_sops)
    assert study.instance_count == len(all_sops)


def test_concurrent_new_series_exact(stack: Stack) -> None:
    """Threads that race to create one series all end up in its metadata."""
    sops = [_sop(number) for number in range(1, 7)]
    threads = [threading.Thread(target=stack.store, args=(sop,)) for sop in sops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert stack.series_sops() == sorted(sops)


def test_accept_encoding_parsing() -> None:
    cases = {
        None: False,
        "": False,
        "gzip": True,
        "GZIP": True,
        "gzip, deflate, br": True,
        "br;q=1.0, gzip;q=0.5": True,
        "gzip;q=0": False,
        "gzip;q=0.0, identity": False,
        "*": True,
        "*;q=0": False,
        "br, *;q=0.1": True,
        "gzip;q=bad": False,
        "x-gzip": True,
        "identity": False,
    }
    for header, expected in cases.items():
        assert _accepts_gzip(header) is expected, header


def test_ingest_precomputes_bundles(stack: Stack) -> None:
    refresher = stack.refresher()
    stack.store(_sop(1), refresher=refresher)
    # The first read stores the bundle and makes its base URL one that ingest builds for.
    assert stack.series_sops() == [_sop(1)]
    stack.drain_queue()
    for number in (2, 3, 4):
        stack.store(_sop(number), refresher=refresher)
    bodies = [message["Body"] for message in stack.drain_queue()]
    requests_sent = [RefreshRequest.from_body(body) for body in bodies]
    refresh_requests = [request for request in requests_sent if request is not None]
    assert len(refresh_requests) == 3
    # Only the request sent after the last store is current; it builds the series and the
    # study bundle for the one base URL read so far.
    assert [refresher.refresh(request) for request in refresh_requests] == [0, 0, 2]
    expected = [_sop(number) for number in (1, 2, 3, 4)]
    assert stack.stored_sops(SERIES) == expected
    assert stack.stored_sops(None) == expected


def test_ingest_handler_runs_refresh(stack: Stack) -> None:
    refresher = stack.refresher()
    stack.store(_sop(1))
    assert stack.series_sops() == [_sop(1)]
    stack.drain_queue()
    stack.store(_sop(2), refresher=refresher)
    records = sqs_records(stack.drain_queue())
    assert any(RefreshRequest.from_body(record["body"]) for record in records)
    result = ingest_handler.handle({"Records": records}, None, stack.services)
    assert result["batchItemFailures"] == []
    assert stack.stored_sops(SERIES) == [_sop(1), _sop(2)]


def sqs_records(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of an SQS event for Lambda, built from received messages."""
    return [
        {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {},
            "messageAttributes": {},
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ingest",
            "awsRegion": "us-east-1",
        }
        for message in messages
    ]


def test_one_refresh_per_series_of_a_batch(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    other = "1.2.826.0.1.3680043.8.498.2"
    stack.store(_sop(1))
    stack.drain_queue()
    for number in (2, 3, 4):
        key = InstanceKey(stack.site, STUDY, SERIES, _sop(number))
        stack.services.store.put(key.object_key, _instance(SERIES, _sop(number), "first"))
    for number in (5, 6):
        key = InstanceKey(stack.site, STUDY, other, _sop(number))
        stack.services.store.put(key.object_key, _instance(other, _sop(number), "second"))
    notifications = stack.drain_queue()
    sent: list[tuple[str, str]] = []
    original = BundleRefresher.schedule

    def record(self: BundleRefresher, key: InstanceKey, version: str) -> None:
        sent.append((key.series, version))
        original(self, key, version)

    monkeypatch.setattr(BundleRefresher, "schedule", record)

    result = ingest_handler.handle({"Records": sqs_records(notifications)}, None, stack.services)

    assert len(notifications) == 5
    assert result["batchItemFailures"] == []
    # One request per series, with the version of the series' last write.
    assert sorted(sent) == sorted(
        [
            (SERIES, stack.bundles.version(stack.site, STUDY, SERIES)),
            (other, stack.bundles.version(stack.site, STUDY, other)),
        ]
    )


def test_refresh_not_sent_keeps_ingest(stack: Stack) -> None:
    sqs = stack.services.clients.sqs
    broken = BundleRefresher(stack.bundles, sqs, stack.queue_url() + "-missing", delay_seconds=0)
    stack.store(_sop(1), refresher=broken)
    assert stack.series_sops() == [_sop(1)]


def test_refresh_request_parsing() -> None:
    request = RefreshRequest("default", STUDY, SERIES, "0a1b2c")
    assert RefreshRequest.from_body(request.to_body()) == request
    assert RefreshRequest.from_body("not json") is None
    assert RefreshRequest.from_body('{"Records": []}') is None
    assert RefreshRequest.from_body("[1, 2]") is None
    with pytest.raises(ValueError):
        RefreshRequest.from_body('{"type": "cirrus.metadata-refresh", "site": "default"}')
    with pytest.raises(ValueError):
        RefreshRequest.from_body(request.to_body().replace('"0a1b2c"', "7"))


def test_delete_route_updates_bundles(settings: Settings) -> None:
    stack = start_stack(settings)
    try:
        site = stack.site
        for number in (1, 2, 3):
            key = InstanceKey(site, STUDY, SERIES, _sop(number))
            stack.store.put(key.object_key, _instance(SERIES, _sop(number), "first"))
        key = InstanceKey(site, STUDY, OTHER_SERIES, _sop(4))
        stack.store.put(key.object_key, _instance(OTHER_SERIES, _sop(4), "first"))
        stack.index()
        series_url = f"{stack.url}/studies/{STUDY}/series/{SERIES}"
        study_url = f"{stack.url}/studies/{STUDY}"

        def sops(url: str) -> list[str]:
            response = requests.get(f"{url}/metadata", timeout=30)
            assert response.status_code == 200, response.text
            return [item[SOP_UID]["Value"][0] for item in response.json()]

        assert sops(series_url) == [_sop(1), _sop(2), _sop(3)]
        assert sops(study_url) == [_sop(1), _sop(2), _sop(3), _sop(4)]
        deleted = requests.delete(f"{series_url}/instances/{_sop(2)}", timeout=30)
        assert deleted.status_code == 204, deleted.text
        assert sops(series_url) == [_sop(1), _sop(3)]
        assert sops(study_url) == [_sop(1), _sop(3), _sop(4)]
        deleted = requests.delete(series_url, timeout=30)
        assert deleted.status_code == 204, deleted.text
        assert requests.get(f"{series_url}/metadata", timeout=30).status_code == 404
        assert sops(study_url) == [_sop(4)]
    finally:
        stack.server.shutdown()
