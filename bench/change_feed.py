"""The cost of the change feed in ingest, and the rate at which a consumer reads it.

Starts moto in a child process and creates two deployments on it: one with the changes table,
one without it and without StudyStable arrivals. It archives ``--instances`` CT instances of
one study into each, in series of ``--series-size``, and indexes them through the ingest
handler in batches of 10, as the queue delivers them. It prints instances indexed per second
with and without the feed. Then it reads the feed of the first deployment with pages of
``--page`` changes and prints changes read per second.

    .venv/bin/python bench/change_feed.py --instances 300 --series-size 30 --page 100
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import uuid
from io import BytesIO

import pydicom
from pydicom.uid import generate_uid

from cirrus.archive import archive_instance
from cirrus.config import ResourceNames, Settings
from cirrus.local.moto_process import start_moto, use_local_credentials
from cirrus.local.resources import create_resources
from cirrus.notifications import object_events
from cirrus.services import Services
from functions.ingest import handler as ingest_handler
from tests.pydicom_files import bundled


def _instances(count: int, series_size: int) -> list[bytes]:
    study = generate_uid()
    template = pydicom.dcmread(bundled("CT_small.dcm"))
    parts = []
    series = generate_uid()
    for number in range(count):
        if number % series_size == 0:
            series = generate_uid()
        template.StudyInstanceUID, template.SeriesInstanceUID = study, series
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        buffer = BytesIO()
        template.save_as(buffer, enforce_file_format=True)
        parts.append(buffer.getvalue())
    return parts


def _index_all(services: Services) -> int:
    """Index every queued notification in batches of 10; return the instances indexed."""
    sqs = services.clients.sqs
    url = sqs.get_queue_url(QueueName=services.settings.ingest_queue)["QueueUrl"]
    indexed = 0
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return indexed
        records = [
            {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"]}
            for m in messages
        ]
        ingest_handler.handle({"Records": records}, None, services)
        indexed += sum(len(object_events(m["Body"])) for m in messages)
        for m in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def _deployment(endpoint: str, feed: bool) -> Services:
    names = ResourceNames(deployment=f"b{uuid.uuid4().hex[:10]}")
    settings = create_resources(Settings.for_names(names, endpoint_url=endpoint))
    if not feed:
        settings = dataclasses.replace(settings, changes_table=None, stable_queue=None)
    return Services(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--series-size", type=int, default=30)
    parser.add_argument("--page", type=int, default=100)
    args = parser.parse_args()
    use_local_credentials()
    moto = start_moto()
    try:
        parts = _instances(args.instances, args.series_size)
        rates = {}
        for label, feed in (("with feed and StudyStable", True), ("without them", False)):
            services = _deployment(moto.endpoint_url, feed)
            for part in parts:
                archive_instance(services.store, "default", part)
            started = time.perf_counter()
            indexed = _index_all(services)
            rates[label] = indexed / (time.perf_counter() - started)
            if feed:
                reader = services.change_reader
        for label, rate in rates.items():
            print(f"ingest {label}: {rate:.0f} instances/s")
        assert reader is not None
        started, cursor, read = time.perf_counter(), 0, 0
        while True:
            page = reader.read("default", cursor, args.page)
            read += len(page.changes)
            cursor = page.cursor
            if not page.more:
                break
        print(f"feed read: {read} changes, {read / (time.perf_counter() - started):.0f} changes/s")
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
