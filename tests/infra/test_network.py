"""The deployment's VPC: isolated subnets, endpoints instead of a NAT gateway, flow logs."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Template

from cirrus_infra import CirrusStack, build_app
from cirrus_infra.network import DEFAULT_CIDR, FLOW_LOG_PREFIX
from tests.infra.nag import acknowledged, findings
from tests.infra.test_stack import CDK_CONTEXT, logical_id

# The gateway construct adds the Secrets Manager endpoint that its TLS secret needs.
INTERFACE_SERVICES = {
    "kms",
    "sqs",
    "logs",
    "ecr.api",
    "ecr.dkr",
    "xray",
    "lambda",
    "secretsmanager",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> CirrusStack:
    _, stack = build_app(CDK_CONTEXT, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return stack


@pytest.fixture(scope="module")
def template(stack: CirrusStack) -> Template:
    return Template.from_stack(stack)


def _of_type(template: Template, kind: str) -> list[dict[str, Any]]:
    return [resource["Properties"] for resource in template.find_resources(kind).values()]


def _service(endpoint: dict[str, Any]) -> str:
    """Return the short service name of an endpoint, e.g. "kms" for com.amazonaws.REGION.kms."""
    name = endpoint["ServiceName"]
    if isinstance(name, dict):
        parts = name["Fn::Join"][1]
        return str(parts[-1]).lstrip(".")
    return str(name).split(".", 3)[-1]


def test_no_route_to_internet(template: Template) -> None:
    assert template.find_resources("AWS::EC2::InternetGateway") == {}
    assert template.find_resources("AWS::EC2::NatGateway") == {}
    assert template.find_resources("AWS::EC2::EgressOnlyInternetGateway") == {}
    for subnet in _of_type(template, "AWS::EC2::Subnet"):
        assert subnet.get("MapPublicIpOnLaunch") is False
    for route in _of_type(template, "AWS::EC2::Route"):
        assert "GatewayId" not in route
        assert "NatGatewayId" not in route


def test_two_isolated_subnets(template: Template) -> None:
    subnets = _of_type(template, "AWS::EC2::Subnet")
    assert len(subnets) == 2
    [vpc] = _of_type(template, "AWS::EC2::VPC")
    assert vpc["CidrBlock"] == DEFAULT_CIDR


def test_gateway_endpoints_for_s3_and_dynamodb(template: Template) -> None:
    endpoints = [
        endpoint
        for endpoint in _of_type(template, "AWS::EC2::VPCEndpoint")
        if endpoint.get("VpcEndpointType", "Gateway") == "Gateway"
    ]
    assert {_service(endpoint) for endpoint in endpoints} == {"s3", "dynamodb"}
    for endpoint in endpoints:
        assert len(endpoint["RouteTableIds"]) == 2


def test_interface_endpoints(template: Template, stack: CirrusStack) -> None:
    endpoints = [
        endpoint
        for endpoint in _of_type(template, "AWS::EC2::VPCEndpoint")
        if endpoint.get("VpcEndpointType") == "Interface"
    ]
    assert {_service(endpoint) for endpoint in endpoints} == INTERFACE_SERVICES
    group = {"Fn::GetAtt": [logical_id(stack, stack.network.endpoint_group), "GroupId"]}
    for endpoint in endpoints:
        assert endpoint["PrivateDnsEnabled"] is True
        assert endpoint["SecurityGroupIds"] == [group]


def test_endpoint_group_admits_https_from_vpc(template: Template, stack: CirrusStack) -> None:
    group = template.to_json()["Resources"][logical_id(stack, stack.network.endpoint_group)]
    ingress = group["Properties"]["SecurityGroupIngress"]
    assert ingress == [
        {
            "CidrIp": DEFAULT_CIDR,
            "Description": f"from {DEFAULT_CIDR}:443",
            "FromPort": 443,
            "IpProtocol": "tcp",
            "ToPort": 443,
        }
    ]


def test_flow_logs_to_access_log_bucket(template: Template, stack: CirrusStack) -> None:
    [flow_log] = _of_type(template, "AWS::EC2::FlowLog")
    assert flow_log["TrafficType"] == "ALL"
    assert flow_log["LogDestinationType"] == "s3"
    bucket = logical_id(stack, stack.storage.access_log_bucket)
    destination = flow_log["LogDestination"]["Fn::Join"][1]
    assert destination[0] == {"Fn::GetAtt": [bucket, "Arn"]}
    assert destination[1] == f"/{FLOW_LOG_PREFIX}"


def test_default_security_group_restricted(template: Template) -> None:
    restrictions = template.find_resources("Custom::VpcRestrictDefaultSG")
    assert len(restrictions) == 1


def test_cidr_from_context() -> None:
    _, other = build_app({**CDK_CONTEXT, "vpc-cidr": "172.20.0.0/16"})
    [vpc] = _of_type(Template.from_stack(other), "AWS::EC2::VPC")
    assert vpc["CidrBlock"] == "172.20.0.0/16"


def test_rule_packs_pass(stack: CirrusStack) -> None:
    assert findings(stack, "Cirrus/Network") == []


def test_nothing_acknowledged(stack: CirrusStack) -> None:
    assert acknowledged(stack, "Cirrus/Network") == set()
