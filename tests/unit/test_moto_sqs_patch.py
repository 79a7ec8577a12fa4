"""moto's SQS queue, as the local stack patches it, keeps messages sent during deletes.

moto 5.2.5's ``Queue.delete_message`` copies the message list without the lock that a send
holds and then replaces the list with the copy. A message sent in between is lost, and two
deletes at once can bring back a deleted message. ``cirrus.local.moto_server_patches`` runs the
delete under that lock. The test runs the queue in this process with a thread switch interval
of a microsecond, so the threads interleave often. Without the patch nearly every run ends
with more than a thousand wrong messages.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest
from moto.core.utils import camelcase_to_underscores
from moto.sqs import models as sqs_models
from moto.sqs.models import Message, Queue

from cirrus.local.moto_server_patches import locked_delete_message, underscored_name

BACKLOG = 3000
SENDERS = 2
DELETERS = 2
MESSAGES_PER_SENDER = 300


@pytest.fixture
def fast_thread_switches() -> Iterator[None]:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("fast_thread_switches")
def test_patched_delete_keeps_concurrent_sends() -> None:
    queue = Queue("race", "123456789012", "us-east-1")
    for number in range(BACKLOG):
        queue.add_message(Message(f"backlog-{number}", f"backlog-{number}"))
    for message in queue._messages:
        message.mark_received()
    handles = [message.receipt_handle for message in queue._messages]

    def send(sender: int) -> None:
        for number in range(MESSAGES_PER_SENDER):
            body = f"{sender}-{number}"
            queue.add_message(Message(body, body))

    def delete(share: list[str]) -> None:
        for handle in share:
            locked_delete_message(queue, handle)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(SENDERS)]
    threads += [
        threading.Thread(target=delete, args=(handles[index::DELETERS],))
        for index in range(DELETERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    remaining = sorted(message.body for message in queue._messages)
    sent = sorted(
        f"{sender}-{number}" for sender in range(SENDERS) for number in range(MESSAGES_PER_SENDER)
    )
    assert len(remaining) == len(sent)
    assert remaining == sent


def test_queue_attributes_same_with_kept_names(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = Queue("names", "123456789012", "us-east-1", FifoQueue="false")
    queue.add_message(Message("m1", "body"))
    expected = queue.attributes

    monkeypatch.setattr(sqs_models, "camelcase_to_underscores", underscored_name)
    first, second = queue.attributes, queue.attributes

    assert first == expected
    assert second == expected
    for name in ("ContentBasedDeduplication", "ReceiveMessageWaitTimeSeconds", "QueueArn", "A"):
        assert underscored_name(name) == camelcase_to_underscores(name)
