"""The ingest Lambda: indexes each object named by the S3 notifications in an SQS batch.

Each message succeeds or fails on its own (partial batch response), so an object that cannot
be indexed is retried and then kept in the dead-letter queue without blocking the others.
New instances of one series in a batch are indexed in one transaction (``BatchIngest``).
The queue also carries the delayed requests that precompute metadata bundles
(``cirrus.dicomweb.bundle_refresh``), which ingest sends after each batch, one per series
that the batch changed.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from cirrus.config import Settings
from cirrus.dicomweb.bundle_refresh import BundleRefresher, RefreshRequest
from cirrus.dicomweb.bundles import MetadataBundles
from cirrus.errors import CirrusError, InvalidInstanceError
from cirrus.events.announce import BatchAnnouncer
from cirrus.ingest import BatchIngest, ObjectEvent
from cirrus.lambda_metrics import record_ingest
from cirrus.notifications import object_events
from cirrus.services import Services

logger = Logger(service="cirrus-ingest")

_refreshers: dict[int, tuple[Services, BundleRefresher]] = {}
_refreshers_lock = threading.Lock()


@cache
def _lambda_services() -> Services:
    # In Lambda the domain's loggers write powertools JSON too; the local stack keeps its own.
    copy_config_to_registered_loggers(source_logger=logger, include={"cirrus"})
    return Services(Settings.from_env())


def handle(event: dict[str, Any], context: Any, services: Services) -> dict[str, Any]:
    """Process one SQS batch with ``services``; return the partial batch response."""

    refresher = _refresher_for(services)
    batch = BatchIngest(services.store, services.index_writer, refresher)
    batch.run(_object_events_of(event))
    announcer = BatchAnnouncer(services.events, services.arrivals)

    def record_handler(record: SQSRecord) -> None:
        request = RefreshRequest.from_body(record.body)
        if request is not None:
            refresher.refresh(request)
            return
        for obj in object_events(record.body):
            try:
                outcome = batch.ingest(obj)
            except (CirrusError, ValueError) as exc:
                logger.warning(
                    "object not indexed",
                    extra={"object_key": obj.key, "reason": str(exc), "error": type(exc).__name__},
                )
                # The same object fails the same way at each receive, so only the first
                # receive announces it.
                if isinstance(exc, InvalidInstanceError) and _first_receive(record):
                    announcer.rejected(obj, str(exc))
                raise
            announcer.indexed(obj, outcome, batch.prepared(obj))

    # A batch whose every record failed is reported like any other, not raised: Lambda's
    # ReportBatchItemFailures then retries just those records.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    try:
        response = dict(process_partial_response(event, record_handler, processor, context))
    finally:
        batch.send_refreshes()
    announcer.send()
    return response


def _first_receive(record: SQSRecord) -> bool:
    attributes = record.raw_event.get("attributes") or {}
    return str(attributes.get("ApproximateReceiveCount") or "1") == "1"


def _object_events_of(event: dict[str, Any]) -> list[ObjectEvent]:
    """Return the object events of a batch's messages; a message that is not one is skipped.

    The record handler parses each message again and reports the ones that fail.
    """
    events = []
    for record in event.get("Records", ()):
        body = record.get("body", "")
        try:
            if RefreshRequest.from_body(body) is None:
                events += object_events(body)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return events


def _refresher_for(services: Services) -> BundleRefresher:
    # Keyed by identity with a reference kept, because Services is not hashable.
    with _refreshers_lock:
        entry = _refreshers.get(id(services))
        if entry is None:
            sqs = services.clients.sqs
            queue_url = sqs.get_queue_url(QueueName=services.settings.ingest_queue)["QueueUrl"]
            bundles = MetadataBundles(services.index_model, services.store)
            entry = (services, BundleRefresher(bundles, sqs, queue_url))
            _refreshers[id(services)] = entry
        return entry[1]


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    services = _lambda_services()
    response = handle(event, context, services)
    record_ingest(event, response, services.settings.deployment)
    return response
