"""Whole-table snapshots of the index, for tests that compare two ways of building it."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote_plus

from cirrus.config import ResourceNames, Settings
from cirrus.index.models import IndexRecord
from cirrus.local.poller import IngestPoller
from cirrus.local.resources import create_resources
from cirrus.services import Services
from functions.ingest import handler as ingest_handler

# ``metadata_version`` is a fresh random token per write, by design (cirrus.index.writer).
RANDOM_ATTRIBUTES = ("metadata_version",)


def index_snapshot(
    model: type[IndexRecord], ignore: tuple[str, ...] = RANDOM_ATTRIBUTES
) -> dict[tuple[str, str], dict[str, Any]]:
    """Return every item of the index table by key, without the attributes in ``ignore``."""
    snapshot = {}
    for record in model.scan(consistent_read=True):
        values = {k: v for k, v in record.attribute_values.items() if k not in ignore}
        snapshot[(record.pk, record.sk)] = values
    return snapshot


def second_index(settings: Settings, endpoint_url: str) -> Services:
    """Return services with an index table and queues of their own on ``settings``' bucket.

    Two indexes built from the same objects can then be compared item for item.
    """
    names = ResourceNames(deployment=f"t{uuid.uuid4().hex[:12]}")
    other = create_resources(Settings.for_names(names, endpoint_url=endpoint_url))
    return Services(
        dataclasses.replace(other, bucket=settings.bucket, kms_key_id=settings.kms_key_id)
    )


def queue_url(services: Services, dead_letter: bool = False) -> str:
    settings = services.settings
    name = settings.dead_letter_queue if dead_letter else settings.ingest_queue
    return str(services.clients.sqs.get_queue_url(QueueName=name)["QueueUrl"])


def queued_messages(services: Services, dead_letter: bool = False) -> int:
    """Return the number of visible and in-flight messages of the ingest or dead-letter queue."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = services.clients.sqs.get_queue_attributes(
        QueueUrl=queue_url(services, dead_letter), AttributeNames=names
    )["Attributes"]
    return sum(int(attributes[name]) for name in names)


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{condition} still false after {timeout} s")
        time.sleep(0.1)


@contextmanager
def running_poller(
    services: Services, retry_delays: tuple[int, ...] = (0, 0, 0)
) -> Iterator[IngestPoller]:
    """Run the local queue poller with the real ingest handler on ``services``."""
    sqs = services.clients.sqs
    url = queue_url(services)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    handle = functools.partial(ingest_handler.handle, services=services)
    poller = IngestPoller(
        sqs, url, arn, services.settings.region, handle, retry_delays=retry_delays, concurrency=1
    )
    poller.start()
    try:
        yield poller
    finally:
        poller.stop()


def notifications_of(services: Services, prefix: str) -> list[dict[str, Any]]:
    """Return, as Lambda records, the S3 notifications of the objects stored under ``prefix``.

    Built from a listing, so that the queue's messages stay unreceived.
    """
    records = []
    for number, stored in enumerate(services.store.list_keys(prefix)):
        obj = {"key": quote_plus(stored.key, safe="/"), "size": stored.size, "eTag": stored.etag}
        body = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": obj}}]}
        records.append({"messageId": f"m{number}", "receiptHandle": "-", "body": json.dumps(body)})
    return records
