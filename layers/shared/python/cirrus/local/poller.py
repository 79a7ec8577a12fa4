"""The local stand-in for the Lambda event source mapping of the ingest queue.

It long-polls the queue, hands each batch to the ingest handler as the SQS event that Lambda
delivers, deletes the messages that succeeded, and makes failed ones visible again after a
growing delay. The queue's redrive policy moves a message to the dead-letter queue after its
maximum number of receives, as in AWS. Several threads handle batches at once, as Lambda runs
several batches of one event source mapping concurrently, so one slow batch does not hold up
the rest. One thread at a time receives, so that a batching window fills one batch instead of
spreading its messages over the waiting threads.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

BATCH_SIZE: Final = 10
WAIT_SECONDS: Final = 1
RETRY_DELAYS_SECONDS: Final = (1, 4, 16)
# Batches handled at once. Ingest is bound by the latency of moto's responses rather than by
# CPU, so a few concurrent batches raise its rate (bench/gateway_ingest.py).
CONCURRENT_BATCHES: Final = 4
# How long a batch that is not full waits for more messages, like the MaximumBatchingWindow of
# a Lambda event source mapping (1 s in AWS, see infra/cirrus_infra/ingest.py). Locally a
# larger batch saves moto requests: ingest writes the new instances of a series in one
# transaction and sends one change feed update, arrival update and event batch per batch.
INGEST_BATCHING_WINDOW_SECONDS: Final = 0.2
# A batch waits only while messages arrive in a stream: the previous ones came less than this
# earlier, and another comes within this time. An instance stored on its own is indexed at
# once, or after this time when it came soon after the previous one, as when its client waits
# to see each instance in QIDO-RS before it sends the next (bench/visible.py).
INGEST_STREAM_GAP_SECONDS: Final = 0.05

# A message sent longer ago than this before its receive did not come in a stream: it was
# delayed, as the metadata refresh requests are by 5 s, or is received again after a failure.
_STREAM_MESSAGE_AGE_SECONDS: Final = 1.0

BatchHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


class IngestPoller:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        region: str,
        handler: BatchHandler,
        retry_delays: tuple[int, ...] = RETRY_DELAYS_SECONDS,
        concurrency: int = CONCURRENT_BATCHES,
        batching_window: float = 0.0,
        stream_gap: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sqs = sqs
        self._retry_delays = retry_delays
        self._region = region
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._handler = handler
        self._batching_window = batching_window
        self._stream_gap = batching_window if stream_gap is None else stream_gap
        self._clock = clock
        self._receive_lock = threading.Lock()
        # When the last receive that returned messages ended, by ``clock``; guarded by the
        # receive lock.
        self._last_receipt = float("-inf")
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"ingest-poller-{number}", daemon=True)
            for number in range(1, concurrency + 1)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + WAIT_SECONDS + 10
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def wait_until_drained(self, timeout: float) -> bool:
        """Wait until no message is queued or in flight; tell whether that happened in time."""
        deadline = time.monotonic() + timeout
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        while time.monotonic() < deadline:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=self._queue_url, AttributeNames=names
            )["Attributes"]
            if all(attributes.get(name) == "0" for name in names):
                return True
            time.sleep(0.05)
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll_once()
            except (ClientError, BotoCoreError) as exc:
                logger.warning("ingest queue poll failed", extra={"error": str(exc)})
                self._stop.wait(1)

    def _poll_once(self) -> None:
        # The timeout lets a thread that waits for the lock see a stop request.
        if not self._receive_lock.acquire(timeout=WAIT_SECONDS):
            return
        try:
            if self._stop.is_set():
                return
            messages = self._receive_batch()
        finally:
            self._receive_lock.release()
        if messages:
            self._handle(messages)

    def _receive_batch(self) -> list[dict[str, Any]]:
        """Long-poll for messages, then wait out the batching window for a batch not full.

        The batch waits only in a stream: the previous messages came less than the stream gap
        earlier, and another one comes within the gap. A message that came alone, although
        soon after the previous one, waits one gap and no more. Messages sent long before
        their receive, delayed or received again, neither start nor extend a stream.
        """
        messages = self._receive(BATCH_SIZE, WAIT_SECONDS)
        if not messages or not _any_sent_just_now(messages):
            return messages
        started = time.monotonic()
        previous, self._last_receipt = self._last_receipt, self._clock()
        if len(messages) >= BATCH_SIZE or self._last_receipt - previous >= self._stream_gap:
            return messages
        for wait in (self._stream_gap, self._batching_window - self._stream_gap):
            self._stop.wait(max(0.0, min(wait, started + self._batching_window - time.monotonic())))
            try:
                more = self._receive(BATCH_SIZE - len(messages), 0)
            except (ClientError, BotoCoreError) as exc:
                # The messages received are handled; the others wait for the next poll.
                logger.warning("ingest queue poll failed", extra={"error": str(exc)})
                return messages
            messages += more
            if not _any_sent_just_now(more):
                return messages
            # The next message of the stream is measured from here. Measured from the
            # batch's first receive, it came more than a window later and was handled alone.
            self._last_receipt = self._clock()
            if len(messages) >= BATCH_SIZE:
                return messages
        return messages

    def _receive(self, count: int, wait_seconds: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def _handle(self, messages: list[dict[str, Any]]) -> None:
        try:
            result = self._handler(self._sqs_event(messages), None)
        except Exception:
            # As in Lambda, a handler that raises fails the whole batch, which is retried.
            logger.exception("ingest handler failed", extra={"messages": len(messages)})
            result = {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in messages]}
        failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", ())}
        for message in messages:
            if message["MessageId"] in failed:
                self._retry_later(message)
        self._delete([message for message in messages if message["MessageId"] not in failed])

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        """Delete the handled messages with one request; log those that SQS did not delete."""
        if not messages:
            return
        entries = [
            {"Id": str(number), "ReceiptHandle": message["ReceiptHandle"]}
            for number, message in enumerate(messages)
        ]
        response = self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
        for failure in response.get("Failed", ()):
            # The message becomes visible again and is ingested again, as after a Lambda retry.
            message = messages[int(failure["Id"])]
            logger.warning(
                "ingest message not deleted",
                extra={"message_id": message["MessageId"], "error": failure.get("Message")},
            )

    def _retry_later(self, message: dict[str, Any]) -> None:
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        delay = self._retry_delays[min(receives, len(self._retry_delays)) - 1]
        self._sqs.change_message_visibility(
            QueueUrl=self._queue_url,
            ReceiptHandle=message["ReceiptHandle"],
            VisibilityTimeout=delay,
        )

    def _sqs_event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": message.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": message.get("MD5OfBody", ""),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self._queue_arn,
                    "awsRegion": self._region,
                }
                for message in messages
            ],
            "requestId": str(uuid.uuid4()),
        }


def _any_sent_just_now(messages: list[dict[str, Any]]) -> bool:
    """Tell whether a message of ``messages`` was sent just now, by its SentTimestamp.

    A message without the attribute counts as sent just now.
    """
    now_ms = time.time() * 1000
    for message in messages:
        sent = message.get("Attributes", {}).get("SentTimestamp")
        if sent is None or now_ms - int(sent) < _STREAM_MESSAGE_AGE_SECONDS * 1000:
            return True
    return False
