"""CDK assertions on the gateway's ECS service and load balancer, and checks of its image.

The app is built twice per module: once with the context of cdk.json, once with every gateway
context key set. The image tests read gateway/Dockerfile, gateway/requirements.txt and run
gateway/entrypoint.sh with sh; none needs Docker.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Annotations, Match, Template
from aws_cdk.aws_applicationautoscaling import CfnScalingPolicy
from constructs import IConstruct
from packaging.requirements import Requirement

from cirrus.config import Settings
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.health import DEFAULT_HEALTH_PORT, HEALTH_PATH
from cirrus.gateway.limits import DEFAULT_MAX_INSTANCE_BYTES, DEFAULT_SPOOL_BYTES, GatewayLimits
from cirrus.gateway.server import _ABORT_WAIT_SECONDS, SHUTDOWN_GRACE_SECONDS
from cirrus.gateway.tls import DEFAULT_TLS_PORT
from cirrus.gateway.workers import _STOP_MARGIN_SECONDS, read_worker_count
from cirrus_infra import CirrusStack, build_app
from cirrus_infra.gateway import (
    CONTAINER_USER,
    DICOM_PORT,
    EPHEMERAL_STORAGE_GIB,
    FLOWS_PER_TASK_TARGET,
    MAX_TASKS,
    MIN_TASKS,
    RUN_DIR,
    SPOOL_DIR,
    WORKERS,
    GatewayOptions,
)
from cirrus_infra.storage import GLOBAL_SECONDARY_INDEXES
from gateway.main import DEFAULT_PORT, read_ae_title, read_metrics, read_port
from tests.infra.nag import acknowledged, findings
from tests.infra.test_stack import CDK_CONTEXT, logical_id

REPO = Path(__file__).resolve().parents[2]
GATEWAY = "Cirrus/Gateway"
GIB = 1024**3

# The gateway context keys of the second app.
CLIENT_CIDRS = ("192.168.10.0/24", "172.16.0.0/20")
AE_CONFIG = {
    "ae_title": "PACS_NORTH",
    "sites": {
        "north": {
            "callers": {"CT_NORTH": ["store"], "WS_NORTH": ["store", "query", "retrieve"]},
            "destinations": {"WS_NORTH": {"host": "192.168.10.5", "port": 11112}},
        }
    },
}
CUSTOM_CONTEXT = {
    **CDK_CONTEXT,
    "dicom-client-cidrs": ",".join(CLIENT_CIDRS),
    "gateway-ae-config": AE_CONFIG,
    "dicom-tls-require-client-certificate": True,
    "gateway-image-repository": "cirrus-gateway",
    "gateway-image-tag": "1.4.2",
}

# Every acknowledged cdk-nag finding under Cirrus/Gateway, as (construct path, rule id).
_ARCHIVE = "<StorageArchiveEF4C9845.Arn>"
ACKNOWLEDGED_FINDINGS = {
    (f"{GATEWAY}/TaskPolicy", f"AwsSolutions-IAM5[Resource::{_ARCHIVE}/sites/*]"),
    (f"{GATEWAY}/ExecutionPolicy", "AwsSolutions-IAM5[Resource::*]"),
    (f"{GATEWAY}/TaskDefinition", "AwsSolutions-ECS2"),
    (f"{GATEWAY}/TlsSecret", "AwsSolutions-SMG4"),
    (f"{GATEWAY}/TlsSecret", "HIPAA.Security-SecretsManagerRotationEnabled"),
    (f"{GATEWAY}/LoadBalancer/DicomListener", "HIPAA.Security-ELBv2ACMCertificateRequired"),
    (f"{GATEWAY}/LoadBalancer/DicomTlsListener", "HIPAA.Security-ELBv2ACMCertificateRequired"),
}

# Packages that the gateway's modules import when they are installed, and run without.
# pydicom's data download imports requests, which brings its own dependencies, and tqdm, which
# the CLI's de-identification brings in through dicom-anonymizer.
OPTIONAL_IMPORTS = {"requests", "charset-normalizer", "idna", "certifi", "blinker", "tqdm"}


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


@pytest.fixture(scope="module")
def custom_stack(tmp_path_factory: pytest.TempPathFactory) -> CirrusStack:
    _, stack = build_app(CUSTOM_CONTEXT, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return stack


@pytest.fixture(scope="module")
def custom_resources(custom_stack: CirrusStack) -> dict[str, Any]:
    resources: dict[str, Any] = Template.from_stack(custom_stack).to_json()["Resources"]
    return resources


def props(resources: dict[str, Any], stack: CirrusStack, construct: IConstruct) -> Any:
    return resources[logical_id(stack, construct)]["Properties"]


def container(resources: dict[str, Any], stack: CirrusStack) -> dict[str, Any]:
    [definition] = props(resources, stack, stack.gateway.task_definition)["ContainerDefinitions"]
    return definition  # type: ignore[no-any-return]


def environment(resources: dict[str, Any], stack: CirrusStack) -> dict[str, Any]:
    return {item["Name"]: item["Value"] for item in container(resources, stack)["Environment"]}


def ref(stack: CirrusStack, construct: IConstruct) -> dict[str, str]:
    return {"Ref": logical_id(stack, construct)}


def permissions(policy: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """Return each allowed (action, resource, condition) of a policy document, as JSON text."""
    found = set()
    for statement in policy["Statement"]:
        actions = statement["Action"]
        resources = statement["Resource"]
        for action in actions if isinstance(actions, list) else [actions]:
            for resource in resources if isinstance(resources, list) else [resources]:
                found.add(
                    (
                        statement["Effect"],
                        action,
                        json.dumps(resource, sort_keys=True),
                        json.dumps(statement.get("Condition"), sort_keys=True),
                    )
                )
    return found


def allow(action: str, resource: Any, condition: Any = None) -> tuple[str, str, str, str]:
    return (
        "Allow",
        action,
        json.dumps(resource, sort_keys=True),
        json.dumps(condition, sort_keys=True),
    )


def join(*parts: Any) -> dict[str, Any]:
    return {"Fn::Join": ["", list(parts)]}


def ingress_rules(
    resources: dict[str, Any], stack: CirrusStack, group: IConstruct
) -> set[tuple[str, int, int]]:
    """Return the ingress rules of a security group as (source, from port, to port).

    The source is a CIDR, or the logical id of a source security group.
    """
    group_id = logical_id(stack, group)
    rules = set()
    for rule in props(resources, stack, group).get("SecurityGroupIngress", []):
        rules.add((rule["CidrIp"], rule["FromPort"], rule["ToPort"]))
    for resource in resources.values():
        if resource["Type"] != "AWS::EC2::SecurityGroupIngress":
            continue
        rule = resource["Properties"]
        if rule["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}:
            source = rule.get("CidrIp") or rule["SourceSecurityGroupId"]["Fn::GetAtt"][0]
            rules.add((source, rule["FromPort"], rule["ToPort"]))
    return rules


# Network placement


def test_service_in_isolated_subnets(resources: dict[str, Any], stack: CirrusStack) -> None:
    service = props(resources, stack, stack.gateway.service)
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    isolated = [ref(stack, subnet) for subnet in stack.network.vpc.isolated_subnets]

    assert len(isolated) == 2
    assert network["Subnets"] == isolated
    assert network["AssignPublicIp"] == "DISABLED"
    assert network["SecurityGroups"] == [
        {"Fn::GetAtt": [logical_id(stack, stack.gateway.security_group), "GroupId"]}
    ]


def test_load_balancer_internal(resources: dict[str, Any], stack: CirrusStack) -> None:
    load_balancer = props(resources, stack, stack.gateway.load_balancer)
    isolated = [ref(stack, subnet) for subnet in stack.network.vpc.isolated_subnets]

    assert load_balancer["Type"] == "network"
    assert load_balancer["Scheme"] == "internal"
    assert load_balancer["Subnets"] == isolated
    assert load_balancer["SecurityGroups"] == [
        {
            "Fn::GetAtt": [
                logical_id(stack, stack.gateway.load_balancer_security_group),
                "GroupId",
            ]
        }
    ]


def test_load_balancer_attributes(resources: dict[str, Any], stack: CirrusStack) -> None:
    load_balancer = props(resources, stack, stack.gateway.load_balancer)
    attributes = {item["Key"]: item["Value"] for item in load_balancer["LoadBalancerAttributes"]}

    assert attributes == {
        "deletion_protection.enabled": "true",
        "load_balancing.cross_zone.enabled": "true",
        "access_logs.s3.enabled": "true",
        "access_logs.s3.bucket": ref(stack, stack.storage.access_log_bucket),
        "access_logs.s3.prefix": "gateway-nlb",
    }


def test_access_log_bucket_admits_delivery(resources: dict[str, Any], stack: CirrusStack) -> None:
    bucket = stack.storage.access_log_bucket
    assert bucket.policy is not None
    policy = props(resources, stack, bucket.policy)["PolicyDocument"]
    # CDK merges statements that differ only in actions or resources, such as the flow logs'.
    delivery = {
        "Statement": [
            statement
            for statement in policy["Statement"]
            if statement["Principal"] == {"Service": "delivery.logs.amazonaws.com"}
        ]
    }
    bucket_arn = {"Fn::GetAtt": [logical_id(stack, bucket), "Arn"]}
    from_this_account = {
        "ArnLike": {
            "aws:SourceArn": join(
                "arn:",
                {"Ref": "AWS::Partition"},
                ":logs:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":*",
            )
        },
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
    }
    owner_control = {
        **from_this_account,
        "StringEquals": {
            "s3:x-amz-acl": "bucket-owner-full-control",
            "aws:SourceAccount": {"Ref": "AWS::AccountId"},
        },
    }
    logs = join(bucket_arn, "/gateway-nlb/AWSLogs/", {"Ref": "AWS::AccountId"}, "/*")

    assert allow("s3:PutObject", logs, owner_control) in permissions(delivery)
    assert allow("s3:GetBucketAcl", bucket_arn, from_this_account) in permissions(delivery)
    # The load balancer checks its access to the bucket when it is created.
    load_balancer = resources[logical_id(stack, stack.gateway.load_balancer)]
    assert logical_id(stack, bucket.policy) in load_balancer["DependsOn"]


def test_secrets_manager_endpoint(resources: dict[str, Any], stack: CirrusStack) -> None:
    endpoint = stack.network.vpc.node.find_child("SecretsManagerEndpoint")
    properties = props(resources, stack, endpoint)
    isolated = [ref(stack, subnet) for subnet in stack.network.vpc.isolated_subnets]

    assert properties["ServiceName"] == join(
        "com.amazonaws.", {"Ref": "AWS::Region"}, ".secretsmanager"
    )
    assert properties["VpcEndpointType"] == "Interface"
    assert properties["PrivateDnsEnabled"] is True
    assert properties["SubnetIds"] == isolated
    assert properties["SecurityGroupIds"] == [
        {"Fn::GetAtt": [logical_id(stack, stack.network.endpoint_group), "GroupId"]}
    ]


# Listeners, target groups and security groups


def test_listeners_pass_tcp(resources: dict[str, Any], stack: CirrusStack) -> None:
    gateway = stack.gateway
    listeners = {
        listener["Port"]: listener
        for listener in (
            resource["Properties"]
            for resource in resources.values()
            if resource["Type"] == "AWS::ElasticLoadBalancingV2::Listener"
            and resource["Properties"]["LoadBalancerArn"] == ref(stack, gateway.load_balancer)
        )
    }

    assert sorted(listeners) == [DEFAULT_TLS_PORT, DICOM_PORT]
    for port, target_group in ((DICOM_PORT, gateway.dicom_target_group),
                               (DEFAULT_TLS_PORT, gateway.tls_target_group)):  # fmt: skip
        assert listeners[port]["Protocol"] == "TCP"
        assert "Certificates" not in listeners[port]
        assert listeners[port]["DefaultActions"] == [
            {"Type": "forward", "TargetGroupArn": ref(stack, target_group)}
        ]


@pytest.mark.parametrize(
    ("attribute", "port"), [("dicom_target_group", DICOM_PORT), ("tls_target_group", 2762)]
)
def test_target_group_health_check(
    resources: dict[str, Any], stack: CirrusStack, attribute: str, port: int
) -> None:
    target_group = props(resources, stack, getattr(stack.gateway, attribute))

    assert target_group["Port"] == port
    assert target_group["Protocol"] == "TCP"
    assert target_group["TargetType"] == "ip"
    assert target_group["HealthCheckProtocol"] == "HTTP"
    assert target_group["HealthCheckPort"] == str(DEFAULT_HEALTH_PORT)
    assert target_group["HealthCheckPath"] == HEALTH_PATH
    assert target_group["Matcher"] == {"HttpCode": "200"}
    assert target_group["HealthCheckIntervalSeconds"] == 10
    assert target_group["HealthyThresholdCount"] == 2
    assert target_group["UnhealthyThresholdCount"] == 2


@pytest.mark.parametrize("attribute", ["dicom_target_group", "tls_target_group"])
def test_target_group_drains_with_gateway(
    resources: dict[str, Any], stack: CirrusStack, attribute: str
) -> None:
    target_group = props(resources, stack, getattr(stack.gateway, attribute))
    attributes = {item["Key"]: item["Value"] for item in target_group["TargetGroupAttributes"]}

    assert attributes == {
        "deregistration_delay.timeout_seconds": str(int(SHUTDOWN_GRACE_SECONDS)),
        "deregistration_delay.connection_termination.enabled": "false",
        "preserve_client_ip.enabled": "true",
    }


def test_service_registers_both_ports(resources: dict[str, Any], stack: CirrusStack) -> None:
    service = props(resources, stack, stack.gateway.service)

    assert service["LoadBalancers"] == [
        {
            "ContainerName": "gateway",
            "ContainerPort": DICOM_PORT,
            "TargetGroupArn": ref(stack, stack.gateway.dicom_target_group),
        },
        {
            "ContainerName": "gateway",
            "ContainerPort": DEFAULT_TLS_PORT,
            "TargetGroupArn": ref(stack, stack.gateway.tls_target_group),
        },
    ]


def test_task_group_admits_dicom_ports(resources: dict[str, Any], stack: CirrusStack) -> None:
    gateway = stack.gateway
    load_balancer_group = logical_id(stack, gateway.load_balancer_security_group)

    assert ingress_rules(resources, stack, gateway.security_group) == {
        (stack.network.cidr, DICOM_PORT, DICOM_PORT),
        (stack.network.cidr, DEFAULT_TLS_PORT, DEFAULT_TLS_PORT),
        (load_balancer_group, DEFAULT_HEALTH_PORT, DEFAULT_HEALTH_PORT),
    }


def test_load_balancer_group_admits_dicom_ports(
    resources: dict[str, Any], stack: CirrusStack
) -> None:
    group = stack.gateway.load_balancer_security_group
    assert ingress_rules(resources, stack, group) == {
        (stack.network.cidr, DICOM_PORT, DICOM_PORT),
        (stack.network.cidr, DEFAULT_TLS_PORT, DEFAULT_TLS_PORT),
    }


def test_context_cidrs_replace_vpc_range(
    custom_resources: dict[str, Any], custom_stack: CirrusStack
) -> None:
    gateway = custom_stack.gateway
    load_balancer_group = logical_id(custom_stack, gateway.load_balancer_security_group)
    dicom = {(cidr, port, port) for cidr in CLIENT_CIDRS for port in (DICOM_PORT, 2762)}

    assert ingress_rules(custom_resources, custom_stack, gateway.security_group) == dicom | {
        (load_balancer_group, DEFAULT_HEALTH_PORT, DEFAULT_HEALTH_PORT)
    }
    assert (
        ingress_rules(custom_resources, custom_stack, gateway.load_balancer_security_group) == dicom
    )


# Task definition and container


def test_task_size_and_architecture(resources: dict[str, Any], stack: CirrusStack) -> None:
    task = props(resources, stack, stack.gateway.task_definition)

    assert task["Cpu"] == "2048"
    assert task["Memory"] == "8192"
    assert task["RuntimePlatform"] == {
        "CpuArchitecture": "ARM64",
        "OperatingSystemFamily": "LINUX",
    }
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert task["NetworkMode"] == "awsvpc"
    assert task["EphemeralStorage"] == {"SizeInGiB": EPHEMERAL_STORAGE_GIB}


def test_ephemeral_storage_holds_spools() -> None:
    # Each worker process has a spool of its own, and the image takes part of the storage.
    assert WORKERS * DEFAULT_SPOOL_BYTES + 2 * GIB <= EPHEMERAL_STORAGE_GIB * GIB
    assert 21 <= EPHEMERAL_STORAGE_GIB <= 200


def test_container_hardening(resources: dict[str, Any], stack: CirrusStack) -> None:
    definition = container(resources, stack)

    assert definition["Name"] == "gateway"
    assert definition["Essential"] is True
    assert definition["ReadonlyRootFilesystem"] is True
    assert definition["User"] == CONTAINER_USER
    assert not definition["User"].startswith(("0:", "root"))
    assert "Privileged" not in definition
    assert definition["PortMappings"] == [
        {"ContainerPort": DICOM_PORT, "Name": "dicom", "Protocol": "tcp"},
        {"ContainerPort": DEFAULT_TLS_PORT, "Name": "dicom-tls", "Protocol": "tcp"},
        {"ContainerPort": DEFAULT_HEALTH_PORT, "Name": "health", "Protocol": "tcp"},
    ]


def test_container_writes_volumes_only(resources: dict[str, Any], stack: CirrusStack) -> None:
    task = props(resources, stack, stack.gateway.task_definition)
    definition = container(resources, stack)

    # Volumes without a host path are bind mounts on the task's ephemeral storage.
    assert task["Volumes"] == [{"Name": "spool"}, {"Name": "run"}]
    assert definition["MountPoints"] == [
        {"ContainerPath": SPOOL_DIR, "ReadOnly": False, "SourceVolume": "spool"},
        {"ContainerPath": RUN_DIR, "ReadOnly": False, "SourceVolume": "run"},
    ]


def test_stop_timeout_covers_drain(resources: dict[str, Any], stack: CirrusStack) -> None:
    stop_timeout = container(resources, stack)["StopTimeout"]

    assert stop_timeout == 35
    assert stop_timeout >= SHUTDOWN_GRACE_SECONDS + _STOP_MARGIN_SECONDS
    assert _ABORT_WAIT_SECONDS <= _STOP_MARGIN_SECONDS
    # Fargate's largest stop timeout.
    assert stop_timeout <= 120


def test_container_environment(resources: dict[str, Any], stack: CirrusStack) -> None:
    storage = stack.storage

    assert environment(resources, stack) == {
        "CIRRUS_DEPLOYMENT": "cirrus",
        "CIRRUS_BUCKET": ref(stack, storage.bucket),
        "CIRRUS_TABLE": ref(stack, storage.table),
        "CIRRUS_AUDIT_TABLE": ref(stack, storage.audit_table),
        "CIRRUS_KMS_KEY_ID": {"Fn::GetAtt": [logical_id(stack, storage.key), "Arn"]},
        "AWS_REGION": {"Ref": "AWS::Region"},
        "CIRRUS_AE_TITLE": "CIRRUS",
        "CIRRUS_DICOM_PORT": "11112",
        "CIRRUS_TLS_PORT": "2762",
        "CIRRUS_HEALTH_PORT": "8081",
        "CIRRUS_TLS_REQUIRE_CLIENT_CERTIFICATE": "false",
        "CIRRUS_METRICS_NAMESPACE": "Cirrus",
        "CIRRUS_GATEWAY_WORKERS": "2",
        "CIRRUS_MAX_ASSOCIATIONS": "25",
        "CIRRUS_MAX_INSTANCE_BYTES": str(DEFAULT_MAX_INSTANCE_BYTES),
        "CIRRUS_SPOOL_BYTES": str(DEFAULT_SPOOL_BYTES),
        "CIRRUS_SPOOL_DIR": SPOOL_DIR,
        "TMPDIR": SPOOL_DIR,
        "CIRRUS_RUN_DIR": RUN_DIR,
        "CIRRUS_AE_CONFIG_JSON": '{"sites":{}}',
    }
    assert DEFAULT_PORT == DICOM_PORT


def test_gateway_reads_environment(
    resources: dict[str, Any], stack: CirrusStack, tmp_path: Path
) -> None:
    """The gateway's own readers accept the task's variables, with tokens replaced."""
    tokens = {"CIRRUS_BUCKET": "archive", "CIRRUS_TABLE": "index", "AWS_REGION": "eu-west-1",
              "CIRRUS_AUDIT_TABLE": "audit",
              "CIRRUS_KMS_KEY_ID": "arn:aws:kms:eu-west-1:111122223333:key/1"}  # fmt: skip
    variables = {**environment(resources, stack), **tokens, "CIRRUS_SPOOL_DIR": str(tmp_path)}
    assert all(isinstance(value, str) for value in variables.values())

    settings = Settings.from_env(variables)
    limits = GatewayLimits.from_env(variables)
    ae_config = tmp_path / "ae-config.json"
    ae_config.write_text(variables["CIRRUS_AE_CONFIG_JSON"])
    title = read_ae_title(variables)
    config = AEConfig.load(ae_config, ae_title=title, default_site=settings.default_site)

    assert settings.deployment == "cirrus"
    assert settings.region == "eu-west-1"
    assert read_port(variables) == DICOM_PORT
    assert read_port(variables, "CIRRUS_TLS_PORT", 0) == DEFAULT_TLS_PORT
    assert read_port(variables, "CIRRUS_HEALTH_PORT", 0) == DEFAULT_HEALTH_PORT
    assert read_worker_count(variables) == WORKERS
    assert read_metrics(variables, settings.deployment).namespace == "Cirrus"
    assert limits.spool_bytes == DEFAULT_SPOOL_BYTES
    assert limits.spool_root == tmp_path
    assert config.ae_title == "CIRRUS"
    assert config.sites == {}
    assert config.open is False


def test_container_secrets(resources: dict[str, Any], stack: CirrusStack) -> None:
    secret = ref(stack, stack.gateway.tls_secret)
    secrets = {item["Name"]: item["ValueFrom"] for item in container(resources, stack)["Secrets"]}

    assert secrets == {
        "CIRRUS_TLS_CERTIFICATE_PEM": join(secret, ":certificate::"),
        "CIRRUS_TLS_KEY_PEM": join(secret, ":private_key::"),
        "CIRRUS_TLS_CA_PEM": join(secret, ":ca_certificates::"),
    }


def test_tls_secret_under_data_key(resources: dict[str, Any], stack: CirrusStack) -> None:
    secret = resources[logical_id(stack, stack.gateway.tls_secret)]

    assert secret["Properties"]["KmsKeyId"] == {
        "Fn::GetAtt": [logical_id(stack, stack.storage.key), "Arn"]
    }
    # The fields are empty until the deployer writes the PEM texts. No password is generated.
    assert json.loads(secret["Properties"]["SecretString"]) == {
        "certificate": "",
        "private_key": "",
        "ca_certificates": "",
    }
    assert "GenerateSecretString" not in secret["Properties"]
    assert secret["DeletionPolicy"] == "Retain"


def test_logs_to_encrypted_group(resources: dict[str, Any], stack: CirrusStack) -> None:
    log_group = resources[logical_id(stack, stack.gateway.log_group)]
    logging = container(resources, stack)["LogConfiguration"]

    assert log_group["Properties"]["KmsKeyId"] == {
        "Fn::GetAtt": [logical_id(stack, stack.storage.key), "Arn"]
    }
    assert log_group["Properties"]["RetentionInDays"] == 365
    assert log_group["DeletionPolicy"] == "Retain"
    assert logging == {
        "LogDriver": "awslogs",
        "Options": {
            "awslogs-group": ref(stack, stack.gateway.log_group),
            "awslogs-stream-prefix": "gateway",
            "awslogs-region": {"Ref": "AWS::Region"},
            "mode": "blocking",
        },
    }


def test_context_sets_ae_config(
    custom_resources: dict[str, Any], custom_stack: CirrusStack
) -> None:
    variables = environment(custom_resources, custom_stack)

    assert json.loads(variables["CIRRUS_AE_CONFIG_JSON"]) == AE_CONFIG
    assert variables["CIRRUS_AE_TITLE"] == "PACS_NORTH"
    assert variables["CIRRUS_TLS_REQUIRE_CLIENT_CERTIFICATE"] == "true"


def test_missing_ae_config_warns(stack: CirrusStack, custom_stack: CirrusStack) -> None:
    message = Match.string_like_regexp("gateway-ae-config is not set")
    Annotations.from_stack(stack).has_warning(f"/{GATEWAY}", message)
    Annotations.from_stack(custom_stack).has_no_warning(f"/{GATEWAY}", message)


# Service, cluster and scaling


def test_service_deployment(resources: dict[str, Any], stack: CirrusStack) -> None:
    service = props(resources, stack, stack.gateway.service)

    assert service["LaunchType"] == "FARGATE"
    assert service["DesiredCount"] == 2
    assert service["DeploymentConfiguration"] == {
        "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
        "MaximumPercent": 200,
        "MinimumHealthyPercent": 100,
    }
    assert service["HealthCheckGracePeriodSeconds"] == 60
    assert service["EnableExecuteCommand"] is False


def test_service_waits_for_policies(resources: dict[str, Any], stack: CirrusStack) -> None:
    depends_on = resources[logical_id(stack, stack.gateway.service)]["DependsOn"]

    assert logical_id(stack, stack.gateway.task_policy) in depends_on
    assert logical_id(stack, stack.gateway.execution_policy) in depends_on


def test_cluster_container_insights(resources: dict[str, Any], stack: CirrusStack) -> None:
    cluster = props(resources, stack, stack.gateway.cluster)
    assert cluster["ClusterSettings"] == [{"Name": "containerInsights", "Value": "enabled"}]
    assert stack.gateway.cluster.vpc is stack.network.vpc


def _scalable_target(stack: CirrusStack) -> IConstruct:
    return stack.gateway.service.node.find_child("TaskCount").node.find_child("Target")


def test_scaling_bounds(resources: dict[str, Any], stack: CirrusStack) -> None:
    target = props(resources, stack, _scalable_target(stack))

    assert target["MinCapacity"] == MIN_TASKS == 2
    assert target["MaxCapacity"] == MAX_TASKS == 8
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    assert target["ResourceId"] == join(
        "service/",
        ref(stack, stack.gateway.cluster),
        "/",
        {"Fn::GetAtt": [logical_id(stack, stack.gateway.service), "Name"]},
    )


def test_scaling_on_cpu(resources: dict[str, Any], stack: CirrusStack) -> None:
    target = _scalable_target(stack)
    policy = props(resources, stack, target.node.find_child("CpuScaling"))

    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["ScalingTargetId"] == ref(stack, target)
    assert policy["TargetTrackingScalingPolicyConfiguration"] == {
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": "ECSServiceAverageCPUUtilization"
        },
        "TargetValue": 60,
        "ScaleInCooldown": 300,
        "ScaleOutCooldown": 60,
    }


def test_scaling_on_connections_per_task(resources: dict[str, Any], stack: CirrusStack) -> None:
    gateway = stack.gateway
    flow_scaling = gateway.node.find_child("FlowScaling")
    assert isinstance(flow_scaling, CfnScalingPolicy)
    policy = resources[stack.get_logical_id(flow_scaling)]["Properties"]
    configuration = policy["TargetTrackingScalingPolicyConfiguration"]
    queries = configuration["CustomizedMetricSpecification"]["Metrics"]
    metrics = {query["Id"]: query for query in queries}

    assert configuration["TargetValue"] == FLOWS_PER_TASK_TARGET == 25
    assert metrics["flows_per_task"]["Expression"] == "flows / tasks"
    assert metrics["flows_per_task"]["ReturnData"] is True
    assert metrics["flows"]["MetricStat"] == {
        "Metric": {
            "Namespace": "AWS/NetworkELB",
            "MetricName": "ActiveFlowCount",
            "Dimensions": [
                {
                    "Name": "LoadBalancer",
                    "Value": {
                        "Fn::GetAtt": [
                            logical_id(stack, gateway.load_balancer),
                            "LoadBalancerFullName",
                        ]
                    },
                }
            ],
        },
        "Stat": "Average",
    }
    assert metrics["tasks"]["MetricStat"]["Metric"]["Namespace"] == "ECS/ContainerInsights"
    assert metrics["tasks"]["MetricStat"]["Metric"]["MetricName"] == "RunningTaskCount"
    assert metrics["tasks"]["MetricStat"]["Metric"]["Dimensions"] == [
        {"Name": "ClusterName", "Value": ref(stack, gateway.cluster)},
        {
            "Name": "ServiceName",
            "Value": {"Fn::GetAtt": [logical_id(stack, gateway.service), "Name"]},
        },
    ]
    assert policy["ScalingTargetId"] == ref(stack, _scalable_target(stack))


def test_monitoring_alarms_below_min_tasks(resources: dict[str, Any], stack: CirrusStack) -> None:
    alarms = {
        resource["Properties"]["AlarmName"]: resource["Properties"]
        for resource in resources.values()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }
    healthy = alarms["cirrus-gateway-healthy-hosts"]

    assert healthy["Threshold"] == MIN_TASKS
    assert healthy["ComparisonOperator"] == "LessThanThreshold"
    target_group = logical_id(stack, stack.gateway.dicom_target_group)
    assert target_group in json.dumps(healthy["Metrics"])


# Roles


def test_task_role_trusts_this_account(resources: dict[str, Any], stack: CirrusStack) -> None:
    role = props(resources, stack, stack.gateway.task_role)
    [statement] = role["AssumeRolePolicyDocument"]["Statement"]

    assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert statement["Condition"] == {
        "ArnLike": {
            "aws:SourceArn": join(
                "arn:",
                {"Ref": "AWS::Partition"},
                ":ecs:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":*",
            )
        },
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
    }


def test_task_role_permissions_exact(resources: dict[str, Any], stack: CirrusStack) -> None:
    storage = stack.storage
    policy = props(resources, stack, stack.gateway.task_policy)
    bucket = {"Fn::GetAtt": [logical_id(stack, storage.bucket), "Arn"]}
    table = {"Fn::GetAtt": [logical_id(stack, storage.table), "Arn"]}
    key = {"Fn::GetAtt": [logical_id(stack, storage.key), "Arn"]}
    sites = join(bucket, "/sites/*")
    region = {"Ref": "AWS::Region"}
    through_s3_and_dynamodb = {
        "StringEquals": {
            "kms:ViaService": [
                join("s3.", region, ".amazonaws.com"),
                join("dynamodb.", region, ".amazonaws.com"),
            ]
        }
    }
    claims_only = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["*#SOP#*"]}}
    audit = {"Fn::GetAtt": [logical_id(stack, stack.storage.audit_table), "Arn"]}

    assert policy["Roles"] == [ref(stack, stack.gateway.task_role)]
    assert permissions(policy["PolicyDocument"]) == {
        allow("s3:GetObject", sites),
        allow("s3:PutObject", sites),
        allow("s3:PutObjectTagging", sites),
        allow("s3:AbortMultipartUpload", sites),
        allow("s3:ListBucket", bucket),
        allow("dynamodb:GetItem", table),
        allow("dynamodb:Query", table),
        *(allow("dynamodb:Query", join(table, f"/index/{name}"))
          for name, _, _ in GLOBAL_SECONDARY_INDEXES),
        allow("dynamodb:PutItem", table, claims_only),
        allow("dynamodb:GetItem", audit),
        allow("dynamodb:PutItem", audit),
        allow("kms:Decrypt", key, through_s3_and_dynamodb),
        allow("kms:GenerateDataKey", key, through_s3_and_dynamodb),
        # InstanceRejected events, on the deployment's bus only.
        allow("events:PutEvents", {"Fn::GetAtt": [logical_id(stack, stack.events.bus), "Arn"]}),
    }  # fmt: skip


def test_execution_role_permissions_exact(resources: dict[str, Any], stack: CirrusStack) -> None:
    gateway = stack.gateway
    policy = props(resources, stack, gateway.execution_policy)
    asset = gateway.node.find_child("Image")
    repository = stack.resolve(asset.repository.repository_arn)  # type: ignore[attr-defined]
    key = {"Fn::GetAtt": [logical_id(stack, stack.storage.key), "Arn"]}
    log_group = {"Fn::GetAtt": [logical_id(stack, gateway.log_group), "Arn"]}
    through_secrets_manager = {
        "StringEquals": {
            "kms:ViaService": join("secretsmanager.", {"Ref": "AWS::Region"}, ".amazonaws.com")
        }
    }

    assert policy["Roles"] == [ref(stack, gateway.execution_role)]
    assert permissions(policy["PolicyDocument"]) == {
        allow("ecr:GetAuthorizationToken", "*"),
        allow("ecr:BatchCheckLayerAvailability", repository),
        allow("ecr:GetDownloadUrlForLayer", repository),
        allow("ecr:BatchGetImage", repository),
        allow("logs:CreateLogStream", log_group),
        allow("logs:PutLogEvents", log_group),
        allow("secretsmanager:GetSecretValue", ref(stack, gateway.tls_secret)),
        allow("kms:Decrypt", key, through_secrets_manager),
    }  # fmt: skip
    assert "cdk-hnb659fds-container-assets" in json.dumps(repository)


def test_roles_have_no_other_policies(resources: dict[str, Any], stack: CirrusStack) -> None:
    roles = [stack.gateway.task_role, stack.gateway.execution_role]
    role_refs = [ref(stack, role) for role in roles]
    attached = [
        name
        for name, resource in resources.items()
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        and any(role in resource["Properties"].get("Roles", []) for role in role_refs)
    ]

    assert sorted(attached) == sorted(
        [logical_id(stack, stack.gateway.task_policy),
         logical_id(stack, stack.gateway.execution_policy)]
    )  # fmt: skip
    for role in roles:
        properties = props(resources, stack, role)
        assert "ManagedPolicyArns" not in properties
        assert "Policies" not in properties


def test_no_wildcards_on_data(resources: dict[str, Any], stack: CirrusStack) -> None:
    for policy in (stack.gateway.task_policy, stack.gateway.execution_policy):
        document = props(resources, stack, policy)["PolicyDocument"]
        for _, action, resource, _ in permissions(document):
            assert "*" not in action
            if action != "ecr:GetAuthorizationToken":
                assert resource != '"*"', action


def test_ecr_image_from_context(
    custom_resources: dict[str, Any], custom_stack: CirrusStack
) -> None:
    image = container(custom_resources, custom_stack)["Image"]
    policy = props(custom_resources, custom_stack, custom_stack.gateway.execution_policy)
    repository = join(
        "arn:",
        {"Ref": "AWS::Partition"},
        ":ecr:",
        {"Ref": "AWS::Region"},
        ":",
        {"Ref": "AWS::AccountId"},
        ":repository/cirrus-gateway",
    )

    assert "cirrus-gateway:1.4.2" in json.dumps(image)
    assert custom_stack.gateway.node.try_find_child("Image") is None
    assert allow("ecr:BatchGetImage", repository) in permissions(policy["PolicyDocument"])


# Options from the context


def test_options_default_to_none() -> None:
    assert GatewayOptions.from_context({}) == GatewayOptions()


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"dicom-client-cidrs": "10.1.0.0/33"}, "not an IPv4 range"),
        ({"dicom-client-cidrs": "10.1.0.1/16"}, "not an IPv4 range"),
        ({"dicom-client-cidrs": ["0.0.0.0/0"]}, "admits every address"),
        ({"dicom-client-cidrs": []}, "is empty"),
        ({"gateway-image-repository": "cirrus-gateway"}, "set both"),
        ({"gateway-image-tag": "1.4.2"}, "set both"),
        ({"dicom-tls-require-client-certificate": "yes"}, "use true or false"),
        ({"gateway-ae-config": ["north"]}, "must be a JSON object"),
        ({"gateway-ae-config": {"ae_title": "A" * 17}}, "gateway-ae-config is invalid"),
        ({"gateway-ae-config": {"sites": {"North": {}}}}, "gateway-ae-config is invalid"),
        ({"gateway-ae-config": {"unknown": 1}}, "gateway-ae-config is invalid"),
    ],
)
def test_options_reject_invalid(context: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GatewayOptions.from_context(context)


def test_options_read_cidr_list_and_string() -> None:
    from_list = GatewayOptions.from_context({"dicom-client-cidrs": list(CLIENT_CIDRS)})
    from_string = GatewayOptions.from_context({"dicom-client-cidrs": " , ".join(CLIENT_CIDRS)})

    assert from_list.client_cidrs == CLIENT_CIDRS
    assert from_string.client_cidrs == CLIENT_CIDRS


def test_options_read_ae_config_file(tmp_path: Path) -> None:
    path = tmp_path / "ae.json"
    path.write_text(json.dumps(AE_CONFIG))
    options = GatewayOptions.from_context({"gateway-ae-config": str(path)})
    assert options.ae_config == AE_CONFIG

    path.write_text("{")
    with pytest.raises(ValueError, match="is unreadable"):
        GatewayOptions.from_context({"gateway-ae-config": str(path)})


def test_options_read_caller_in_two_sites() -> None:
    sites = {"north": {"callers": {"CT": ["store"]}}, "south": {"callers": {"CT": ["store"]}}}
    with pytest.raises(ValueError, match="listed for sites"):
        GatewayOptions.from_context({"gateway-ae-config": {"sites": sites}})


# Outputs and cdk-nag


def test_outputs(template: Template, stack: CirrusStack) -> None:
    gateway = stack.gateway
    template.has_output(
        "GatewayDnsName",
        {"Value": {"Fn::GetAtt": [logical_id(stack, gateway.load_balancer), "DNSName"]}},
    )
    template.has_output("GatewayDicomPort", {"Value": "11112"})
    template.has_output("GatewayTlsPort", {"Value": "2762"})
    template.has_output("GatewayTlsSecretArn", {"Value": ref(stack, gateway.tls_secret)})


def test_rule_packs_pass(stack: CirrusStack) -> None:
    assert findings(stack, GATEWAY) == []


def test_rule_packs_pass_with_context(custom_stack: CirrusStack) -> None:
    assert findings(custom_stack, GATEWAY) == []


def test_acknowledged_findings(stack: CirrusStack) -> None:
    assert acknowledged(stack, GATEWAY) == ACKNOWLEDGED_FINDINGS


# The image


def test_image_asset_built_from_dockerfile(stack: CirrusStack) -> None:
    asset = stack.gateway.node.find_child("Image")
    staged = Path(stack.node.root.outdir) / f"asset.{asset.asset_hash}"  # type: ignore[attr-defined]
    files = {path.relative_to(staged).as_posix() for path in staged.rglob("*") if path.is_file()}

    expected = {
        ".dockerignore",
        "gateway/Dockerfile",
        "gateway/entrypoint.sh",
        "gateway/main.py",
        "gateway/requirements.txt",
        "layers/shared/python/cirrus/gateway/server.py",
    }
    assert expected <= files
    for path in files:
        assert path.startswith(("gateway/", "layers/shared/python/cirrus/", ".dockerignore"))
        assert "__pycache__" not in path


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions as (keyword, arguments), continuation lines joined."""
    text = (REPO / "gateway" / "Dockerfile").read_text()
    text = re.sub(r"\\\n\s*", " ", text)
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def test_dockerfile_matches_task() -> None:
    instructions = _dockerfile_instructions()
    by_keyword: dict[str, list[str]] = {}
    for keyword, arguments in instructions:
        by_keyword.setdefault(keyword, []).append(arguments)

    assert by_keyword["USER"] == [CONTAINER_USER]
    assert [json.loads(volume) for volume in by_keyword["VOLUME"]] == [[SPOOL_DIR, RUN_DIR]]
    assert by_keyword["EXPOSE"] == [f"{DICOM_PORT} {DEFAULT_TLS_PORT} {DEFAULT_HEALTH_PORT}"]
    assert f"CIRRUS_SPOOL_DIR={SPOOL_DIR}" in " ".join(by_keyword["ENV"])
    assert f"CIRRUS_RUN_DIR={RUN_DIR}" in " ".join(by_keyword["ENV"])
    assert by_keyword["ENTRYPOINT"] == ['["/usr/local/bin/cirrus-gateway-entrypoint"]']
    assert by_keyword["CMD"] == ['["python", "-m", "gateway.main"]']
    # USER comes after every RUN, so nothing runs as root in the final image.
    keywords = [keyword for keyword, _ in instructions]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (REPO / "gateway" / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            [specifier] = requirement.specifier
            assert specifier.operator == "==", line
            pins[_normalize(requirement.name)] = specifier.version
    return pins


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_requirements_match_virtualenv_and_pyproject() -> None:
    pins = _requirements()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_normalize(Requirement(item).name): Requirement(item)
                for item in project["dependencies"]}  # fmt: skip

    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, name
        if name in declared:
            assert declared[name].specifier.contains(version), name


