"""CDK assertions on the DICOMweb function, its REST API and the transfer lifecycle rule."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from cirrus.audit import AUDIT_PREFIX
from cirrus.config import ENV
from cirrus.storage.transfers import TRANSFER_EXPIRATION_DAYS, TRANSFER_PREFIX
from cirrus_infra import CirrusStack, build_app
from cirrus_infra.dicomweb import FUNCTION_MEMORY_MB, STAGE
from tests.infra.test_stack import CDK_CONTEXT


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    stack: CirrusStack
    _, stack = build_app(CDK_CONTEXT, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return Template.from_stack(stack)


def resources_of(template: Template, kind: str) -> list[dict[str, Any]]:
    return list(template.find_resources(kind).values())


def test_every_method_uses_iam(template: Template) -> None:
    methods = resources_of(template, "AWS::ApiGateway::Method")

    assert len(methods) == 2
    for method in methods:
        assert method["Properties"]["AuthorizationType"] == "AWS_IAM"
        assert method["Properties"]["HttpMethod"] == "ANY"
        assert method["Properties"]["Integration"]["Type"] == "AWS_PROXY"


def test_api_passes_binary_bodies(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApiGateway::RestApi",
        {"BinaryMediaTypes": ["*/*"], "EndpointConfiguration": {"Types": ["REGIONAL"]}},
    )


def test_stage_logs_and_traces(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": STAGE,
            "TracingEnabled": True,
            "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}),
            "MethodSettings": [
                Match.object_like({"LoggingLevel": "ERROR", "DataTraceEnabled": False})
            ],
        },
    )  # fmt: skip


def test_function_settings(template: Template) -> None:
    functions = resources_of(template, "AWS::Lambda::Function")
    assert len(functions) == 1
    properties = functions[0]["Properties"]

    assert properties["Handler"] == "dicomweb.handler.lambda_handler"
    assert properties["MemorySize"] == FUNCTION_MEMORY_MB
    assert properties["Timeout"] == 30
    assert properties["Architectures"] == ["arm64"]
    assert len(properties["Layers"]) == 1
    variables = properties["Environment"]["Variables"]
    for field in ("deployment", "bucket", "table", "ingest_queue", "kms_key_id"):
        assert ENV[field] in variables, field


def test_role_scoped_to_prefixes(template: Template) -> None:
    policies = resources_of(template, "AWS::IAM::Policy")
    statements = [
        statement
        for policy in policies
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    object_resources = [
        json.dumps(statement["Resource"])
        for statement in statements
        if any(str(action).startswith("s3:") and action != "s3:ListBucket"
               for action in _as_list(statement["Action"]))
    ]  # fmt: skip

    assert len(object_resources) == 3
    assert any("/sites/*" in resource for resource in object_resources)
    assert any(f"/{TRANSFER_PREFIX}*" in resource for resource in object_resources)
    assert any(f"/{AUDIT_PREFIX}*" in resource for resource in object_resources)
    for statement in statements:
        assert "s3:*" not in _as_list(statement["Action"])


def test_role_may_delete_and_audit(template: Template) -> None:
    """DELETE removes instance objects and writes audit records, which it never reads back."""
    statements = [
        statement
        for policy in resources_of(template, "AWS::IAM::Policy")
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    by_prefix: dict[str, set[str]] = {}
    for statement in statements:
        resource = json.dumps(statement["Resource"])
        for prefix in ("/sites/*", f"/{AUDIT_PREFIX}*"):
            if prefix in resource:
                by_prefix.setdefault(prefix, set()).update(_as_list(statement["Action"]))
    assert "s3:DeleteObject" in by_prefix["/sites/*"]
    assert by_prefix[f"/{AUDIT_PREFIX}*"] == {"s3:PutObject"}
    for statement in statements:
        assert "s3:*" not in _as_list(statement["Action"])


def test_transfer_lifecycle_rule(template: Template) -> None:
    buckets = template.find_resources(
        "AWS::S3::Bucket", {"Properties": {"LifecycleConfiguration": Match.any_value()}}
    )
    assert len(buckets) == 1
    (bucket,) = buckets.values()
    (rule,) = bucket["Properties"]["LifecycleConfiguration"]["Rules"]

    assert rule["Prefix"] == TRANSFER_PREFIX
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == TRANSFER_EXPIRATION_DAYS
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": TRANSFER_EXPIRATION_DAYS}
    assert rule["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": TRANSFER_EXPIRATION_DAYS
    }


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
