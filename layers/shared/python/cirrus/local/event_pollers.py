"""The local stand-ins for the stable Lambda and for a consumer of the event bus.

Both are ``IngestPoller`` instances on their queues: one runs the StudyStable checks of the
stable queue with the stable Lambda's handler, the other appends the events that the bus
sends to the journal queue to the data folder's journal (``cirrus.local.event_journal``).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from cirrus.local.event_journal import JOURNAL_FILE, EventJournalWriter
from cirrus.local.event_resources import journal_queue_name
from cirrus.local.poller import IngestPoller
from cirrus.services import Services

logger = logging.getLogger("cirrus.local")


def _queue(sqs: Any, name: str) -> tuple[str, str]:
    url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, str(attributes["Attributes"]["QueueArn"])


def start_event_pollers(services: Services, data_dir: Path) -> list[IngestPoller]:
    """Start the stable checker and the journal writer; return their pollers."""
    from functions.stable import handler as stable_handler

    settings = services.settings
    sqs = services.clients.sqs
    pollers = []
    if settings.stable_queue and settings.changes_table:
        url, arn = _queue(sqs, settings.stable_queue)
        checker = stable_handler.checker_for(services)
        handle = functools.partial(stable_handler.handle, checker=checker)
        pollers.append(IngestPoller(sqs, url, arn, settings.region, handle, concurrency=1))
        logger.info(
            "StudyStable checker ready",
            extra={"queue": settings.stable_queue, "quiet_seconds": settings.stable_after_seconds},
        )
    if settings.event_bus:
        url, arn = _queue(sqs, journal_queue_name(settings))
        writer = EventJournalWriter(data_dir / JOURNAL_FILE)
        pollers.append(IngestPoller(sqs, url, arn, settings.region, writer, concurrency=1))
        logger.info("event journal ready", extra={"file": str(writer.path)})
    for poller in pollers:
        poller.start()
    return pollers
