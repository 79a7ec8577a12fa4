"""The local ingest poller on SQS on moto: batching window and concurrent batches."""

from __future__ import annotations

import threading
import time
from typing import Any

from cirrus.aws import AwsClients
from cirrus.local.poller import IngestPoller

MESSAGES = 5


class RecordingHandler:
    """Records the message bodies of each batch; every message succeeds."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        with self.lock:
            self.batches.append([record["body"] for record in event["Records"]])
        return {"batchItemFailures": []}

    def received(self) -> int:
        with self.lock:
            return sum(len(batch) for batch in self.batches)


def _queue(clients: AwsClients, name: str) -> tuple[str, str]:
    url = str(clients.sqs.create_queue(QueueName=name)["QueueUrl"])
    attributes = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, str(attributes["Attributes"]["QueueArn"])


def _run(clients: AwsClients, name: str, batching_window: float) -> list[list[str]]:
    """Send one message, then more one by one, to a new queue; return the poller's batches."""
    url, arn = _queue(clients, name)
    handler = RecordingHandler()
    poller = IngestPoller(
        clients.sqs, url, arn, "us-east-1", handler, batching_window=batching_window
    )
    poller.start()
    try:
        clients.sqs.send_message(QueueUrl=url, MessageBody="first")
        _wait_received(handler, 1)
        for number in range(MESSAGES):
            clients.sqs.send_message(QueueUrl=url, MessageBody=str(number))
        _wait_received(handler, 1 + MESSAGES)
        assert poller.wait_until_drained(30)
    finally:
        poller.stop()
    return handler.batches


def _wait_received(handler: RecordingHandler, count: int) -> None:
    deadline = time.monotonic() + 30
    while handler.received() < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_batching_window_fills_one_batch(clients: AwsClients) -> None:
    # The first message comes alone and is handled at once. The next five follow it within
    # the 5 s window, so they count as a stream: the first receive's batch waits for all of
    # them, although three more threads are ready to take messages.
    batches = _run(clients, "poller-window", batching_window=5.0)
    assert batches[0] == ["first"]
    assert len(batches) == 2
    assert sorted(batches[1]) == [str(number) for number in range(MESSAGES)]


def test_no_window_delivers_every_message(clients: AwsClients) -> None:
    batches = _run(clients, "poller-no-window", batching_window=0.0)
    assert sorted(body for batch in batches for body in batch) == sorted(
        ["first", *(str(number) for number in range(MESSAGES))]
    )
