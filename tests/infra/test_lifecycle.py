"""The archive bucket's lifecycle rules from a rules file, and the function metrics' widgets.

One stack is built with ``-c lifecycle-rules=FILE`` for the module; ``Template.from_stack``
raises on any cdk-nag finding, so building it also checks that the stack stays clean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from cirrus.config import ENV
from cirrus.lambda_metrics import (
    DEFAULT_NAMESPACE,
    DICOMWEB_METRICS,
    DICOMWEB_SERVICE,
    INGEST_METRICS,
    INGEST_SERVICE,
)
from cirrus.lifecycle.rules import parse_rules
from cirrus_infra import CirrusStack, build_app
from cirrus_infra.function_metrics import DICOMWEB_DIMENSION, INGEST_DIMENSION
from cirrus_infra.retention import RULES_VARIABLE, rules_json
from tests.infra.test_functions import (
    DATA_KEY_ACTIONS,
    WILDCARD_RESOURCE_ACTIONS,
    arn_of,
    as_list,
    logical_id,
    properties,
    statement,
    under,
    via,
)
from tests.infra.test_monitoring import dashboard_body, of_type
from tests.infra.test_stack import CDK_CONTEXT, NAMES

RULES = {
    "rules": [
        {
            "site": "north",
            "modality": "CT",
            "transitions": [
                {"days": 30, "storage_class": "STANDARD_IA"},
                {"days": 180, "storage_class": "GLACIER_IR"},
            ],
            "retain_years": 10,
        },
        {"site": "north", "modality": "SR", "retain_days": 3650},
        {
            "site": "south",
            "transitions": [
                {"days": 0, "storage_class": "INTELLIGENT_TIERING"},
            ],
        },
    ]
}


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.json"
    path.write_text(json.dumps(RULES))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, rules_file: Path) -> CirrusStack:
    context = {**CDK_CONTEXT, "lifecycle-rules": str(rules_file)}
    _, stack = build_app(context, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    return stack


@pytest.fixture(scope="module")
def resources(stack: CirrusStack) -> dict[str, Any]:
    resources: dict[str, Any] = Template.from_stack(stack).to_json()["Resources"]
    return resources


def lifecycle_rules(resources: dict[str, Any]) -> dict[str, Any]:
    [bucket] = [
        resource["Properties"]
        for resource in of_type(resources, "AWS::S3::Bucket").values()
        if "NotificationConfiguration" in resource["Properties"]
    ]
    return {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}


def test_rules_file_replaces_default_tiering(resources: dict[str, Any]) -> None:
    rules = lifecycle_rules(resources)
    assert set(rules) == {"expire-transfers", "tier-north-CT", "tier-south-all"}


def test_modality_rule_filters_on_tag(resources: dict[str, Any]) -> None:
    rule = lifecycle_rules(resources)["tier-north-CT"]
    assert rule["Prefix"] == "sites/north/"
    assert rule["TagFilters"] == [{"Key": "modality", "Value": "CT"}]
    assert rule["Transitions"] == [
        {"StorageClass": "STANDARD_IA", "TransitionInDays": 30},
        {"StorageClass": "GLACIER_IR", "TransitionInDays": 180},
    ]
    assert rule["Status"] == "Enabled"


def test_site_rule_filters_on_prefix(resources: dict[str, Any]) -> None:
    rule = lifecycle_rules(resources)["tier-south-all"]
    assert rule["Prefix"] == "sites/south/"
    assert "TagFilters" not in rule
    assert rule["Transitions"] == [{"StorageClass": "INTELLIGENT_TIERING", "TransitionInDays": 0}]


def test_retention_is_no_expiration(resources: dict[str, Any]) -> None:
    for rule_id, rule in lifecycle_rules(resources).items():
        if rule_id != "expire-transfers":
            assert "ExpirationInDays" not in rule, rule_id
            assert "ExpirationDate" not in rule, rule_id


def test_template_matches_cli_output(resources: dict[str, Any]) -> None:
    # `cirrus lifecycle show` prints the same transitions that the stack deploys.
    shown = {rule["ID"]: rule for rule in parse_rules(json.dumps(RULES)).s3_rules()}
    deployed = lifecycle_rules(resources)
    for rule_id, rule in shown.items():
        transitions = [
            {"StorageClass": step["StorageClass"], "TransitionInDays": step["Days"]}
            for step in rule["Transitions"]
        ]
        assert deployed[rule_id]["Transitions"] == transitions


def test_rules_file_and_tiering_rejected(rules_file: Path) -> None:
    context = {
        **CDK_CONTEXT,
        "lifecycle-rules": str(rules_file),
        "archive-tiering": [{"site": "*", "days": 1}],
    }
    with pytest.raises(ValueError, match="not both"):
        build_app(context)


def test_invalid_rules_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    rule = {"site": "north", "transitions": [{"days": 1, "storage_class": "DEEP_ARCHIVE"}]}
    path.write_text(json.dumps({"rules": [rule]}))
    with pytest.raises(ValueError, match="DEEP_ARCHIVE is rejected"):
        build_app({**CDK_CONTEXT, "lifecycle-rules": str(path)})


def test_dashboard_charts_function_metrics(resources: dict[str, Any]) -> None:
    body = dashboard_body(resources)
    for service, dimension, metric_names in (
        (INGEST_SERVICE, INGEST_DIMENSION, INGEST_METRICS),
        (DICOMWEB_SERVICE, DICOMWEB_DIMENSION, DICOMWEB_METRICS),
    ):
        for metric_name in metric_names:
            search = (
                f"SEARCH('{{{DEFAULT_NAMESPACE},Deployment,{dimension},service}} "
                f'MetricName=\\"{metric_name}\\" Deployment=\\"{NAMES.deployment}\\" '
                f'service=\\"{service}\\"\''
            )
            assert search in body, metric_name


# The retention function


def retention_function(resources: dict[str, Any], stack: CirrusStack) -> Any:
    assert stack.retention is not None
    return properties(resources, stack, stack.retention.function)


def test_retention_function_gets_retention_rules(
    resources: dict[str, Any], stack: CirrusStack
) -> None:
    function = retention_function(resources, stack)
    assert function["Handler"] == "functions.retention.handler.lambda_handler"
    assert function["ReservedConcurrentExecutions"] == 1
    variables = function["Environment"]["Variables"]
    assert json.loads(variables[RULES_VARIABLE]) == {
        "rules": [
            {"site": "north", "modality": "CT", "retain_years": 10},
            {"site": "north", "modality": "SR", "retain_days": 3650},
        ]
    }
    # The handler parses what the stack sets.
    assert parse_rules(variables[RULES_VARIABLE]).sites == ["north"]
    assert ENV["changes_table"] in variables
    assert ENV["event_bus"] in variables


def test_retention_runs_daily(resources: dict[str, Any], stack: CirrusStack) -> None:
    assert stack.retention is not None
    rule = properties(resources, stack, stack.retention.rule)
    assert rule["ScheduleExpression"] == "cron(0 3 * * ? *)"
    assert rule["State"] == "ENABLED"
    (target,) = rule["Targets"]
    assert target["Arn"] == arn_of(stack, stack.retention.function)
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 2}


def test_retention_role_least_privilege(resources: dict[str, Any], stack: CirrusStack) -> None:
    assert stack.retention is not None
    storage = stack.storage
    archive = logical_id(stack, storage.bucket)
    table = logical_id(stack, storage.table)
    log_group = stack.retention.log_group
    expected = [
        statement(["logs:CreateLogStream", "logs:PutLogEvents"], [arn_of(stack, log_group)]),
        statement(sorted(WILDCARD_RESOURCE_ACTIONS), ["*"]),
        statement(["s3:DeleteObject", "s3:GetObject"], [under(archive, "/sites/*")]),
        statement(["s3:ListBucket"], [arn_of(stack, storage.bucket)]),
        statement(
            [
                "dynamodb:DeleteItem",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Query",
                "dynamodb:UpdateItem",
            ],
            [arn_of(stack, storage.table)],
        ),
        statement(["dynamodb:Query"], [under(table, "/index/by-level")]),
        statement(["dynamodb:GetItem", "dynamodb:PutItem"], [arn_of(stack, storage.audit_table)]),
        statement(DATA_KEY_ACTIONS, [arn_of(stack, storage.key)], via("s3", "dynamodb")),
        # The deleted changes of the feed and the InstanceDeleted events, as DELETE writes them.
        statement(
            ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
            [arn_of(stack, stack.events.table)],
        ),
        statement(["events:PutEvents"], [arn_of(stack, stack.events.bus)]),
    ]
    policy = properties(resources, stack, stack.retention.policy)
    actual = sorted(
        (
            {
                "Action": sorted(as_list(entry["Action"])),
                "Resource": as_list(entry["Resource"]),
                "Condition": entry.get("Condition"),
            }
            for entry in policy["PolicyDocument"]["Statement"]
        ),
        key=json.dumps,
    )
    assert actual == sorted(expected, key=json.dumps)


def test_retention_function_alarmed(resources: dict[str, Any]) -> None:
    names = {
        alarm["Properties"]["AlarmName"]
        for alarm in of_type(resources, "AWS::CloudWatch::Alarm").values()
    }
    assert f"{NAMES.deployment}-retention-errors" in names


def test_no_retention_function_without_retention(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    rule = {"site": "north", "transitions": [{"days": 0, "storage_class": "GLACIER_IR"}]}
    path.write_text(json.dumps({"rules": [rule]}))
    _, other = build_app({**CDK_CONTEXT, "lifecycle-rules": str(path)})
    assert other.retention is None


def test_long_retention_rules_rejected() -> None:
    rules = parse_rules(
        json.dumps({"rules": [{"site": f"site-{n}", "retain_days": 1} for n in range(200)]})
    )
    with pytest.raises(ValueError, match="merge rules"):
        rules_json(rules)
