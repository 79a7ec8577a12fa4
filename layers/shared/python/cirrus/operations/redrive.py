"""``cirrus redrive``: move the ingest dead-letter queue's messages back to the ingest queue.

A message reaches the dead-letter queue after it failed every receive (``INGEST_MAX_RECEIVES``),
for example while DynamoDB rejected ingest's writes. Once the cause is fixed, each message is
sent to the ingest queue and deleted from the dead-letter queue only after that send
succeeded. A crash between the two leaves the message in both queues, and ingest is
idempotent, so the second delivery changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from cirrus.dicomweb.bundle_refresh import RefreshRequest
from cirrus.errors import StoreUnavailableError
from cirrus.notifications import object_events
from cirrus.operations.target import Target

logger = logging.getLogger(__name__)

# How long a received message stays hidden from other consumers while it is moved or listed.
VISIBILITY_SECONDS: Final = 60
_SQS_BATCH: Final = 10


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead-letter queue, described without its body."""

    message_id: str
    # The object keys that the notification names, or a description of another message.
    content: str

    def to_json(self, moved: bool) -> str:
        return json.dumps({"message_id": self.message_id, "content": self.content, "moved": moved})


def redrive(
    target: Target,
    report: Callable[[DeadLetter], None],
    max_messages: int | None = None,
    dry_run: bool = False,
) -> int:
    """Move up to ``max_messages`` messages (all when None); return how many moved or would.

    With ``dry_run`` each message is only reported and becomes visible again at the end.
    Raises ``StoreUnavailableError`` when SQS fails; a message whose send failed stays in the
    dead-letter queue.
    """
    settings = target.services.settings
    sqs = target.services.clients.sqs
    try:
        source = sqs.get_queue_url(QueueName=settings.dead_letter_queue)["QueueUrl"]
        destination = sqs.get_queue_url(QueueName=settings.ingest_queue)["QueueUrl"]
        return _move(sqs, source, destination, report, max_messages, dry_run)
    except (ClientError, BotoCoreError) as exc:
        raise StoreUnavailableError(f"SQS request failed: {exc}") from exc


def _move(
    sqs: Any,
    source: str,
    destination: str,
    report: Callable[[DeadLetter], None],
    max_messages: int | None,
    dry_run: bool,
) -> int:
    count = 0
    seen: dict[str, str] = {}
    try:
        while max_messages is None or count < max_messages:
            batch_size = (
                _SQS_BATCH if max_messages is None else min(_SQS_BATCH, max_messages - count)
            )
            messages = sqs.receive_message(
                QueueUrl=source,
                MaxNumberOfMessages=batch_size,
                WaitTimeSeconds=1,
                VisibilityTimeout=VISIBILITY_SECONDS,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            fresh = [m for m in messages if m["MessageId"] not in seen]
            if not fresh:
                break
            for message in fresh:
                seen[message["MessageId"]] = message["ReceiptHandle"]
                if not dry_run:
                    _send_then_delete(sqs, source, destination, message)
                count += 1
                report(DeadLetter(message["MessageId"], describe(message["Body"])))
    finally:
        if dry_run:
            _make_visible(sqs, source, seen)
    return count


def _send_then_delete(sqs: Any, source: str, destination: str, message: dict[str, Any]) -> None:
    extra = {}
    if message.get("MessageAttributes"):
        extra["MessageAttributes"] = message["MessageAttributes"]
    sqs.send_message(QueueUrl=destination, MessageBody=message["Body"], **extra)
    sqs.delete_message(QueueUrl=source, ReceiptHandle=message["ReceiptHandle"])
    logger.info("dead letter moved to the ingest queue", extra={"message_id": message["MessageId"]})


def _make_visible(sqs: Any, queue: str, handles: dict[str, str]) -> None:
    items = list(handles.items())
    for start in range(0, len(items), _SQS_BATCH):
        entries = [
            {"Id": str(number), "ReceiptHandle": handle, "VisibilityTimeout": 0}
            for number, (_, handle) in enumerate(items[start : start + _SQS_BATCH])
        ]
        sqs.change_message_visibility_batch(QueueUrl=queue, Entries=entries)


def describe(body: str) -> str:
    """Describe a message by the object keys it names; keys contain UIDs, never patient data."""
    try:
        if RefreshRequest.from_body(body) is not None:
            return "metadata bundle refresh"
        keys = [event.key for event in object_events(body)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unreadable message"
    return " ".join(keys) if keys else "notification without objects"