def test_requirements_cover_gateway_imports() -> None:
    """Every distribution that the gateway's modules import is in the image, or optional."""
    # Modules that the interpreter loaded before the imports, such as setuptools' distutils
    # shim of the virtualenv, do not count.
    script = (
        "import json, sys, importlib.metadata as m\n"
        "before = set(sys.modules)\n"
        "import gateway.main, cirrus.gateway.server, cirrus.gateway.workers, cirrus.services\n"
        "owners = m.packages_distributions()\n"
        "loaded = set(sys.modules) - before\n"
        "names = {d for mod in loaded for d in owners.get(mod.split('.')[0], [])}\n"
        "print(json.dumps(sorted(names)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    imported = {_normalize(name) for name in json.loads(result.stdout)} - {"cirrus-pacs"}

    assert imported, result.stderr
    assert imported - set(_requirements()) - OPTIONAL_IMPORTS == set()


# The entry point


def _run_entrypoint(run_dir: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "CIRRUS_RUN_DIR": str(run_dir), **variables}
    return subprocess.run(
        ["sh", str(REPO / "gateway" / "entrypoint.sh"), "env"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_entrypoint_writes_files(tmp_path: Path) -> None:
    result = _run_entrypoint(
        tmp_path,
        CIRRUS_AE_CONFIG_JSON='{"sites":{}}',
        CIRRUS_TLS_CERTIFICATE_PEM="-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----",
        CIRRUS_TLS_KEY_PEM="-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----",
    )
    assert result.returncode == 0, result.stderr
    variables = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)

    assert variables["CIRRUS_AE_CONFIG"] == str(tmp_path / "ae-config.json")
    assert variables["CIRRUS_TLS_CERTIFICATE"] == str(tmp_path / "tls-certificate.pem")
    assert variables["CIRRUS_TLS_KEY"] == str(tmp_path / "tls-key.pem")
    assert "CIRRUS_TLS_CA" not in variables
    for name in ("CIRRUS_AE_CONFIG_JSON", "CIRRUS_TLS_CERTIFICATE_PEM", "CIRRUS_TLS_KEY_PEM"):
        assert name not in variables
    assert (tmp_path / "ae-config.json").read_text() == '{"sites":{}}\n'
    assert (tmp_path / "tls-key.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    assert not (tmp_path / "tls-ca.pem").exists()
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_entrypoint_without_tls(tmp_path: Path) -> None:
    result = _run_entrypoint(
        tmp_path,
        CIRRUS_AE_CONFIG_JSON='{"sites":{}}',
        CIRRUS_TLS_CERTIFICATE_PEM="",
        CIRRUS_TLS_KEY_PEM="",
        CIRRUS_TLS_CA_PEM="",
    )
    assert result.returncode == 0, result.stderr
    names = {line.split("=", 1)[0] for line in result.stdout.splitlines() if "=" in line}

    assert "CIRRUS_TLS_CERTIFICATE" not in names
    assert "CIRRUS_TLS_KEY" not in names
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ae-config.json"]


def test_entrypoint_rejects_missing_folder(tmp_path: Path) -> None:
    result = _run_entrypoint(tmp_path / "missing", CIRRUS_AE_CONFIG_JSON="{}")

    assert result.returncode == 2
    assert "is not a writable folder" in result.stderr
    assert result.stdout == ""
