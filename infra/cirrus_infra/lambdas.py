"""Settings, log groups, roles and network settings shared by the Cirrus Lambda functions.

Each function gets a customer managed policy with exactly the statements it needs, on a role
that CDK may not extend: ``grant_*`` helpers and event sources would otherwise add an inline
policy with wider actions (HIPAA.Security-IAMNoInlinePolicy and AwsSolutions-IAM5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cirrus.config import DEFAULT_SITE, ENV, ResourceNames
from cirrus.gateway.metrics import DEFAULT_NAMESPACE
from cirrus_infra.layers import RUNTIME, Layers
from cirrus_infra.network import Network
from cirrus_infra.storage import Storage

LOG_RETENTION: Final = logs.RetentionDays.THREE_MONTHS
LOG_LEVEL: Final = "INFO"
# The namespace of the gateway's metrics too, so that one dashboard finds all of them.
METRICS_NAMESPACE: Final = DEFAULT_NAMESPACE
# Actions on a function's network interfaces in the VPC, which Lambda performs with the
# function's role. DescribeNetworkInterfaces accepts only the resource "*".
NETWORK_INTERFACE_ACTIONS: Final = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
XRAY_ACTIONS: Final = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
# The KMS actions of SSE-KMS (S3), of encrypted queues (SQS) and of a table encrypted with a
# customer managed key (DynamoDB), each allowed only through the service that needs it.
# NOTE: DynamoDB's actions are the ones CDK's table grants give, without the ReEncrypt and
# GenerateDataKey variants; they are not verified against AWS.
DATA_KEY_ACTIONS: Final = ("kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey")
# The reason for the statements on the resource "*" of each function role (AwsSolutions-IAM5).
WILDCARD_RESOURCE_REASON: Final = (
    "X-Ray accepts trace segments only on resource *, and Lambda manages the function's "
    "network interfaces in the VPC, whose ids are not known at deployment."
)


@dataclass(frozen=True)
class FunctionSettings:
    """The settings in which the Cirrus functions differ."""

    package: str  # the handler package under functions/
    service: str  # POWERTOOLS_SERVICE_NAME, the service name that the handler logs
    memory_mb: int
    timeout: Duration
    reserved_concurrency: int
    environment: Mapping[str, str]
    # Whether the function has the pixel layer (numpy, Pillow and the pixel data codecs).
    pixels: bool = False

    @property
    def label(self) -> str:
        """The function's name in construct ids, such as ``Dicomweb`` or ``DicomwebPixel``."""
        return self.package.title() + ("Pixel" if self.pixels else "")


def logical_id(construct: Construct) -> str:
    """Return the logical id of the CloudFormation resource of an L2 construct."""
    child = construct.node.default_child
    assert child is not None
    return str(Stack.of(construct).get_logical_id(child))  # type: ignore[arg-type]


def settings_environment(names: ResourceNames, storage: Storage) -> dict[str, str]:
    """Return the variables that ``cirrus.config.Settings.from_env`` reads.

    Lambda sets AWS_REGION itself, and CIRRUS_AWS_ENDPOINT_URL is only for the local stack.
    """
    return {
        ENV["deployment"]: names.deployment,
        ENV["bucket"]: storage.bucket.bucket_name,
        ENV["table"]: storage.table.table_name,
        ENV["audit_table"]: storage.audit_table.table_name,
        ENV["ingest_queue"]: storage.ingest_queue.queue_name,
        ENV["dead_letter_queue"]: storage.dead_letter_queue.queue_name,
        ENV["kms_key_id"]: storage.key.key_arn,
        ENV["default_site"]: DEFAULT_SITE,
    }


def encrypted_log_group(scope: Construct, construct_id: str, key: kms.IKey) -> logs.LogGroup:
    """Return a log group encrypted with ``key``, whose policy lets CloudWatch Logs use it."""
    return logs.LogGroup(
        scope,
        construct_id,
        retention=LOG_RETENTION,
        encryption_key=key,
        removal_policy=RemovalPolicy.RETAIN,
    )


