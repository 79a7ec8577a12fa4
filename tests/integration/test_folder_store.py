"""The local stack's object store: files in the data folder, notifications to SQS on moto."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cirrus.aws import AwsClients
from cirrus.config import Settings
from cirrus.errors import NotFoundError, StoreUnavailableError
from cirrus.local.datadir import (
    FolderObjectStore,
    QueueNotifier,
    remove_partial_files,
    saved_objects,
)
from cirrus.notifications import object_events

KEY = "sites/default/studies/1.2/series/1.2.3/instances/1.2.3.4.dcm"


@pytest.fixture
def queue_url(settings: Settings, clients: AwsClients) -> str:
    return str(clients.sqs.get_queue_url(QueueName=settings.ingest_queue)["QueueUrl"])


@pytest.fixture
def notifier(settings: Settings, clients: AwsClients, queue_url: str) -> QueueNotifier:
    return QueueNotifier(clients.sqs, queue_url, settings.bucket)


@pytest.fixture
def store(tmp_path: Path, settings: Settings, notifier: QueueNotifier) -> FolderObjectStore:
    return FolderObjectStore(tmp_path / "objects", settings.bucket, notifier)


def _received(clients: AwsClients, queue_url: str) -> list[str]:
    """Receive the queue's object-created messages, dropping others such as S3's test event."""
    bodies: list[str] = []
    while True:
        messages = clients.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            return bodies
        bodies += [message["Body"] for message in messages if object_events(message["Body"])]


def test_put_then_read(store: FolderObjectStore, tmp_path: Path) -> None:
    body = bytes(range(256)) * 4
    stored = store.put(KEY, body)
    assert stored.size == 1024
    assert stored.etag == hashlib.md5(body, usedforsecurity=False).hexdigest()
    assert (tmp_path / "objects" / KEY).read_bytes() == body
    assert store.get(KEY) == body
    assert store.get_range(KEY, 10, 20) == (body[10:20], 1024)
    assert store.get_range(KEY, 1000) == (body[1000:], 1024)
    assert store.get_range(KEY, 2000, 3000) == (b"", 1024)
    assert store.size(KEY) == 1024


def test_put_file_copies(store: FolderObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "spooled.dcm"
    source.write_bytes(b"x" * 3_000_000)
    stored = store.put_file(KEY, source)
    assert stored.size == 3_000_000
    assert store.get(KEY) == source.read_bytes()
    assert source.exists()


def test_missing_object_not_found(store: FolderObjectStore) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        store.get(KEY)
    with pytest.raises(NotFoundError):
        store.get_range(KEY, 0, 10)
    with pytest.raises(NotFoundError):
        store.size(KEY)


def test_key_outside_folder_rejected(store: FolderObjectStore) -> None:
    with pytest.raises(ValueError, match="leaves the data folder"):
        store.put("sites/../../outside.dcm", b"x")


def test_delete_and_list(store: FolderObjectStore) -> None:
    other = KEY.replace("1.2.3.4.dcm", "1.2.3.5.dcm")
    elsewhere = "sites/default/studies/1.20/series/1/instances/1.dcm"
    for key in (other, KEY, elsewhere):
        store.put(key, b"data")
    listed = [obj.key for obj in store.list_keys("sites/default/studies/1.2/")]
    assert listed == [KEY, other]
    store.delete([KEY, "sites/default/never-written.dcm"])
    assert [obj.key for obj in store.list_keys("sites/default/studies/1.2/")] == [other]
    assert [obj.key for obj in store.list_keys("sites/other/")] == []


def test_instance_write_notifies(
    store: FolderObjectStore, clients: AwsClients, queue_url: str
) -> None:
    stored = store.put(KEY, b"instance bytes")
    store.put(KEY + ".metadata.json.zz", b"not an instance")
    store.put("audit/2026/record.json", b"{}")
    bodies = _received(clients, queue_url)
    events = [event for body in bodies for event in object_events(body)]
    assert [event.key for event in events] == [KEY]
    assert events[0].size == stored.size
    assert events[0].etag == stored.etag
    assert events[0].sequencer


def test_key_with_space_notified_encoded(
    store: FolderObjectStore, clients: AwsClients, queue_url: str
) -> None:
    key = "sites/default/studies/1 2/series/3/instances/4.dcm"
    store.put(key, b"x")
    [body] = _received(clients, queue_url)
    assert "1+2" in body
    assert [event.key for event in object_events(body)] == [key]


def test_failed_notification_leaves_no_file(
    tmp_path: Path, settings: Settings, clients: AwsClients, queue_url: str
) -> None:
    missing_queue = queue_url + "-deleted"
    broken = FolderObjectStore(
        tmp_path / "objects", settings.bucket, QueueNotifier(clients.sqs, missing_queue, "b")
    )
    with pytest.raises(StoreUnavailableError, match="notification of"):
        broken.put(KEY, b"instance bytes")
    assert not (tmp_path / "objects" / KEY).exists()
    assert list((tmp_path / "objects").rglob("*.dcm")) == []


def test_partial_files_removed(store: FolderObjectStore) -> None:
    keys = [KEY.replace("1.2.3.4.dcm", f"1.2.3.{n}.dcm") for n in range(3)]
    for key in keys:
        store.put(key, b"instance")
    partial = store._path(KEY).parent / ".incoming-crashed"
    partial.write_bytes(b"half")
    assert remove_partial_files(store._path("")) == 1
    assert not partial.exists()
    assert sorted(key for key, _ in saved_objects(store._path(""))) == sorted(keys)
