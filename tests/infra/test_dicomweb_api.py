"""CDK assertions on the DICOMweb REST API and the transfer lifecycle rule.

The function, its role and its layers are checked with the ingest function's in
test_functions.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Template

from cirrus.config import ENV, Settings
from cirrus.storage.transfers import TRANSFER_EXPIRATION_DAYS, TRANSFER_PREFIX
from cirrus_infra import CirrusStack, build_app
from cirrus_infra.dicomweb import (
    ACCESS_LOG_FIELDS,
    CORS_CONTEXT_KEY,
    STAGE,
    THROTTLE_BURST,
    THROTTLE_RATE,
)
from tests.infra.nag import acknowledged, findings
from tests.infra.test_stack import CDK_CONTEXT, arn_of, logical_id

CORS_ORIGINS = ("https://viewer.example.org", "https://other.example.org")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> CirrusStack:
    _, stack = build_app(CDK_CONTEXT, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return stack


@pytest.fixture(scope="module")
def template(stack: CirrusStack) -> Template:
    return Template.from_stack(stack)


@pytest.fixture(scope="module")
def cors_stack(tmp_path_factory: pytest.TempPathFactory) -> CirrusStack:
    context = {**CDK_CONTEXT, CORS_CONTEXT_KEY: ",".join(CORS_ORIGINS)}
    _, stack = build_app(context, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return stack


def resources_of(template: Template, kind: str) -> list[dict[str, Any]]:
    return list(template.find_resources(kind).values())


def test_every_method_uses_iam(template: Template) -> None:
    methods = resources_of(template, "AWS::ApiGateway::Method")
    # Browsers send CORS preflight requests without credentials, so OPTIONS needs none.
    others = [m for m in methods if m["Properties"]["HttpMethod"] != "OPTIONS"]

    assert len(others) == 2
    for method in others:
        assert method["Properties"]["AuthorizationType"] == "AWS_IAM"
        assert method["Properties"]["HttpMethod"] == "ANY"
        assert method["Properties"]["Integration"]["Type"] == "AWS_PROXY"


def test_api_passes_binary_bodies(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApiGateway::RestApi",
        {"BinaryMediaTypes": ["*/*"], "EndpointConfiguration": {"Types": ["REGIONAL"]}},
    )


def test_stage_settings(template: Template) -> None:
    [stage] = resources_of(template, "AWS::ApiGateway::Stage")
    properties = stage["Properties"]

    assert properties["StageName"] == STAGE
    assert properties["TracingEnabled"] is True
    assert properties["MethodSettings"] == [
        {
            "HttpMethod": "*",
            "ResourcePath": "/*",
            "LoggingLevel": "ERROR",
            "DataTraceEnabled": False,
            "MetricsEnabled": True,
            "CachingEnabled": False,
            "ThrottlingRateLimit": THROTTLE_RATE,
            "ThrottlingBurstLimit": THROTTLE_BURST,
        }
    ]
    assert "ClientCertificateId" not in properties


def test_access_log_is_json(template: Template) -> None:
    [stage] = resources_of(template, "AWS::ApiGateway::Stage")
    setting = stage["Properties"]["AccessLogSetting"]
    fields = json.loads(setting["Format"])

    assert fields == ACCESS_LOG_FIELDS
    assert "$context.requestId" in fields.values()
    assert "$context.identity.userArn" in fields.values()
    # The path and query string carry patient data; the resource template does not.
    assert "$context.path" not in setting["Format"]
    assert fields["resourcePath"] == "$context.resourcePath"


def test_access_log_group_encrypted(template: Template, stack: CirrusStack) -> None:
    [stage] = resources_of(template, "AWS::ApiGateway::Stage")
    destination = json.dumps(stage["Properties"]["AccessLogSetting"]["DestinationArn"])
    groups = template.find_resources("AWS::Logs::LogGroup")
    [name] = [name for name in groups if f'"{name}"' in destination]
    group = groups[name]["Properties"]

    assert name.startswith("DicomwebAccessLogs")
    assert group["KmsKeyId"] == arn_of(stack, stack.storage.key)
    assert group["RetentionInDays"] == 90


def _viewer_origin(stack: CirrusStack) -> dict[str, Any]:
    distribution = logical_id(stack, stack.viewer.distribution)
    return {"Fn::Join": ["", ["https://", {"Fn::GetAtt": [distribution, "DomainName"]}]]}


def test_viewer_origin_allowed_by_default(template: Template, stack: CirrusStack) -> None:
    methods = resources_of(template, "AWS::ApiGateway::Method")
    function = template.to_json()["Resources"][logical_id(stack, stack.dicomweb.function)]
    variables = function["Properties"]["Environment"]["Variables"]

    assert len([m for m in methods if m["Properties"]["HttpMethod"] == "OPTIONS"]) == 2
    assert variables[ENV["cors_origins"]] == _viewer_origin(stack)


def test_cors_origins_open_preflight(cors_stack: CirrusStack) -> None:
    template = Template.from_stack(cors_stack)
    methods = [m["Properties"] for m in resources_of(template, "AWS::ApiGateway::Method")]
    preflight = [m for m in methods if m["HttpMethod"] == "OPTIONS"]
    others = [m for m in methods if m["HttpMethod"] != "OPTIONS"]
    function = template.to_json()["Resources"][logical_id(cors_stack, cors_stack.dicomweb.function)]
    variables = function["Properties"]["Environment"]["Variables"]

    assert len(preflight) == 2
    for method in preflight:
        assert method["AuthorizationType"] == "NONE"
        assert method["Integration"]["Type"] == "AWS_PROXY"
    assert len(others) == 2
    for method in others:
        assert method["AuthorizationType"] == "AWS_IAM"
    origins = variables[ENV["cors_origins"]]["Fn::Join"]
    assert origins[0] == ""
    assert origins[1][0] == ",".join(CORS_ORIGINS) + ",https://"
    required = {ENV["bucket"]: "bucket", ENV["table"]: "table", ENV["kms_key_id"]: "key"}
    settings = Settings.from_env({**required, ENV["cors_origins"]: ",".join(CORS_ORIGINS)})
    assert settings.cors_origins == CORS_ORIGINS


def test_cors_preflight_acknowledged(cors_stack: CirrusStack) -> None:
    assert findings(cors_stack, "Cirrus/Dicomweb") == []
    preflight = {
        entry for entry in acknowledged(cors_stack, "Cirrus/Dicomweb") if "OPTIONS" in entry[0]
    }
    assert preflight == {
        ("Cirrus/Dicomweb/Api/Default/OPTIONS", "AwsSolutions-APIG4"),
        ("Cirrus/Dicomweb/Api/Default/{proxy+}/OPTIONS", "AwsSolutions-APIG4"),
    }


def test_transfer_lifecycle_rule(template: Template, stack: CirrusStack) -> None:
    archive = template.to_json()["Resources"][logical_id(stack, stack.storage.bucket)]
    rules = archive["Properties"]["LifecycleConfiguration"]["Rules"]
    [rule] = [rule for rule in rules if rule["Prefix"] == TRANSFER_PREFIX]

    assert rule["Prefix"] == TRANSFER_PREFIX
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == TRANSFER_EXPIRATION_DAYS
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": TRANSFER_EXPIRATION_DAYS}
    assert rule["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": TRANSFER_EXPIRATION_DAYS
    }
