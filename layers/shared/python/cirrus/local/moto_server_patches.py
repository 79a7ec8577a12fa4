"""Cheaper SQS clocks and request routing for the local stack's moto server (moto 5.2.5).

A profile (py-spy) of moto while the gateway ingests shows two costs that grow with the work
instead of with the requests:

- SQS: every receive checks each message's visibility and delay, and each check reads the
  clock through ``moto.core.utils.unix_time_millis``, which builds two ``datetime`` objects.
  The retention check of each received message also computes every queue attribute, and
  three of them (the approximate message counts) scan all messages of the queue. This patch
  reads the clock with ``time.time()``, which is the same POSIX time without the objects, and
  reads the retention period from the queue itself.
- Routing: moto's server lists its own package folder (``os.listdir`` and an ``isdir`` per
  service, about 200) for every request, under a lock, to know the service names. This patch
  lists the folder once.

Applied only in the moto child process that ``cirrus.local.moto_process`` starts.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from moto import backends
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


def apply() -> None:
    """Install the patches in this process."""
    # sqs.models imported both functions by name, so they are replaced in its namespace.
    sqs_models.unix_time = _unix_time  # type: ignore[attr-defined]
    sqs_models.unix_time_millis = _unix_time_millis  # type: ignore[attr-defined]
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        _message_within_retention
    )
    service_names = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: service_names
