"""CDK assertions on the event bus, the changes table and the StudyStable function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from cirrus.config import ENV
from cirrus.events.model import SOURCE
from cirrus.events.tables import ChangeRecord
from cirrus_infra import CirrusStack, build_app
from cirrus_infra import events as events_module
from cirrus_infra.lambdas import DATA_KEY_ACTIONS
from tests.infra.test_functions import (
    common_statements,
    function_of,
    put_events_statement,
    statement,
    statements_of,
    via,
)
from tests.infra.test_stack import CDK_CONTEXT, NAMES, arn_of, logical_id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> CirrusStack:
    outdir = tmp_path_factory.mktemp("cdk.out")
    _, built = build_app(CDK_CONTEXT, outdir=str(outdir))
    return built


@pytest.fixture(scope="module")
def resources(stack: CirrusStack) -> dict[str, Any]:
    template: dict[str, Any] = Template.from_stack(stack).to_json()
    return template["Resources"]


def _properties(resources: dict[str, Any], stack: CirrusStack, construct: Any) -> Any:
    return resources[logical_id(stack, construct)]["Properties"]


def _of_type(resources: dict[str, Any], kind: str) -> list[Any]:
    return [r["Properties"] for r in resources.values() if r["Type"] == kind]


def test_bus_encrypted_with_data_key(resources: dict[str, Any], stack: CirrusStack) -> None:
    bus = _properties(resources, stack, stack.events.bus)
    assert bus["Name"] == NAMES.event_bus
    assert bus["KmsKeyIdentifier"] == arn_of(stack, stack.storage.key)


def test_key_policy_lets_eventbridge_use_key_for_bus(
    resources: dict[str, Any], stack: CirrusStack
) -> None:
    key = _properties(resources, stack, stack.storage.key)
    [grant] = [
        item
        for item in key["KeyPolicy"]["Statement"]
        if item.get("Principal") == {"Service": "events.amazonaws.com"}
    ]
    assert "kms:Encrypt" not in grant["Action"]
    assert f":event-bus/{NAMES.event_bus}" in json.dumps(grant["Condition"]["StringEquals"])


def test_archive_keeps_cirrus_events(resources: dict[str, Any], stack: CirrusStack) -> None:
    [archive] = _of_type(resources, "AWS::Events::Archive")
    assert archive["SourceArn"] == arn_of(stack, stack.events.bus)
    assert archive["EventPattern"] == {"source": [SOURCE]}
    assert archive["RetentionDays"] == 30


def test_changes_table_matches_model(resources: dict[str, Any], stack: CirrusStack) -> None:
    table = _properties(resources, stack, stack.events.table)
    assert table["TableName"] == NAMES.changes_table
    schema = ChangeRecord._get_schema()
    assert sorted(table["KeySchema"], key=json.dumps) == sorted(
        schema["key_schema"], key=json.dumps
    )
    assert table["SSESpecification"]["KMSMasterKeyId"] == arn_of(stack, stack.storage.key)
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionProtectionEnabled"] is True


def test_stable_queue_redrive(resources: dict[str, Any], stack: CirrusStack) -> None:
    queue = _properties(resources, stack, stack.events.queue)
    assert queue["QueueName"] == NAMES.stable_queue
    assert queue["KmsMasterKeyId"] == arn_of(stack, stack.storage.key)
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": arn_of(stack, stack.events.dead_letter_queue),
        "maxReceiveCount": events_module.STABLE_MAX_RECEIVES,
    }
    dead_letters = _properties(resources, stack, stack.events.dead_letter_queue)
    assert dead_letters["QueueName"] == NAMES.stable_dead_letter_queue
    assert dead_letters["KmsMasterKeyId"] == arn_of(stack, stack.storage.key)


def test_stable_function_statements(resources: dict[str, Any], stack: CirrusStack) -> None:
    events, storage = stack.events, stack.storage
    expected = [
        *common_statements(stack, "stable"),
        statement(["dynamodb:GetItem", "dynamodb:UpdateItem"], [arn_of(stack, events.table)]),
        statement(["dynamodb:GetItem"], [arn_of(stack, storage.table)]),
        statement(
            [
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
                "sqs:SendMessage",
            ],
            [arn_of(stack, events.queue)],
        ),
        statement(["sqs:SendMessage"], [arn_of(stack, events.dead_letter_queue)]),
        put_events_statement(stack),
        statement(DATA_KEY_ACTIONS, [arn_of(stack, storage.key)], via("sqs", "dynamodb")),
    ]
    assert statements_of(resources, stack, "stable") == sorted(expected, key=json.dumps)


def test_stable_function_environment(resources: dict[str, Any], stack: CirrusStack) -> None:
    variables = function_of(resources, stack, "stable")["Environment"]["Variables"]
    assert variables[ENV["stable_after_seconds"]] == "120"
    assert variables[ENV["event_bus"]] == {"Ref": logical_id(stack, stack.events.bus)}
    assert variables[ENV["changes_table"]] == {"Ref": logical_id(stack, stack.events.table)}


def test_stable_event_source(resources: dict[str, Any], stack: CirrusStack) -> None:
    function = {"Ref": logical_id(stack, stack.events.function)}
    [mapping] = [
        m for m in _of_type(resources, "AWS::Lambda::EventSourceMapping")
        if m["FunctionName"] == function
    ]  # fmt: skip
    assert mapping["EventSourceArn"] == arn_of(stack, stack.events.queue)
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_put_events_only_on_bus(resources: dict[str, Any], stack: CirrusStack) -> None:
    granted = []
    for policy in _of_type(resources, "AWS::IAM::ManagedPolicy"):
        for item in policy["PolicyDocument"]["Statement"]:
            actions = item["Action"] if isinstance(item["Action"], list) else [item["Action"]]
            if any(action.startswith("events:") for action in actions):
                granted.append((actions, item["Resource"]))
    assert len(granted) == 4  # ingest, DICOMweb, the gateway and the stable function
    for actions, resource in granted:
        assert actions == ["events:PutEvents"]
        assert resource == arn_of(stack, stack.events.bus)


def test_alarms_on_dead_letters_and_unsent(resources: dict[str, Any]) -> None:
    alarms = {a["AlarmName"]: a for a in _of_type(resources, "AWS::CloudWatch::Alarm")}
    assert f"{NAMES.deployment}-stable-dead-letters" in alarms
    unsent = alarms[f"{NAMES.deployment}-events-not-sent"]
    assert unsent["MetricName"] == events_module.UNSENT_METRIC
    assert unsent["AlarmActions"]
    filters = _of_type(resources, "AWS::Logs::MetricFilter")
    unsent_filters = [f for f in filters if f["FilterPattern"] == events_module.UNSENT_PATTERN]
    assert len(unsent_filters) == 4


def test_quiet_period_from_context(tmp_path: Path) -> None:
    context = {**CDK_CONTEXT, events_module.STABLE_AFTER_CONTEXT_KEY: "900"}
    _, built = build_app(context, outdir=str(tmp_path))
    assert built.events.stable_after_seconds == 900
