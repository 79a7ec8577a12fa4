"""An ingest worker in a process of its own, which a test can kill with SIGKILL.

Run as ``python -m tests.integration.ingest_worker``. It reads the deployment from the CIRRUS_*
environment variables and runs the local queue poller with the real ingest handler, one batch
at a time, until it is killed.
"""

from __future__ import annotations

import functools
import threading

from cirrus.config import Settings
from cirrus.local.poller import IngestPoller
from cirrus.services import Services
from functions.ingest import handler as ingest_handler


def main() -> None:
    services = Services(Settings.from_env())
    sqs = services.clients.sqs
    url = sqs.get_queue_url(QueueName=services.settings.ingest_queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    handle = functools.partial(ingest_handler.handle, services=services)
    poller = IngestPoller(
        sqs, url, arn, services.settings.region, handle, retry_delays=(0, 0, 0), concurrency=1
    )
    poller.start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
