"""Cheaper SQS clocks, routing and event targets, and SQS deletes that lose no message.

The patches apply to the local stack's moto server, moto 5.2.5.

A profile (py-spy) of moto while the gateway ingests shows three costs that grow with the work
instead of with the requests:

- SQS: every receive checks each message's visibility and delay, and each check reads the
  clock through ``moto.core.utils.unix_time_millis``, which builds two ``datetime`` objects.
  The retention check of each received message also computes every queue attribute, and
  three of them (the approximate message counts) scan all messages of the queue. This patch
  reads the clock with ``time.time()``, which is the same POSIX time without the objects, and
  reads the retention period from the queue itself.
- EventBridge: every event delivered to a rule's target fills the target's input template
  through eight JSON paths, and jsonpath-ng builds a new parser (with its parser tables) for
  each path of each event: 19% of moto's CPU while ingest announced new instances. This patch
  keeps each parsed path, which the template then only reads.
- Routing: moto's server lists its own package folder (``os.listdir`` and an ``isdir`` per
  service, about 200) for every request, under a lock, to know the service names. This patch
  lists the folder once.
- Dispatch: before it runs an action, moto lists every function of the service's response
  class with ``inspect.getmembers`` to check that the action is one of them, for every
  request: 7% of moto's CPU while the local stack served QIDO-RS searches. This patch
  keeps each class's list. moto adds no function to those classes after import.

- Names: moto converts attribute and action names from CamelCase to snake_case with
  ``camelcase_to_underscores``, about 6 µs a name, on every request. SQS's
  ``Queue.attributes``, which every sent message reads for one attribute, converts 14 names:
  56 µs per message, 4.7 µs with each name's conversion kept. The conversion is a function
  of the name alone, so this patch keeps its results.

One more SQS patch fixes lost messages rather than a cost. ``Queue.delete_message`` copies
the queue's message list without the message lock and then replaces the list with the copy.
A message that a concurrent send appended in between is lost, and two deletes at once can
bring back a deleted message. With 4 senders and 4 deleters on a backlog of 5,000, moto lost
27 of 9,000 messages in 94 s. In ``bench/soak.py`` 4 of 10,000 stored instances were never
indexed, as a lost notification leaves them. The patch runs each delete under the lock that
a send holds.

Applied only in the moto child process that ``cirrus.local.moto_process`` starts.
"""

from __future__ import annotations

import datetime
import functools
import time
from typing import Any

import jsonpath_ng.ext
from moto import backends
from moto.core import responses as core_responses
from moto.core import utils as core_utils
from moto.sqs import models as sqs_models


def _unix_time(dt: datetime.datetime | None = None) -> float:
    return time.time() if dt is None else core_utils.unix_time(dt)


def _unix_time_millis(dt: datetime.datetime | None = None) -> float:
    return _unix_time(dt) * 1000.0


def _message_within_retention(self: Any, queue_name: str, message: Any) -> bool:
    queue = self.get_queue(queue_name)
    retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
    return bool(retain_until > time.time())


_original_delete_message = sqs_models.Queue.delete_message


def locked_delete_message(self: Any, receipt_handle: str) -> None:
    """Delete a message as moto does, holding the lock that a send holds."""
    # The queue's lock is the Condition that add_message holds while it appends a message.
    with self._messages_lock:
        _original_delete_message(self, receipt_handle)


# moto's names are a few hundred, so the bound only guards against callers that pass data.
underscored_name = functools.lru_cache(maxsize=4096)(core_utils.camelcase_to_underscores)


def apply() -> None:
    """Install the patches in this process."""
    # sqs.models imported both functions by name, so they are replaced in its namespace.
    sqs_models.unix_time = _unix_time  # type: ignore[attr-defined]
    sqs_models.unix_time_millis = _unix_time_millis  # type: ignore[attr-defined]
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        _message_within_retention
    )
    sqs_models.Queue.delete_message = locked_delete_message  # type: ignore[method-assign]
    # moto's event template imports ``parse`` from the module at each call.
    parse = functools.lru_cache(maxsize=256)(jsonpath_ng.ext.parse)  # type: ignore[attr-defined]
    jsonpath_ng.ext.parse = parse  # type: ignore[attr-defined]
    # core.responses imported the function by name.
    method_names = functools.cache(core_utils.method_names_from_class)
    core_responses.method_names_from_class = method_names  # type: ignore[attr-defined]
    # sqs.models and core.responses imported the function by name.
    sqs_models.camelcase_to_underscores = underscored_name  # type: ignore[attr-defined]
    core_responses.camelcase_to_underscores = underscored_name  # type: ignore[attr-defined]
    service_names = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: service_names
