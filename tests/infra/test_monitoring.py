"""CDK assertions and cdk-nag checks on the alarm topic, the alarms and the dashboard.

The stack of cdk.json's context is built once for the module. ``add_gateway`` is tested on a
second, smaller stack with a Fargate service behind a Network Load Balancer, because the
Cirrus stack has no gateway yet. That stack's app runs no cdk-nag plugin, so its gateway
resources may have findings; only its Monitoring path is checked.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk.assertions import Template
from constructs import IConstruct

from cirrus.config import INGEST_MAX_RECEIVES, ResourceNames
from cirrus.gateway.metrics import DEFAULT_NAMESPACE, SERVICE, GatewayMetrics
from cirrus_infra import CirrusStack, build_app
from cirrus_infra.monitoring import (
    API_SERVER_ERROR_RATE,
    GATEWAY_ASSOCIATION_METRICS,
    GATEWAY_FAILURE_METRICS,
    GATEWAY_GAUGE_METRICS,
    Monitoring,
)
from cirrus_infra.storage import Storage
from tests.infra.nag import acknowledged, findings
from tests.infra.test_stack import CDK_CONTEXT, NAMES

GATEWAY_DESIRED_COUNT = 2
GATEWAY_NAMES = ResourceNames(deployment="gateway-test")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> CirrusStack:
    _, stack = build_app(CDK_CONTEXT, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return stack


@pytest.fixture(scope="module")
def template(stack: CirrusStack) -> Template:
    return Template.from_stack(stack)


@pytest.fixture(scope="module")
def resources(template: Template) -> dict[str, Any]:
    resources: dict[str, Any] = template.to_json()["Resources"]
    return resources


class GatewayStack(Stack):
    """Storage, a stand-in REST API and a gateway service, with Monitoring watching them."""

    def __init__(self, scope: App) -> None:
        super().__init__(scope, "GatewayTest")
        storage = Storage(self, "Storage", names=GATEWAY_NAMES)
        api = apigateway.RestApi(self, "Api")
        api.root.add_method("GET", apigateway.MockIntegration())
        self.monitoring = Monitoring(
            self, "Monitoring", names=GATEWAY_NAMES, storage=storage, api=api
        )
        vpc = ec2.Vpc(self, "Vpc", max_azs=2, nat_gateways=0)
        cluster = ecs.Cluster(self, "Cluster", vpc=vpc)
        task = ecs.FargateTaskDefinition(self, "Task")
        task.add_container(
            "Gateway",
            image=ecs.ContainerImage.from_registry("example/gateway"),
            port_mappings=[ecs.PortMapping(container_port=11112)],
        )
        self.service = self._service(cluster, task, "Service", GATEWAY_DESIRED_COUNT)
        self.unsized_service = self._service(cluster, task, "UnsizedService", None)
        load_balancer = elbv2.NetworkLoadBalancer(self, "LoadBalancer", vpc=vpc)
        listener = load_balancer.add_listener("Dicom", port=11112)
        self.target_group = listener.add_targets("Gateway", port=11112, targets=[self.service])
        self.monitoring.add_gateway(self.service, self.target_group)

    def _service(
        self, cluster: ecs.Cluster, task: ecs.TaskDefinition, name: str, count: int | None
    ) -> ecs.FargateService:
        return ecs.FargateService(
            self,
            name,
            cluster=cluster,
            task_definition=task,
            desired_count=count,
            min_healthy_percent=100,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
        )


@pytest.fixture(scope="module")
def gateway_stack(tmp_path_factory: pytest.TempPathFactory) -> GatewayStack:
    app = App(context=CDK_CONTEXT, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return GatewayStack(app)


@pytest.fixture(scope="module")
def gateway_resources(gateway_stack: GatewayStack) -> dict[str, Any]:
    resources: dict[str, Any] = Template.from_stack(gateway_stack).to_json()["Resources"]
    return resources


def logical_id(stack: Stack, construct: IConstruct) -> str:
    return stack.get_logical_id(construct.node.default_child)  # type: ignore[arg-type]


def properties(resources: dict[str, Any], stack: Stack, construct: IConstruct) -> Any:
    return resources[logical_id(stack, construct)]["Properties"]


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {key: value for key, value in resources.items() if value["Type"] == kind}


def alarm_named(resources: dict[str, Any], name: str) -> Any:
    [alarm] = [
        alarm["Properties"]
        for alarm in of_type(resources, "AWS::CloudWatch::Alarm").values()
        if alarm["Properties"]["AlarmName"] == name
    ]
    return alarm


def metric_stat(alarm: dict[str, Any]) -> Any:
    [query] = alarm["Metrics"]
    return query["MetricStat"]


def dashboard_body(resources: dict[str, Any]) -> str:
    """Return the dashboard body with each intrinsic written as JSON."""
    [dashboard] = of_type(resources, "AWS::CloudWatch::Dashboard").values()
    _, parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"]
    return "".join(part if isinstance(part, str) else json.dumps(part) for part in parts)


# Topic and key


def test_topic_encrypted_with_own_key(resources: dict[str, Any], stack: CirrusStack) -> None:
    monitoring = stack.monitoring
    topic = properties(resources, stack, monitoring.topic)
    key_arn = {"Fn::GetAtt": [logical_id(stack, monitoring.key), "Arn"]}
    assert topic["KmsMasterKeyId"] == key_arn
    assert topic["KmsMasterKeyId"] != {"Fn::GetAtt": [logical_id(stack, stack.storage.key), "Arn"]}
    assert topic["TopicName"] == f"{NAMES.deployment}-alarms"


def test_topic_key_rotates(resources: dict[str, Any], stack: CirrusStack) -> None:
    key = properties(resources, stack, stack.monitoring.key)
    assert key["EnableKeyRotation"] is True
    statement = {
        "Sid": "AllowCloudWatchAlarms",
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
        "Resource": "*",
    }
    assert statement in key["KeyPolicy"]["Statement"]


def test_topic_policy(resources: dict[str, Any], stack: CirrusStack) -> None:
    topic_ref = {"Ref": logical_id(stack, stack.monitoring.topic)}
    [policy] = [
        resource["Properties"]
        for resource in of_type(resources, "AWS::SNS::TopicPolicy").values()
        if resource["Properties"]["Topics"] == [topic_ref]
    ]
    statements = policy["PolicyDocument"]["Statement"]
    alarms_arn = {
        "Fn::Join": [
            "",
            ["arn:", {"Ref": "AWS::Partition"}, ":cloudwatch:", {"Ref": "AWS::Region"}, ":",
             {"Ref": "AWS::AccountId"}, ":alarm:*"],
        ]
    }  # fmt: skip

    assert {
        "Sid": "AllowPublishThroughSSLOnly",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "sns:Publish",
        "Resource": topic_ref,
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    } in statements
    assert {
        "Sid": "AllowCloudWatchAlarms",
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": "sns:Publish",
        "Resource": topic_ref,
        "Condition": {
            "ArnLike": {"aws:SourceArn": alarms_arn},
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        },
    } in statements
    assert len(statements) == 2


# Alarms


@pytest.mark.parametrize("gateway", [False, True])
def test_every_alarm_notifies_topic(
    resources: dict[str, Any],
    stack: CirrusStack,
    gateway_resources: dict[str, Any],
    gateway_stack: GatewayStack,
    gateway: bool,
) -> None:
    template_stack: Stack = gateway_stack if gateway else stack
    template_resources = gateway_resources if gateway else resources
    monitoring = gateway_stack.monitoring if gateway else stack.monitoring
    topic_ref = {"Ref": logical_id(template_stack, monitoring.topic)}

    assert monitoring.alarms
    for alarm in monitoring.alarms:
        alarm_properties = properties(template_resources, template_stack, alarm)
        assert alarm_properties["AlarmActions"] == [topic_ref]
        assert alarm_properties["OKActions"] == [topic_ref]
        assert alarm_properties.get("ActionsEnabled", True) is True


def test_alarm_names(resources: dict[str, Any], stack: CirrusStack) -> None:
    names = {properties(resources, stack, alarm)["AlarmName"] for alarm in stack.monitoring.alarms}
    prefix = NAMES.deployment
    # A gateway wired with add_gateway adds its own two alarms to these.
    assert {
        f"{prefix}-dicomweb-5xx-rate",
        f"{prefix}-dicomweb-errors",
        f"{prefix}-dicomweb-throttles",
        f"{prefix}-dicomweb-pixel-errors",
        f"{prefix}-dicomweb-pixel-throttles",
        f"{prefix}-ingest-dead-letters",
        f"{prefix}-ingest-queue-age",
    } <= names
    assert len(names) == len(stack.monitoring.alarms)


def test_dead_letter_queue_alarm(resources: dict[str, Any], stack: CirrusStack) -> None:
    alarm = alarm_named(resources, f"{NAMES.deployment}-ingest-dead-letters")
    stat = metric_stat(alarm)
    queue = logical_id(stack, stack.storage.dead_letter_queue)

    assert stat["Metric"] == {
        "Namespace": "AWS/SQS",
        "MetricName": "ApproximateNumberOfMessagesVisible",
        "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}],
    }
    assert stat["Stat"] == "Maximum"
    assert stat["Period"] == 300
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["TreatMissingData"] == "notBreaching"


def test_ingest_queue_age_alarm(resources: dict[str, Any], stack: CirrusStack) -> None:
    alarm = alarm_named(resources, f"{NAMES.deployment}-ingest-queue-age")
    stat = metric_stat(alarm)
    queue = logical_id(stack, stack.storage.ingest_queue)
    visibility_timeout = properties(resources, stack, stack.storage.ingest_queue)[
        "VisibilityTimeout"
    ]

    assert stat["Metric"] == {
        "Namespace": "AWS/SQS",
        "MetricName": "ApproximateAgeOfOldestMessage",
        "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}],
    }
    assert stat["Stat"] == "Maximum"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == INGEST_MAX_RECEIVES * visibility_timeout
    assert alarm["EvaluationPeriods"] == 2
    assert alarm["DatapointsToAlarm"] == 2


def test_api_server_error_rate_alarm(resources: dict[str, Any], stack: CirrusStack) -> None:
    alarm = alarm_named(resources, f"{NAMES.deployment}-dicomweb-5xx-rate")
    stat = metric_stat(alarm)
    api_name = properties(resources, stack, stack.dicomweb.api)["Name"]

    assert stat["Metric"] == {
        "Namespace": "AWS/ApiGateway",
        "MetricName": "5XXError",
        "Dimensions": [{"Name": "ApiName", "Value": api_name}],
    }
    assert stat["Stat"] == "Average"
    assert stat["Period"] == 300
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == API_SERVER_ERROR_RATE
    assert alarm["EvaluationPeriods"] == 2
    assert alarm["DatapointsToAlarm"] == 2


def _functions(stack: CirrusStack) -> dict[str, Any]:
    """Return each function that the stack watches, by the name its alarms carry."""
    return {
        "dicomweb": stack.dicomweb.function,
        "dicomweb-pixel": stack.dicomweb.pixels.function,
        "ingest": stack.ingest.function,
    }


@pytest.mark.parametrize("name", ["dicomweb", "dicomweb-pixel", "ingest"])
@pytest.mark.parametrize(
    ("suffix", "metric_name"), [("errors", "Errors"), ("throttles", "Throttles")]
)
def test_function_alarm(
    resources: dict[str, Any], stack: CirrusStack, name: str, suffix: str, metric_name: str
) -> None:
    alarm = alarm_named(resources, f"{NAMES.deployment}-{name}-{suffix}")
    stat = metric_stat(alarm)
    function = {"Ref": logical_id(stack, _functions(stack)[name])}

    assert stat["Metric"] == {
        "Namespace": "AWS/Lambda",
        "MetricName": metric_name,
        "Dimensions": [{"Name": "FunctionName", "Value": function}],
    }
    assert stat["Stat"] == "Sum"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0


@pytest.mark.parametrize("name", ["", "two words", "-dash", "under_score"])
def test_function_name_rejected(stack: CirrusStack, name: str) -> None:
    with pytest.raises(ValueError, match="component name"):
        stack.monitoring.add_function(stack.dicomweb.function, name)


# Gateway alarms


def test_gateway_healthy_hosts_alarm(
    gateway_resources: dict[str, Any], gateway_stack: GatewayStack
) -> None:
    alarm = alarm_named(gateway_resources, f"{GATEWAY_NAMES.deployment}-gateway-healthy-hosts")
    stat = metric_stat(alarm)
    target_group = logical_id(gateway_stack, gateway_stack.target_group)

    assert stat["Metric"]["Namespace"] == "AWS/NetworkELB"
    assert stat["Metric"]["MetricName"] == "HealthyHostCount"
    assert {
        "Name": "TargetGroup",
        "Value": {"Fn::GetAtt": [target_group, "TargetGroupFullName"]},
    } in stat["Metric"]["Dimensions"]
    assert stat["Stat"] == "Minimum"
    assert stat["Period"] == 60
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    assert alarm["Threshold"] == GATEWAY_DESIRED_COUNT
    assert alarm["EvaluationPeriods"] == 3
    assert alarm["TreatMissingData"] == "breaching"


def test_gateway_unhealthy_hosts_alarm(
    gateway_resources: dict[str, Any], gateway_stack: GatewayStack
) -> None:
    alarm = alarm_named(gateway_resources, f"{GATEWAY_NAMES.deployment}-gateway-unhealthy-hosts")
    stat = metric_stat(alarm)
    target_group = logical_id(gateway_stack, gateway_stack.target_group)

    assert stat["Metric"]["Namespace"] == "AWS/NetworkELB"
    assert stat["Metric"]["MetricName"] == "UnHealthyHostCount"
    assert {
        "Name": "TargetGroup",
        "Value": {"Fn::GetAtt": [target_group, "TargetGroupFullName"]},
    } in stat["Metric"]["Dimensions"]
    assert stat["Stat"] == "Maximum"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0
    assert alarm["TreatMissingData"] == "notBreaching"


def test_gateway_audit_failures_alarm(gateway_resources: dict[str, Any]) -> None:
    alarm = alarm_named(gateway_resources, f"{GATEWAY_NAMES.deployment}-gateway-audit-failures")

    assert alarm["Namespace"] == DEFAULT_NAMESPACE
    assert alarm["MetricName"] == "AuditFailures"
    assert {"Name": "Deployment", "Value": GATEWAY_NAMES.deployment} in alarm["Dimensions"]
    assert alarm["Statistic"] == "Sum"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0


def test_gateway_needs_desired_count(gateway_stack: GatewayStack) -> None:
    # Both calls fail before they create anything, so the fixture's template is unchanged.
    monitoring = gateway_stack.monitoring
    with pytest.raises(ValueError, match="pass desired_count"):
        monitoring.add_gateway(gateway_stack.unsized_service, gateway_stack.target_group)
    with pytest.raises(ValueError, match="must be at least 1"):
        monitoring.add_gateway(gateway_stack.service, gateway_stack.target_group, desired_count=0)


# Dashboard


def test_dashboard_charts_alarmed_metrics(resources: dict[str, Any]) -> None:
    body = dashboard_body(resources)
    for namespace, metric_name in [
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("AWS/ApiGateway", "5XXError"),
        ("AWS/ApiGateway", "Latency"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/Lambda", "Duration"),
    ]:
        assert f'"{namespace}","{metric_name}"' in body, metric_name


def test_dashboard_charts_every_function(resources: dict[str, Any], stack: CirrusStack) -> None:
    body = dashboard_body(resources)
    for name, function in _functions(stack).items():
        reference = json.dumps({"Ref": logical_id(stack, function)})
        assert f'"AWS/Lambda","Duration","FunctionName","{reference}"' in body, name
        assert f"{name} function errors and throttles" in body, name


def test_dashboard_name(resources: dict[str, Any]) -> None:
    [dashboard] = of_type(resources, "AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == {
        "Fn::Join": ["", [f"{NAMES.deployment}-", {"Ref": "AWS::Region"}]]
    }


def test_dashboard_charts_gateway_emf(gateway_resources: dict[str, Any]) -> None:
    body = dashboard_body(gateway_resources)
    dimensions = f'"Deployment","{GATEWAY_NAMES.deployment}","service","{SERVICE}"'
    for metric_name in (*GATEWAY_ASSOCIATION_METRICS, *GATEWAY_GAUGE_METRICS):
        assert f'"{DEFAULT_NAMESPACE}","{metric_name}",{dimensions}' in body, metric_name
    for metric_name in ("InstancesStored", "StoredBytes"):
        assert f'"{DEFAULT_NAMESPACE}","{metric_name}",{dimensions}' in body, metric_name
    for metric_name in GATEWAY_FAILURE_METRICS:
        search = (
            f"SEARCH('{{{DEFAULT_NAMESPACE},Deployment,Status,service}} "
            f'MetricName=\\"{metric_name}\\" Deployment=\\"{GATEWAY_NAMES.deployment}\\"\''
        )
        assert search in body, metric_name


def test_dashboard_charts_gateway_targets(gateway_resources: dict[str, Any]) -> None:
    body = dashboard_body(gateway_resources)
    for namespace, metric_name in [
        ("AWS/NetworkELB", "HealthyHostCount"),
        ("AWS/NetworkELB", "UnHealthyHostCount"),
        ("AWS/ECS", "CPUUtilization"),
        ("AWS/ECS", "MemoryUtilization"),
    ]:
        assert f'"{namespace}","{metric_name}"' in body, metric_name


def test_gateway_metrics_match_emf_output() -> None:
    # The dashboard must chart what GatewayMetrics writes: namespace, dimensions and names.
    stream = io.StringIO()
    metrics = GatewayMetrics(dimensions={"Deployment": "d"}, stream=stream)
    metrics.gauges = lambda: {"ActiveAssociations": 0, "SpoolBytes": 0}
    metrics.flush()
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    [directive] = line["_aws"]["CloudWatchMetrics"]

    assert directive["Namespace"] == DEFAULT_NAMESPACE
    assert directive["Dimensions"] == [["Deployment", "service"]]
    assert line["service"] == SERVICE
    written = {metric["Name"] for metric in directive["Metrics"]}
    charted = {*GATEWAY_ASSOCIATION_METRICS, *GATEWAY_GAUGE_METRICS}
    assert charted | {"InstancesStored", "StoredBytes", "AuditFailures"} == written


# Outputs


def test_outputs(template: Template, stack: CirrusStack) -> None:
    template.has_output(
        "AlarmTopicArn", {"Value": {"Ref": logical_id(stack, stack.monitoring.topic)}}
    )


# cdk-nag


def test_rule_packs_pass(stack: CirrusStack) -> None:
    assert findings(stack, "Cirrus/Monitoring") == []


def test_rule_packs_pass_with_gateway(gateway_stack: GatewayStack) -> None:
    assert findings(gateway_stack, "GatewayTest/Monitoring") == []


def test_acknowledged_findings(stack: CirrusStack, gateway_stack: GatewayStack) -> None:
    assert acknowledged(stack, "Cirrus/Monitoring") == set()
    assert acknowledged(gateway_stack, "GatewayTest/Monitoring") == set()


def test_key_not_shared(resources: dict[str, Any], stack: CirrusStack) -> None:
    # The data key's policy stays free of the CloudWatch service principal.
    statements = properties(resources, stack, stack.storage.key)["KeyPolicy"]["Statement"]
    principals = [statement.get("Principal") for statement in statements]
    assert {"Service": "cloudwatch.amazonaws.com"} not in principals
