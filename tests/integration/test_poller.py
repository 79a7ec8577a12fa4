"""The local ingest poller's batching window and concurrent batches.

Most tests run it on SQS on moto. The test of a stream runs it on a scripted queue with a
clock of its own, so that its timing does not depend on the machine's load.
"""

from __future__ import annotations

import threading
import time
from collections import deque
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


def _sent_attributes(body: str) -> dict[str, str]:
    """Return no SentTimestamp, or one 5 s ago for a body that starts with "delayed"."""
    if not body.startswith("delayed"):
        return {}
    return {"SentTimestamp": str(int(time.time() * 1000) - 5000)}


class ScriptedQueue:
    """An SQS client whose receives return scripted messages at scripted times of its clock."""

    def __init__(self, script: list[tuple[float, list[str]]]) -> None:
        self.now = 0.0
        self._script = deque(script)

    def clock(self) -> float:
        return self.now

    def receive_message(self, **request: Any) -> dict[str, Any]:
        if not self._script:
            # A long poll of an empty queue.
            time.sleep(0.01)
            return {}
        self.now, bodies = self._script.popleft()
        messages = [
            {
                "MessageId": body,
                "ReceiptHandle": body,
                "Body": body,
                "Attributes": _sent_attributes(body),
            }
            for body in bodies
        ]
        return {"Messages": messages}

    def delete_message_batch(self, **request: Any) -> dict[str, Any]:
        return {}

    def drained(self) -> bool:
        return not self._script


def test_stream_keeps_batching_after_window() -> None:
    # Stream gap 0.1 s. "a" comes alone and is handled at once. "b" follows within the gap,
    # and so does "c", so they go together. "d" comes 0.17 s after the receive of "b" but
    # 0.07 s after that of "c", so it is still part of the stream and goes with "e". "f"
    # comes after a pause and is handled at once. "g" comes soon after "f", but nothing
    # follows it within the gap, so it goes alone. "i" follows "h" within the gap, but only
    # a message sent 5 s earlier comes after it, which does not extend the stream, so "k"
    # goes alone. An empty list is a receive that finds none.
    queue = ScriptedQueue(
        [
            (0.0, ["a"]),
            (0.05, ["b"]),
            (0.15, ["c"]),
            (0.16, []),
            (0.22, ["d"]),
            (0.32, ["e"]),
            (0.33, []),
            (1.0, ["f"]),
            (1.05, ["g"]),
            (1.15, []),
            (2.0, ["h"]),
            (2.05, ["i"]),
            (2.15, ["delayed-j"]),
            (2.16, ["k"]),
        ]
    )
    handler = RecordingHandler()
    poller = IngestPoller(
        queue,
        "queue-url",
        "queue-arn",
        "us-east-1",
        handler,
        concurrency=1,
        batching_window=0.01,
        stream_gap=0.1,
        clock=queue.clock,
    )
    poller.start()
    try:
        _wait_received(handler, 11)
    finally:
        poller.stop()

    assert queue.drained()
    assert handler.batches == [
        ["a"],
        ["b", "c"],
        ["d", "e"],
        ["f"],
        ["g"],
        ["h"],
        ["i", "delayed-j"],
        ["k"],
    ]
