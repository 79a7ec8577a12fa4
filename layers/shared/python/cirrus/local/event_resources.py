"""Creates on moto the resources of events and the change feed that the CDK stack defines.

Besides the resources of the CDK stack (the changes table, the event bus, the stable queue and
its dead-letter queue), the local stack has a rule that sends every Cirrus event on the bus to
the journal queue. The stack drains that queue into a file of the data folder
(``cirrus.local.event_journal``).
"""

from __future__ import annotations

import json
from typing import Any, Final

from cirrus.aws import AwsClients
from cirrus.config import ResourceNames, Settings
from cirrus.events.model import SOURCE
from cirrus.events.tables import bind_change_model

JOURNAL_RULE: Final = "cirrus-events-journal"
# The stable checker may take a message a few times while DynamoDB conflicts.
STABLE_VISIBILITY_TIMEOUT_SECONDS: Final = 60


def journal_queue_name(settings: Settings) -> str:
    return f"{settings.deployment}-events-journal"


def create_event_resources(clients: AwsClients, settings: Settings) -> None:
    """Create the changes table, the bus, its journal rule and queue, and the stable queues."""
    model = bind_change_model(settings)
    if model is not None and not model.exists():
        model.create_table(wait=True, billing_mode="PAY_PER_REQUEST")
    if settings.stable_queue:
        _create_stable_queues(clients.sqs, settings)
    if settings.event_bus:
        _create_bus(clients, settings)


def _queue_arn(sqs: Any, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


def _create_stable_queues(sqs: Any, settings: Settings) -> None:
    names = ResourceNames(settings.deployment)
    dlq_url = sqs.create_queue(
        QueueName=names.stable_dead_letter_queue,
        Attributes={"KmsMasterKeyId": settings.kms_key_id, "MessageRetentionPeriod": "1209600"},
    )["QueueUrl"]
    redrive = {"deadLetterTargetArn": _queue_arn(sqs, dlq_url), "maxReceiveCount": "5"}
    sqs.create_queue(
        QueueName=str(settings.stable_queue),
        Attributes={
            "KmsMasterKeyId": settings.kms_key_id,
            "VisibilityTimeout": str(STABLE_VISIBILITY_TIMEOUT_SECONDS),
            "RedrivePolicy": json.dumps(redrive),
        },
    )


def _create_bus(clients: AwsClients, settings: Settings) -> None:
    events, sqs = clients.events, clients.sqs
    bus = str(settings.event_bus)
    existing = {entry["Name"] for entry in events.list_event_buses().get("EventBuses", [])}
    if bus not in existing:
        events.create_event_bus(Name=bus)
    queue_url = sqs.create_queue(
        QueueName=journal_queue_name(settings),
        Attributes={"KmsMasterKeyId": settings.kms_key_id},
    )["QueueUrl"]
    events.put_rule(
        Name=JOURNAL_RULE, EventBusName=bus, EventPattern=json.dumps({"source": [SOURCE]})
    )
    events.put_targets(
        Rule=JOURNAL_RULE,
        EventBusName=bus,
        Targets=[{"Id": "journal", "Arn": _queue_arn(sqs, queue_url)}],
    )
