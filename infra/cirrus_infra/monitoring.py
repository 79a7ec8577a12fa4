"""Alarms and the CloudWatch dashboard of one deployment.

Every alarm notifies the alarm topic when it enters ALARM and again when it returns to OK.
The topic has no subscribers: operators subscribe an email address or a chat integration
after deployment. ``Monitoring`` watches the ingest queues and the DICOMweb API itself, and
the components that own a Lambda function or the gateway service call ``add_function`` and
``add_gateway``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

from cirrus.config import INGEST_MAX_RECEIVES, ResourceNames
from cirrus.gateway.metrics import DEFAULT_NAMESPACE, SERVICE
from cirrus_infra.function_metrics import function_metric_widgets
from cirrus_infra.storage import INGEST_VISIBILITY_TIMEOUT, Storage

# Period of the alarms on queues, the API and functions. The load balancer reports every
# minute, so the gateway alarms use GATEWAY_PERIOD.
ALARM_PERIOD: Final = Duration.minutes(5)
GATEWAY_PERIOD: Final = Duration.minutes(1)
# Consecutive GATEWAY_PERIOD datapoints before a gateway alarm fires, so that a task replaced
# during a deployment does not page.
GATEWAY_EVALUATION_PERIODS: Final = 3

# Fraction of DICOMweb requests that fail with 5xx, over two consecutive periods.
# NOTE: with few requests a single error is a large fraction, so quiet hours can alarm on one.
API_SERVER_ERROR_RATE: Final = 0.05

# An ingest message is received at most INGEST_MAX_RECEIVES times, each after the visibility
# timeout, before it moves to the dead-letter queue. A message older than that is waiting for
# a consumer, not for a retry.
INGEST_AGE_THRESHOLD_SECONDS: Final = INGEST_MAX_RECEIVES * INGEST_VISIBILITY_TIMEOUT.to_seconds()

# The EMF metrics of cirrus.gateway.metrics: counts since the last flush, values at the
# flush, and failure responses by DIMSE status (with the extra dimension Status).
GATEWAY_ASSOCIATION_METRICS: Final = (
    "AssociationsAccepted",
    "AssociationsRejected",
    "AssociationsAborted",
)
GATEWAY_GAUGE_METRICS: Final = ("ActiveAssociations", "SpoolBytes")
GATEWAY_FAILURE_METRICS: Final = (
    "StoreFailures",
    "FindFailures",
    "MoveFailures",
    "GetFailures",
    "CommitmentFailures",
)

_COMPONENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_WIDGET_WIDTH = 8


class Monitoring(Construct):
    """The alarm topic and its key, the alarms, and the dashboard."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        names: ResourceNames,
        storage: Storage,
        api: apigateway.RestApi,
    ) -> None:
        super().__init__(scope, construct_id)
        self.names = names
        self.alarms: list[cloudwatch.Alarm] = []
        self.key = self._topic_key(names)
        self.topic = self._topic(names)
        self._action = cloudwatch_actions.SnsAction(self.topic)
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{names.deployment}-{Stack.of(self).region}",
            default_interval=Duration.hours(6),
        )
        self._watch_ingest(storage)
        self._watch_api(api)
        self.dashboard.add_widgets(*function_metric_widgets(names.deployment, ALARM_PERIOD))

    # Topic

    def _topic_key(self, names: ResourceNames) -> kms.Key:
        # A key of its own rather than the data key: CloudWatch must be allowed to use the
        # topic's key, and the data key that protects PHI should not name another service.
        # The topic stores no messages, so the key can go with the stack.
        key = kms.Key(
            self,
            "AlarmTopicKey",
            alias=f"alias/{names.deployment}-alarms",
            description=f"Cirrus {names.deployment}: alarm notifications",
            enable_key_rotation=True,
            pending_window=Duration.days(7),
            removal_policy=RemovalPolicy.DESTROY,
        )
        # CloudWatch publishes to an encrypted topic only if the key policy lets it.
        # NOTE: no aws:SourceArn condition, because it is not verified that CloudWatch sends one
        # with these KMS requests. The topic policy limits publishers to this account's alarms.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarms",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        return key

    def _topic(self, names: ResourceNames) -> sns.Topic:
        topic = sns.Topic(
            self,
            "AlarmTopic",
            topic_name=f"{names.deployment}-alarms",
            display_name=f"Cirrus {names.deployment} alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        stack = Stack.of(self)
        alarms_of_this_account = stack.format_arn(
            service="cloudwatch",
            resource="alarm",
            resource_name="*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarms",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions={
                    "ArnLike": {"aws:SourceArn": alarms_of_this_account},
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            )
        )
        return topic

    def _alarm(
        self,
        construct_id: str,
        *,
        name: str,
        description: str,
        metric: cloudwatch.IMetric,
        threshold: float,
        comparison: cloudwatch.ComparisonOperator,
        evaluation_periods: int = 1,
        treat_missing_data: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        """Create an alarm that notifies the topic on ALARM and on OK."""
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_name=f"{self.names.deployment}-{name}",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=evaluation_periods,
            treat_missing_data=treat_missing_data,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms.append(alarm)
        return alarm

    # Storage and API

    def _watch_ingest(self, storage: Storage) -> None:
        dead_letters = storage.dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=ALARM_PERIOD, statistic="Maximum", label="Messages in the dead-letter queue"
        )
        dead_letter_alarm = self._alarm(
            "DeadLetterQueueAlarm",
            name="ingest-dead-letters",
            description="Ingest messages failed every receive and wait in the dead-letter "
            "queue. Read the ingest function's logs, fix the cause, then redrive the queue.",
            metric=dead_letters,
            threshold=0,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )
        age = storage.ingest_queue.metric_approximate_age_of_oldest_message(
            period=ALARM_PERIOD, statistic="Maximum", label="Age of the oldest message (s)"
        )
        age_alarm = self._alarm(
            "IngestAgeAlarm",
            name="ingest-queue-age",
            description="Ingest messages wait longer than their retries take, so the ingest "
            "function is not consuming the queue. Check its errors, throttles and event "
            "source mapping.",
            metric=age,
            threshold=INGEST_AGE_THRESHOLD_SECONDS,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=2,
        )
        queue = storage.ingest_queue
        self.dashboard.add_widgets(
            _graph("Ingest dead-letter queue", [dead_letters], dead_letter_alarm),
            _graph("Ingest queue age", [age], age_alarm),
            _graph(
                "Ingest queue messages",
                [
                    queue.metric_number_of_messages_sent(period=ALARM_PERIOD, statistic="Sum"),
                    queue.metric_number_of_messages_deleted(period=ALARM_PERIOD, statistic="Sum"),
                    queue.metric_approximate_number_of_messages_visible(
                        period=ALARM_PERIOD, statistic="Maximum"
                    ),
                ],
            ),
        )

    def _watch_api(self, api: apigateway.RestApi) -> None:
        # 5XXError is 1 for each request that fails with 5xx and 0 otherwise, so its average is
        # the fraction of failed requests.
        server_errors = api.metric_server_error(
            period=ALARM_PERIOD, statistic="Average", label="5xx fraction"
        )
        server_error_alarm = self._alarm(
            "ApiServerErrorAlarm",
            name="dicomweb-5xx-rate",
            description=f"More than {API_SERVER_ERROR_RATE:.0%} of DICOMweb requests failed "
            "with 5xx in two periods in a row. Check the DICOMweb function's errors and "
            "logs; 504 means the integration timed out.",
            metric=server_errors,
            threshold=API_SERVER_ERROR_RATE,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=2,
        )
        self.dashboard.add_widgets(
            _graph(
                "DICOMweb error fractions",
                [
                    server_errors,
                    api.metric_client_error(
                        period=ALARM_PERIOD, statistic="Average", label="4xx fraction"
                    ),
                ],
                server_error_alarm,
            ),
            _graph(
                "DICOMweb requests",
                [api.metric_count(period=ALARM_PERIOD, statistic="Sum", label="Requests")],
            ),
            _graph(
                "DICOMweb latency (ms)",
                [
                    api.metric_latency(period=ALARM_PERIOD, statistic="p50", label="p50"),
                    api.metric_latency(period=ALARM_PERIOD, statistic="p99", label="p99"),
                    api.metric_integration_latency(
                        period=ALARM_PERIOD, statistic="p99", label="Integration p99"
                    ),
                ],
            ),
        )

    # Components

    def add_function(self, function: lambda_.IFunction, name: str) -> None:
        """Alarm on any error or throttle of ``function`` and chart it under ``name``.

        ``name`` (letters, digits and '-') appears in the alarm names and construct ids, so
        each function needs its own.
        """
        _check_component_name(name)
        errors = function.metric_errors(period=ALARM_PERIOD, statistic="Sum", label="Errors")
        throttles = function.metric_throttles(
            period=ALARM_PERIOD, statistic="Sum", label="Throttles"
        )
        error_alarm = self._alarm(
            f"Function-{name}-Errors",
            name=f"{name}-errors",
            description=f"The {name} function failed. Read its log group for the error.",
            metric=errors,
            threshold=0,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )
        self._alarm(
            f"Function-{name}-Throttles",
            name=f"{name}-throttles",
            description=f"Lambda throttled the {name} function: its reserved concurrency or "
            "the account's concurrency limit is reached.",
            metric=throttles,
            threshold=0,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )
        self.dashboard.add_widgets(
            _graph(f"{name} function errors and throttles", [errors, throttles], error_alarm),
            _graph(
                f"{name} function invocations",
                [function.metric_invocations(period=ALARM_PERIOD, statistic="Sum")],
            ),
            _graph(
                f"{name} function duration (ms)",
                [
                    function.metric_duration(period=ALARM_PERIOD, statistic="p50", label="p50"),
                    function.metric_duration(period=ALARM_PERIOD, statistic="p99", label="p99"),
                ],
            ),
        )

    def add_gateway(
        self,
        service: ecs.BaseService,
        target_group: elbv2.NetworkTargetGroup,
        *,
        desired_count: int | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        """Alarm on the gateway's target health and chart the service and its EMF metrics.

        ``desired_count`` defaults to the service's DesiredCount. Pass it when the service
        scales, as the number of healthy tasks below which to alarm. ``namespace`` must match
        the gateway's ``CIRRUS_METRICS_NAMESPACE``. Call this once: the alarms have fixed names.
        """
        desired = _desired_count(service) if desired_count is None else desired_count
        if desired < 1:
            raise ValueError(f"gateway desired count {desired} must be at least 1")
        healthy = target_group.metrics.healthy_host_count(
            period=GATEWAY_PERIOD, statistic="Minimum", label="Healthy targets"
        )
        unhealthy = target_group.metrics.un_healthy_host_count(
            period=GATEWAY_PERIOD, statistic="Maximum", label="Unhealthy targets"
        )
        # Missing datapoints count as breaching, because then no healthy target is reported.
        # NOTE: NLBs also report HealthyHostCount per Availability Zone. It was not checked on
        # AWS that the Minimum without the zone dimension counts the targets of all zones.
        healthy_alarm = self._alarm(
            "GatewayHealthyHostsAlarm",
            name="gateway-healthy-hosts",
            description=f"Fewer than {desired} gateway tasks pass the load balancer's health "
            "check. Check the ECS service's events and the gateway's logs.",
            metric=healthy,
            threshold=desired,
            comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=GATEWAY_EVALUATION_PERIODS,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        unhealthy_alarm = self._alarm(
            "GatewayUnhealthyHostsAlarm",
            name="gateway-unhealthy-hosts",
            description="A gateway task fails the load balancer's health check. Check the "
            "gateway's logs and its /health endpoint.",
            metric=unhealthy,
            threshold=0,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=GATEWAY_EVALUATION_PERIODS,
        )
        self.dashboard.add_widgets(
            _graph("Gateway healthy targets", [healthy], healthy_alarm),
            _graph("Gateway unhealthy targets", [unhealthy], unhealthy_alarm),
            _graph(
                "Gateway CPU and memory (%)",
                [
                    service.metric_cpu_utilization(period=ALARM_PERIOD, label="CPU"),
                    service.metric_memory_utilization(period=ALARM_PERIOD, label="Memory"),
                ],
            ),
        )
        self._chart_gateway_metrics(namespace)

    def _chart_gateway_metrics(self, namespace: str) -> None:
        dimensions = {"Deployment": self.names.deployment, "service": SERVICE}

        def emf(metric_name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=namespace,
                metric_name=metric_name,
                dimensions_map=dimensions,
                statistic=statistic,
                period=ALARM_PERIOD,
            )

        # Each failure metric has one series per DIMSE status, so a search finds them all.
        failures = [
            cloudwatch.MathExpression(
                expression=(
                    f"SEARCH('{{{namespace},Deployment,Status,service}} "
                    f'MetricName="{metric_name}" Deployment="{self.names.deployment}"\', '
                    f"'Sum', {int(ALARM_PERIOD.to_seconds())})"
                ),
                using_metrics={},
                label=f"{metric_name} ${{PROP('Dim.Status')}}",
                period=ALARM_PERIOD,
            )
            for metric_name in GATEWAY_FAILURE_METRICS
        ]
        self.dashboard.add_widgets(
            _graph(
                "Gateway associations",
                [emf(metric_name, "Sum") for metric_name in GATEWAY_ASSOCIATION_METRICS],
            ),
            _graph(
                "Gateway stored instances and bytes",
                [emf("InstancesStored", "Sum")],
                right=[emf("StoredBytes", "Sum")],
            ),
            _graph(
                "Gateway open associations and spool bytes",
                [emf("ActiveAssociations", "Maximum")],
                right=[emf("SpoolBytes", "Maximum")],
            ),
        )
        # The gateway keeps an instance whose audit record it could not write, so every
        # missing record needs an operator's look.
        audit_alarm = self._alarm(
            "GatewayAuditFailures",
            name="gateway-audit-failures",
            description="The gateway could not write audit records; see its log for the cause.",
            metric=emf("AuditFailures", "Sum"),
            threshold=0,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )
        self.dashboard.add_widgets(
            _graph("Gateway failure responses by status", failures, width=2 * _WIDGET_WIDTH),
            _graph("Gateway audit records not written", [emf("AuditFailures", "Sum")], audit_alarm),
        )


def _graph(
    title: str,
    left: Sequence[cloudwatch.IMetric],
    alarm: cloudwatch.Alarm | None = None,
    *,
    right: Sequence[cloudwatch.IMetric] | None = None,
    width: int = _WIDGET_WIDTH,
) -> cloudwatch.GraphWidget:
    """Build a graph of ``left`` (and ``right``), with the threshold of ``alarm`` as a line."""
    return cloudwatch.GraphWidget(
        title=title,
        left=list(left),
        right=list(right) if right is not None else None,
        left_annotations=[alarm.to_annotation()] if alarm is not None else None,
        width=width,
    )


def _check_component_name(name: str) -> None:
    if not _COMPONENT_NAME.fullmatch(name):
        raise ValueError(
            f"component name {name!r} is invalid; use letters, digits and '-', starting with a "
            "letter or digit"
        )


def _desired_count(service: ecs.BaseService) -> int:
    """Return the DesiredCount of the service's CloudFormation resource, or raise."""
    resource = service.node.default_child
    count = resource.desired_count if isinstance(resource, ecs.CfnService) else None
    if count is None or Token.is_unresolved(count):
        raise ValueError(
            "the gateway service has no fixed desired count; pass desired_count to add_gateway"
        )
    return int(count)
