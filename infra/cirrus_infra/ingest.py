"""The ingest function of one deployment: it indexes what the ingest queue announces.

The queue carries the S3 notifications of new instance objects and the delayed metadata
refresh requests that ingest sends itself (``functions/ingest/handler.py``). An SQS event
source hands it batches and deletes only the messages that the handler does not report as
failed. A message that fails ``INGEST_MAX_RECEIVES`` times moves to the dead-letter queue by
the queue's redrive policy.
"""

from __future__ import annotations

from typing import Final

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as event_sources
from constructs import Construct

from cirrus.config import ResourceNames
from cirrus_infra.lambdas import (
    WILDCARD_RESOURCE_REASON,
    FunctionSettings,
    acknowledge_runtime,
    acknowledge_wildcards,
    create_function,
    data_key_statement,
    encrypted_log_group,
    function_role,
    logical_id,
    settings_environment,
)
from cirrus_infra.layers import Layers
from cirrus_infra.network import Network
from cirrus_infra.storage import INGEST_PREFIX, INGEST_VISIBILITY_TIMEOUT, Storage

SERVICE: Final = "cirrus-ingest"
BATCH_SIZE: Final = 10
# Lambda waits up to this long to fill a batch. S3 notifies each object of a series on its
# own, and the handler indexes the new instances of one series in a batch with one
# transaction. So a series that arrives at 10 or more instances per second costs one
# transaction per 10 instances instead of one per instance. An instance waits at most this
# much longer before QIDO-RS lists it.
MAX_BATCHING_WINDOW: Final = Duration.seconds(1)
# Concurrent invocations that index one study all update its study record, so they conflict.
# IndexWriter makes at most 4 attempts at a write that loses to a concurrent one
# (``_ATTEMPTS`` in cirrus.index.writer), and a transaction conflict fails the message at
# once, so that it is received again. If one writer wins each round, 4 invocations never
# exhaust the attempts, and more would add conflicts, retries and dead letters rather than
# throughput on a study. That is reasoning, not a measurement. A backlog only delays QIDO-RS
# listings, because the queue keeps messages 4 days (INGEST_RETENTION) and the queue-age
# alarm reports a slow drain.
CONCURRENCY: Final = 4
# AWS recommends a queue visibility timeout of at least 6 times the consumer's timeout.
FUNCTION_TIMEOUT: Final = Duration.seconds(int(INGEST_VISIBILITY_TIMEOUT.to_seconds()) // 6)
# A header takes one to a few ranged GETs of 64 KiB. The largest working set is a refresh
# request, which builds the metadata bundle of a study in memory. The memory size also sets
# the CPU share that parsing gets.
FUNCTION_MEMORY_MB: Final = 1024
QUEUE_ACTIONS: Final = (
    # The event source mapping polls and deletes with the function's role.
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    # The handler sends metadata refresh requests to the same queue.
    "sqs:GetQueueUrl",
    "sqs:SendMessage",
)
TABLE_ACTIONS: Final = (
    "dynamodb:GetItem",
    "dynamodb:Query",
    # Also what a TransactWriteItems request needs for each item it writes.
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
)


class IngestFunction(Construct):
    """The ingest function with its role, log group and SQS event source."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        names: ResourceNames,
        storage: Storage,
        network: Network,
        layers: Layers,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = encrypted_log_group(self, "FunctionLogs", storage.key)
        self.role, self.policy = function_role(
            self,
            "FunctionRole",
            description="Cirrus ingest function",
            log_group=self.log_group,
            statements=self._statements(storage),
        )
        settings = FunctionSettings(
            package="ingest",
            service=SERVICE,
            memory_mb=FUNCTION_MEMORY_MB,
            timeout=FUNCTION_TIMEOUT,
            reserved_concurrency=CONCURRENCY,
            environment=settings_environment(names, storage),
        )

        # Lambda sends the event of a failed asynchronous invocation to the dead-letter queue.
        # The event source invokes synchronously, so only a manual asynchronous invocation
        # ends there, next to the messages that the redrive policy moves.
        self.function = create_function(
            self,
            "Function",
            settings=settings,
            layers=layers,
            network=network,
            role=self.role,
            log_group=self.log_group,
            dead_letter_queue=storage.dead_letter_queue,
        )

        # The mapping's maximum concurrency keeps the pollers within the reserved concurrency:
        # a throttled batch goes back to the queue and counts as a receive, so throttling
        # would move messages to the dead-letter queue without an error of their own.
        self.event_source = event_sources.SqsEventSource(
            storage.ingest_queue,
            batch_size=BATCH_SIZE,
            max_batching_window=MAX_BATCHING_WINDOW,
            report_batch_item_failures=True,
            max_concurrency=CONCURRENCY,
        )
        self.function.add_event_source(self.event_source)
        self._acknowledge(storage)

    def _statements(self, storage: Storage) -> list[iam.PolicyStatement]:
        bucket = storage.bucket.bucket_arn
        return [
            # Instance headers, metadata sidecars, metadata bundles and the base URL lists.
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject"], resources=[f"{bucket}/{INGEST_PREFIX}*"]
            ),
            # Without ListBucket, S3 returns 403 instead of 404 for a GET of a missing key, so
            # a bundle or base URL list that does not exist yet would look like a failure.
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket]),
            iam.PolicyStatement(actions=list(TABLE_ACTIONS), resources=[storage.table.table_arn]),
            iam.PolicyStatement(
                actions=list(QUEUE_ACTIONS), resources=[storage.ingest_queue.queue_arn]
            ),
            iam.PolicyStatement(
                actions=["sqs:SendMessage"], resources=[storage.dead_letter_queue.queue_arn]
            ),
            data_key_statement(self, storage.key, ["s3", "sqs", "dynamodb"]),
        ]

    def _acknowledge(self, storage: Storage) -> None:
        bucket = logical_id(storage.bucket)
        reasons = {
            f"Resource::<{bucket}.Arn>/{INGEST_PREFIX}*": "Instance keys are made from the UIDs "
            "of each stored instance, and bundle keys from those of its study and series.",
            "Resource::*": WILDCARD_RESOURCE_REASON,
        }
        acknowledge_wildcards(self.policy, reasons)
        acknowledge_runtime(self.function)
