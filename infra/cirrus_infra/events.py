"""Events of one deployment: the event bus, the change feed's table and StudyStable.

- The custom event bus ``{deployment}-events`` is encrypted with the data key and archives
  every Cirrus event for ``ARCHIVE_RETENTION``, so a consumer that was down can replay them.
- The changes table contains each site's change feed and the arrival record of each study
  (``cirrus.events.tables``), encrypted with the data key, with point-in-time recovery and in
  the backup plan.
- The stable queue carries the delayed StudyStable checks, which the stable function runs.
  A check that keeps failing moves to the stable dead-letter queue, which has an alarm.
- Ingest, DICOMweb and the gateway may PutEvents on this bus and no other; ingest and DICOMweb
  write the feed in their index transactions, and ingest queues the first check of a study.
- A metric filter on the functions' and the gateway's logs counts the events that were not
  sent after their retries, with an alarm.
- GET /changes needs no resource of its own: the DICOMweb API's IAM-authorized ``{proxy+}``
  method passes it to the DICOMweb function like every other path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_backup as backup
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cirrus.config import DEFAULT_STABLE_AFTER_SECONDS, ENV, ResourceNames
from cirrus.events.model import SOURCE
from cirrus_infra.lambdas import (
    WILDCARD_RESOURCE_REASON,
    FunctionSettings,
    acknowledge_runtime,
    acknowledge_wildcards,
    create_function,
    data_key_statement,
    encrypted_log_group,
    function_role,
    settings_environment,
)
from cirrus_infra.layers import Layers
from cirrus_infra.network import Network
from cirrus_infra.storage import Storage

SERVICE: Final = "cirrus-stable"
# Context key of the quiet period: `cdk synth -c stable-after-seconds=300`.
STABLE_AFTER_CONTEXT_KEY: Final = "stable-after-seconds"
ARCHIVE_RETENTION: Final = Duration.days(30)
STABLE_MAX_RECEIVES: Final = 5
DEAD_LETTER_RETENTION: Final = Duration.days(14)
# A check reads two items and writes one, so a few retries after conflicts fit easily.
FUNCTION_TIMEOUT: Final = Duration.seconds(30)
# AWS recommends a queue visibility timeout of at least 6 times the consumer's timeout.
STABLE_VISIBILITY_TIMEOUT: Final = Duration.seconds(6 * 30)
FUNCTION_MEMORY_MB: Final = 256
CONCURRENCY: Final = 2
ALARM_PERIOD: Final = Duration.minutes(5)
UNSENT_METRIC: Final = "EventsNotSent"
# The JSON logs of the functions and the gateway carry the message as ``message``.
UNSENT_PATTERN: Final = '{ $.message = "event not sent*" }'
# The changes table: the feed counter and entries, and the arrival records.
FEED_WRITER_ACTIONS: Final = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
FEED_READER_ACTIONS: Final = ("dynamodb:GetItem", "dynamodb:Query")


class Events(Construct):
    """The event bus with its archive, the changes table, the stable queues and function."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        names: ResourceNames,
        storage: Storage,
        network: Network,
        layers: Layers,
        stable_after_seconds: int = DEFAULT_STABLE_AFTER_SECONDS,
    ) -> None:
        super().__init__(scope, construct_id)
        self.names = names
        self.storage = storage
        self.stable_after_seconds = stable_after_seconds
        self.bus = events.EventBus(self, "Bus", event_bus_name=names.event_bus, kms_key=storage.key)
        # NOTE: the archive is encrypted with an AWS owned key. Giving it the data key makes the
        # key policy refer to the bus and the bus to the key, a cycle (CDK 2.275).
        self.archive = self.bus.archive(
            "Archive",
            archive_name=f"{names.deployment}-events",
            description="Every Cirrus event, for replay to a consumer that missed some",
            event_pattern=events.EventPattern(source=[SOURCE]),
            retention=ARCHIVE_RETENTION,
        )
        self.table = self._table(names, storage)
        selection = storage.backup_plan.add_selection(
            "Changes", resources=[backup.BackupResource.from_dynamo_db_table(self.table)]
        )
        Validations.of(selection).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                "service-role/AWSBackupServiceRolePolicyForBackup]",
                reason="AWS Backup's service role policy is maintained by AWS for the actions "
                "that backing up each resource type needs, and the role only backs up.",
            )
        )
        self.dead_letter_queue, self.queue = self._queues(names, storage)
        self.log_group = encrypted_log_group(self, "FunctionLogs", storage.key)
        self.role, self.policy = function_role(
            self,
            "FunctionRole",
            description="Cirrus StudyStable function",
            log_group=self.log_group,
            statements=self._statements(storage),
        )
        self.function = create_function(
            self,
            "Function",
            settings=FunctionSettings(
                package="stable",
                service=SERVICE,
                memory_mb=FUNCTION_MEMORY_MB,
                timeout=FUNCTION_TIMEOUT,
                reserved_concurrency=CONCURRENCY,
                environment={**settings_environment(names, storage), **self.environment},
            ),
            layers=layers,
            network=network,
            role=self.role,
            log_group=self.log_group,
            dead_letter_queue=self.dead_letter_queue,
        )
        self.function.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=10,
                report_batch_item_failures=True,
                max_concurrency=CONCURRENCY,
            )
        )
        acknowledge_wildcards(self.policy, {"Resource::*": WILDCARD_RESOURCE_REASON})
        acknowledge_runtime(self.function)

    @property
    def environment(self) -> dict[str, str]:
        """The settings of events and the feed, for every process that sends or writes them."""
        return {
            ENV["changes_table"]: self.table.table_name,
            ENV["event_bus"]: self.bus.event_bus_name,
            ENV["stable_queue"]: self.queue.queue_name,
            ENV["stable_after_seconds"]: str(self.stable_after_seconds),
        }

    def _table(self, names: ResourceNames, storage: Storage) -> dynamodb.Table:
        return dynamodb.Table(
            self,
            "Changes",
            table_name=names.changes_table,
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.NUMBER),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=storage.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _queues(self, names: ResourceNames, storage: Storage) -> tuple[sqs.Queue, sqs.Queue]:
        dead_letter_queue = sqs.Queue(
            self,
            "StableDeadLetterQueue",
            queue_name=names.stable_dead_letter_queue,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=storage.key,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
        )
        queue = sqs.Queue(
            self,
            "StableQueue",
            queue_name=names.stable_queue,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=storage.key,
            enforce_ssl=True,
            visibility_timeout=STABLE_VISIBILITY_TIMEOUT,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=dead_letter_queue, max_receive_count=STABLE_MAX_RECEIVES
            ),
        )
        return dead_letter_queue, queue

    def put_events_statement(self) -> iam.PolicyStatement:
        """Allow PutEvents on this bus only. The caller needs no KMS grant for the bus's key:
        EventBridge uses the key itself, as the key policy allows it for this bus."""
        return iam.PolicyStatement(actions=["events:PutEvents"], resources=[self.bus.event_bus_arn])

    def _statements(self, storage: Storage) -> list[iam.PolicyStatement]:
        return [
            # Arrival records: read, and cleared when the study is stable.
            iam.PolicyStatement(
                actions=["dynamodb:GetItem", "dynamodb:UpdateItem"],
                resources=[self.table.table_arn],
            ),
            # The study record's counts for the StudyStable detail.
            iam.PolicyStatement(actions=["dynamodb:GetItem"], resources=[storage.table.table_arn]),
            iam.PolicyStatement(
                actions=[
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    # A check that comes too early is queued again.
                    "sqs:GetQueueUrl",
                    "sqs:SendMessage",
                ],
                resources=[self.queue.queue_arn],
            ),
            iam.PolicyStatement(
                actions=["sqs:SendMessage"], resources=[self.dead_letter_queue.queue_arn]
            ),
            self.put_events_statement(),
            data_key_statement(self, storage.key, ["sqs", "dynamodb"]),
        ]

    def connect_ingest(self, function: lambda_.Function, policy: iam.ManagedPolicy) -> None:
        """Let ingest write the feed, record arrivals, queue the first checks and send events."""
        policy.add_statements(
            iam.PolicyStatement(
                actions=list(FEED_WRITER_ACTIONS), resources=[self.table.table_arn]
            ),
            iam.PolicyStatement(
                actions=["sqs:GetQueueUrl", "sqs:SendMessage"], resources=[self.queue.queue_arn]
            ),
            self.put_events_statement(),
        )
        self._set_environment(function)

    def connect_dicomweb(self, function: lambda_.Function, policy: iam.ManagedPolicy) -> None:
        """Let DICOMweb read the feed, write its deleted changes and send events."""
        actions = sorted({*FEED_WRITER_ACTIONS, *FEED_READER_ACTIONS})
        policy.add_statements(
            iam.PolicyStatement(actions=actions, resources=[self.table.table_arn]),
            self.put_events_statement(),
        )
        self._set_environment(function)

    def connect_retention(self, function: lambda_.Function, policy: iam.ManagedPolicy) -> None:
        """Let retention write its deleted changes and send InstanceDeleted, as DELETE does."""
        policy.add_statements(
            iam.PolicyStatement(
                actions=list(FEED_WRITER_ACTIONS), resources=[self.table.table_arn]
            ),
            self.put_events_statement(),
        )
        self._set_environment(function)

    def connect_gateway(self, policy: iam.ManagedPolicy) -> None:
        """Let the gateway send InstanceRejected; its settings name the bus by default."""
        policy.add_statements(
            self.put_events_statement(),
        )

    def _set_environment(self, function: lambda_.Function) -> None:
        for name, value in self.environment.items():
            function.add_environment(name, value)

    def add_alarms(self, topic: sns.ITopic, log_groups: Sequence[logs.ILogGroup]) -> None:
        """Alarm on checks in the dead-letter queue and on events not sent after retries."""
        action = cloudwatch_actions.SnsAction(topic)
        deployment = self.names.deployment
        dead_letters = self.dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=ALARM_PERIOD, statistic="Maximum"
        )
        namespace = f"Cirrus/{deployment}"
        for index, group in enumerate(log_groups):
            logs.MetricFilter(
                self,
                f"UnsentEvents{index}",
                log_group=group,
                filter_pattern=logs.FilterPattern.literal(UNSENT_PATTERN),
                metric_namespace=namespace,
                metric_name=UNSENT_METRIC,
                metric_value="1",
                default_value=0,
            )
        unsent = cloudwatch.Metric(
            namespace=namespace, metric_name=UNSENT_METRIC, period=ALARM_PERIOD, statistic="Sum"
        )
        alarms = (
            ("StableDeadLetterAlarm", "stable-dead-letters", dead_letters,
             "StudyStable checks failed every receive and wait in the stable dead-letter queue. "
             "Read the stable function's logs, fix the cause, then redrive the queue."),
            ("UnsentEventsAlarm", "events-not-sent", unsent,
             "Cirrus events were not sent to the event bus after their retries. Consumers that "
             "missed them catch up from the change feed or the bus's archive."),
        )  # fmt: skip
        for construct_id, name, metric, description in alarms:
            alarm = cloudwatch.Alarm(
                self,
                construct_id,
                alarm_name=f"{deployment}-{name}",
                alarm_description=description,
                metric=metric,
                threshold=0,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