def data_key_statement(
    scope: Construct, key: kms.IKey, services: Sequence[str]
) -> iam.PolicyStatement:
    """Allow the data key actions on ``key`` through the AWS ``services`` named."""
    region = Stack.of(scope).region
    return iam.PolicyStatement(
        actions=list(DATA_KEY_ACTIONS),
        resources=[key.key_arn],
        conditions={
            "StringEquals": {
                "kms:ViaService": [f"{service}.{region}.amazonaws.com" for service in services]
            }
        },
    )


def function_role(
    scope: Construct,
    construct_id: str,
    *,
    description: str,
    log_group: logs.ILogGroup,
    statements: Sequence[iam.PolicyStatement],
) -> tuple[iam.IRole, iam.ManagedPolicy]:
    """Return a function role that CDK may not extend, and its one managed policy.

    The policy contains ``statements`` and what every function needs: writing to ``log_group``,
    sending traces to X-Ray and managing its network interfaces in the VPC. The role lists
    the policy, so CloudFormation attaches it before it creates the function and its event
    source mappings, which Lambda checks against the role.
    """
    policy = iam.ManagedPolicy(
        scope,
        f"{construct_id}Policy",
        description=description,
        statements=[
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_group.log_group_arn],
            ),
            iam.PolicyStatement(actions=list(XRAY_ACTIONS), resources=["*"]),
            iam.PolicyStatement(actions=list(NETWORK_INTERFACE_ACTIONS), resources=["*"]),
            *statements,
        ],
    )
    role = iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=description,
        managed_policies=[policy],
    )
    return role.without_policy_updates(), policy


def create_function(
    scope: Construct,
    construct_id: str,
    *,
    settings: FunctionSettings,
    layers: Layers,
    network: Network,
    role: iam.IRole,
    log_group: logs.ILogGroup,
    dead_letter_queue: sqs.IQueue | None = None,
) -> lambda_.Function:
    """Create a function of the layers' architecture in the VPC, with X-Ray tracing."""
    code, size_check = layers.code_for(settings.package, pixels=settings.pixels)
    kind = f"{settings.package} pixel" if settings.pixels else settings.package
    security_group = network.security_group(
        f"{settings.label}Function", f"Cirrus {kind} function: no inbound traffic"
    )
    environment = {
        "POWERTOOLS_SERVICE_NAME": settings.service,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": LOG_LEVEL,
        **settings.environment,
    }
    function = lambda_.Function(
        scope,
        construct_id,
        runtime=RUNTIME,
        architecture=layers.architecture,
        handler=f"functions.{settings.package}.handler.lambda_handler",
        code=code,
        layers=layers.layers_for(pixels=settings.pixels),
        memory_size=settings.memory_mb,
        timeout=settings.timeout,
        reserved_concurrent_executions=settings.reserved_concurrency,
        role=role,
        log_group=log_group,
        environment=environment,
        tracing=lambda_.Tracing.ACTIVE,
        vpc=network.vpc,
        vpc_subnets=network.subnets,
        security_groups=[security_group],
        dead_letter_queue=dead_letter_queue,
    )
    function.node.add_validation(size_check)
    return function


def acknowledge_wildcards(policy: iam.ManagedPolicy, reasons: Mapping[str, str]) -> None:
    """Acknowledge each AwsSolutions-IAM5 finding of ``policy`` with its reason.

    ``reasons`` maps each finding, such as ``Resource::*``, to the reason for the wildcard.
    """
    for finding, reason in reasons.items():
        Validations.of(policy).acknowledge(
            Acknowledgment(id=f"AwsSolutions-IAM5[{finding}]", reason=reason)
        )


def acknowledge_runtime(function: lambda_.Function) -> None:
    """Acknowledge that ``function`` does not use the latest Python runtime (AwsSolutions-L1)."""
    Validations.of(function).acknowledge(
        Acknowledgment(
            id="AwsSolutions-L1",
            reason="The layers are built from CPython 3.12 wheels for the one runtime that all "
            "functions share, and pyjpegls 1.5.1 (pixel layer) publishes none for CPython "
            "3.14, the latest runtime.",
        )
    )
