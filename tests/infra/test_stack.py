"""CDK assertions and cdk-nag checks on the synthesized Cirrus stack.

The app is built once per module: the first synthesis pays the jsii start-up of several
seconds, later assertions cost milliseconds. The app gets the context of cdk.json, so the
feature flags are those that `cdk synth` uses.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from constructs import IConstruct

from cirrus.audit_table import STUDY_INDEX, AuditRecord
from cirrus.config import INGEST_MAX_RECEIVES, ResourceNames
from cirrus.index.models import GLOBAL_SECONDARY_INDEXES, IndexRecord
from cirrus_infra import CirrusStack, build_app
from cirrus_infra.viewer import DIST_CONTEXT_KEY
from tests.infra.nag import acknowledged, findings

REPO = Path(__file__).resolve().parents[2]
CDK_JSON = json.loads((REPO / "cdk.json").read_text())
# A small build folder replaces viewer/dist, so that the tests need no viewer build.
VIEWER_DIST = Path(__file__).resolve().parent / "viewer_dist"
CDK_CONTEXT: dict[str, Any] = {**CDK_JSON["context"], DIST_CONTEXT_KEY: str(VIEWER_DIST)}
NAMES = ResourceNames(deployment=CDK_CONTEXT["deployment"])

# Every acknowledged cdk-nag finding, as (construct path, rule id). A new acknowledgment must
# be added here, so that it shows in review.
_ARCHIVE = "<StorageArchiveEF4C9845.Arn>"
ACKNOWLEDGED_FINDINGS = {
    ("Cirrus/Storage/AccessLogs", "AwsSolutions-S1"),
    ("Cirrus/Storage/AccessLogs", "HIPAA.Security-S3DefaultEncryptionKMS"),
    ("Cirrus/Storage/AccessLogs", "HIPAA.Security-S3BucketReplicationEnabled"),
    ("Cirrus/Storage/Archive", "HIPAA.Security-S3BucketReplicationEnabled"),
    ("Cirrus/Storage/BackupPlan/Index", "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:"
     "policy/service-role/AWSBackupServiceRolePolicyForBackup]"),
    ("Cirrus/Storage/BackupPlan/Changes", "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:"
     "policy/service-role/AWSBackupServiceRolePolicyForBackup]"),
    ("Cirrus/Dicomweb/FunctionRolePolicy", f"AwsSolutions-IAM5[Resource::{_ARCHIVE}/sites/*]"),
    ("Cirrus/Dicomweb/FunctionRolePolicy",
     f"AwsSolutions-IAM5[Resource::{_ARCHIVE}/transfers/*]"),
    ("Cirrus/Dicomweb/FunctionRolePolicy", "AwsSolutions-IAM5[Resource::*]"),
    ("Cirrus/Dicomweb/Function", "AwsSolutions-L1"),
    ("Cirrus/Dicomweb/Function", "HIPAA.Security-LambdaDLQ"),
    ("Cirrus/Dicomweb/Pixel/FunctionRolePolicy",
     f"AwsSolutions-IAM5[Resource::{_ARCHIVE}/sites/*]"),
    ("Cirrus/Dicomweb/Pixel/FunctionRolePolicy",
     f"AwsSolutions-IAM5[Resource::{_ARCHIVE}/transfers/sites/*/responses/*]"),
    ("Cirrus/Dicomweb/Pixel/FunctionRolePolicy", "AwsSolutions-IAM5[Resource::*]"),
    ("Cirrus/Dicomweb/Pixel/Function", "AwsSolutions-L1"),
    ("Cirrus/Dicomweb/Pixel/Function", "HIPAA.Security-LambdaDLQ"),
    ("Cirrus/Dicomweb/Api/Default/OPTIONS", "AwsSolutions-APIG4"),
    ("Cirrus/Dicomweb/Api/Default/{proxy+}/OPTIONS", "AwsSolutions-APIG4"),
    ("Cirrus/Dicomweb/Api", "AwsSolutions-APIG2"),
    ("Cirrus/Dicomweb/Api", "AwsSolutions-APIG3"),
    ("Cirrus/Dicomweb/Api", "AwsSolutions-COG4"),
    ("Cirrus/Dicomweb/Api", "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
     "service-role/AmazonAPIGatewayPushToCloudWatchLogs]"),
    ("Cirrus/Dicomweb/Api", "HIPAA.Security-APIGWCacheEnabledAndEncrypted"),
    ("Cirrus/Dicomweb/Api", "HIPAA.Security-APIGWSSLEnabled"),
}  # fmt: skip

DENY_INSECURE_TRANSPORT = Match.object_like(
    {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
)


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


def logical_id(stack: CirrusStack, construct: IConstruct) -> str:
    """Return the logical id of a construct's CloudFormation resource."""
    return stack.get_logical_id(construct.node.default_child)  # type: ignore[arg-type]


def arn_of(stack: CirrusStack, construct: IConstruct) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id(stack, construct), "Arn"]}


def properties(resources: dict[str, Any], stack: CirrusStack, construct: IConstruct) -> Any:
    return resources[logical_id(stack, construct)]["Properties"]


def name_with_account_and_region(prefix: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [prefix, {"Ref": "AWS::AccountId"}, "-", {"Ref": "AWS::Region"}]]}


# Names


def test_bucket_name_ends_with_account_and_region(
    resources: dict[str, Any], stack: CirrusStack
) -> None:
    bucket = properties(resources, stack, stack.storage.bucket)
    assert bucket["BucketName"] == name_with_account_and_region(f"{NAMES.bucket}-")


def test_names_match_resource_names(resources: dict[str, Any], stack: CirrusStack) -> None:
    storage = stack.storage
    assert properties(resources, stack, storage.table)["TableName"] == NAMES.table
    assert properties(resources, stack, storage.ingest_queue)["QueueName"] == NAMES.ingest_queue
    dead_letter_queue = properties(resources, stack, storage.dead_letter_queue)
    assert dead_letter_queue["QueueName"] == NAMES.dead_letter_queue
    alias = stack.storage.key.node.find_child("Alias")
    assert properties(resources, stack, alias)["AliasName"] == NAMES.kms_alias


def test_long_deployment_name_rejected() -> None:
    # 26 characters is the longest name whose bucket name fits in 63 with any account and region.
    build_app({**CDK_CONTEXT, "deployment": "d" * 26})
    with pytest.raises(ValueError, match="too long for the archive bucket name"):
        build_app({**CDK_CONTEXT, "deployment": "d" * 27})


# KMS key


def test_key_rotation_and_alias(resources: dict[str, Any], stack: CirrusStack) -> None:
    key = stack.storage.key
    assert properties(resources, stack, key)["EnableKeyRotation"] is True
    alias = properties(resources, stack, key.node.find_child("Alias"))
    assert alias["TargetKeyId"] == arn_of(stack, key)


def test_key_policy_lets_s3_encrypt_notifications(template: Template, stack: CirrusStack) -> None:
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
    }
    template.has_resource_properties(
        "AWS::KMS::Key",
        {"KeyPolicy": {"Statement": Match.array_with([Match.object_like(statement)])}},
    )


# Archive bucket


def test_bucket_sse_kms_with_bucket_key(resources: dict[str, Any], stack: CirrusStack) -> None:
    bucket = properties(resources, stack, stack.storage.bucket)
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": arn_of(stack, stack.storage.key),
    }
    assert rule["BucketKeyEnabled"] is True


def test_bucket_blocks_public_access(resources: dict[str, Any], stack: CirrusStack) -> None:
    bucket = properties(resources, stack, stack.storage.bucket)
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


def test_bucket_versioned_and_logged(resources: dict[str, Any], stack: CirrusStack) -> None:
    bucket = properties(resources, stack, stack.storage.bucket)
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": logical_id(stack, stack.storage.access_log_bucket)},
        "LogFilePrefix": "archive/",
    }


def test_bucket_is_retained(resources: dict[str, Any], stack: CirrusStack) -> None:
    bucket = resources[logical_id(stack, stack.storage.bucket)]
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["UpdateReplacePolicy"] == "Retain"


@pytest.mark.parametrize("attribute", ["bucket", "access_log_bucket"])
def test_bucket_policy_requires_tls(template: Template, stack: CirrusStack, attribute: str) -> None:
    bucket = getattr(stack.storage, attribute)
    tls_below_1_2 = Match.object_like(
        {"Effect": "Deny", "Condition": {"NumericLessThan": {"s3:TlsVersion": 1.2}}}
    )
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": logical_id(stack, bucket)},
            "PolicyDocument": {
                "Statement": Match.array_with([DENY_INSECURE_TRANSPORT, tls_below_1_2])
            },
        },
    )


def test_bucket_policy_requires_data_key(template: Template, stack: CirrusStack) -> None:
    bucket = logical_id(stack, stack.storage.bucket)
    policies = template.find_resources(
        "AWS::S3::BucketPolicy", {"Properties": {"Bucket": {"Ref": bucket}}}
    )
    [policy] = policies.values()
    statements = {
        statement.get("Sid"): statement
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    }
    objects = {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/*"]]}
    other_encryption = statements["DenyOtherEncryption"]
    assert other_encryption["Effect"] == "Deny"
    assert other_encryption["Action"] == "s3:PutObject"
    assert other_encryption["Resource"] == objects
    assert other_encryption["Condition"] == {
        "StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "aws:kms"}
    }
    other_key = statements["DenyOtherKey"]
    assert other_key["Effect"] == "Deny"
    assert other_key["Condition"] == {
        "StringNotEqualsIfExists": {
            "s3:x-amz-server-side-encryption-aws-kms-key-id": arn_of(stack, stack.storage.key)
        }
    }


def test_access_log_bucket_uses_sse_s3(resources: dict[str, Any], stack: CirrusStack) -> None:
    bucket = properties(resources, stack, stack.storage.access_log_bucket)
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert bucket["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}


# Object-created notification


def test_notification_sends_instances_to_queue(
    resources: dict[str, Any], stack: CirrusStack
) -> None:
    bucket = properties(resources, stack, stack.storage.bucket)
    assert bucket["NotificationConfiguration"] == {
        "QueueConfigurations": [
            {
                "Event": "s3:ObjectCreated:*",
                "Queue": arn_of(stack, stack.storage.ingest_queue),
                "Filter": {
                    "S3Key": {
                        "Rules": [
                            {"Name": "prefix", "Value": "sites/"},
                            {"Name": "suffix", "Value": ".dcm"},
                        ]
                    }
                },
            }
        ]
    }


def test_notification_has_no_custom_resource(template: Template) -> None:
    template.resource_count_is("Custom::S3BucketNotifications", 0)
    functions = template.find_resources("AWS::Lambda::Function")
    assert [name for name in functions if "BucketNotificationsHandler" in name] == []


def test_bucket_created_after_queue_policy(resources: dict[str, Any], stack: CirrusStack) -> None:
    queue_policy = stack.storage.ingest_queue.node.find_child("Policy")
    bucket = resources[logical_id(stack, stack.storage.bucket)]
    assert logical_id(stack, queue_policy) in bucket["DependsOn"]


def test_queue_policy_allows_only_archive_bucket(template: Template, stack: CirrusStack) -> None:
    archive_arn = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                f":s3:::{NAMES.bucket}-",
                {"Ref": "AWS::AccountId"},
                "-",
                {"Ref": "AWS::Region"},
            ],
        ]
    }
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": arn_of(stack, stack.storage.ingest_queue),
        "Condition": {
            "ArnEquals": {"aws:SourceArn": archive_arn},
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        },
    }
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": logical_id(stack, stack.storage.ingest_queue)}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [DENY_INSECURE_TRANSPORT, Match.object_like(statement)]
                )
            },
        },
    )


# Queues


def test_ingest_queue_redrive_policy(resources: dict[str, Any], stack: CirrusStack) -> None:
    queue = properties(resources, stack, stack.storage.ingest_queue)
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": arn_of(stack, stack.storage.dead_letter_queue),
        "maxReceiveCount": INGEST_MAX_RECEIVES,
    }


def test_ingest_queue_settings(resources: dict[str, Any], stack: CirrusStack) -> None:
    queue = properties(resources, stack, stack.storage.ingest_queue)
    assert queue["VisibilityTimeout"] == 120
    assert queue["KmsMasterKeyId"] == arn_of(stack, stack.storage.key)


def test_dead_letter_queue_settings(resources: dict[str, Any], stack: CirrusStack) -> None:
    ingest_queue = properties(resources, stack, stack.storage.ingest_queue)
    dead_letter_queue = properties(resources, stack, stack.storage.dead_letter_queue)
    assert dead_letter_queue["KmsMasterKeyId"] == arn_of(stack, stack.storage.key)
    assert dead_letter_queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert dead_letter_queue["MessageRetentionPeriod"] > ingest_queue["MessageRetentionPeriod"]


@pytest.mark.parametrize("attribute", ["ingest_queue", "dead_letter_queue"])
def test_queue_policy_requires_tls(template: Template, stack: CirrusStack, attribute: str) -> None:
    queue = getattr(stack.storage, attribute)
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": logical_id(stack, queue)}],
            "PolicyDocument": {"Statement": Match.array_with([DENY_INSECURE_TRANSPORT])},
        },
    )


# Index table


def test_table_key_schema(resources: dict[str, Any], stack: CirrusStack) -> None:
    table = properties(resources, stack, stack.storage.table)
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {"AttributeName": "pk", "AttributeType": "S"} in table["AttributeDefinitions"]
    assert {"AttributeName": "sk", "AttributeType": "S"} in table["AttributeDefinitions"]


def test_table_global_secondary_indexes(resources: dict[str, Any], stack: CirrusStack) -> None:
    table = properties(resources, stack, stack.storage.table)
    # The stack must declare the indexes that the pynamodb model queries.
    expected = list(GLOBAL_SECONDARY_INDEXES)
    assert table["GlobalSecondaryIndexes"] == [
        {
            "IndexName": index_name,
            "KeySchema": [
                {"AttributeName": partition_key, "KeyType": "HASH"},
                {"AttributeName": sort_key, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
        for index_name, partition_key, sort_key in expected
    ]
    for _, partition_key, sort_key in expected:
        assert {"AttributeName": partition_key, "AttributeType": "S"} in table[
            "AttributeDefinitions"
        ]
        assert {"AttributeName": sort_key, "AttributeType": "S"} in table["AttributeDefinitions"]


def test_table_matches_index_model(resources: dict[str, Any], stack: CirrusStack) -> None:
    # In pynamodb 6, Model.create_table builds its request from _get_schema, so the local stack
    # creates its table from this schema.
    model = IndexRecord._get_schema()
    table = properties(resources, stack, stack.storage.table)
    assert table["KeySchema"] == model["key_schema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(
        model["attribute_definitions"], key=str
    )
    model_indexes = {
        index["index_name"]: (index["key_schema"], index["projection"])
        for index in model["global_secondary_indexes"]
    }
    table_indexes = {
        index["IndexName"]: (index["KeySchema"], index["Projection"])
        for index in table["GlobalSecondaryIndexes"]
    }
    assert table_indexes == model_indexes


def test_table_backup_and_encryption(resources: dict[str, Any], stack: CirrusStack) -> None:
    table = properties(resources, stack, stack.storage.table)
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": arn_of(stack, stack.storage.key),
    }
    assert table["DeletionProtectionEnabled"] is True


def test_table_in_monthly_backup_plan(
    resources: dict[str, Any], template: Template, stack: CirrusStack
) -> None:
    vaults = template.find_resources("AWS::Backup::BackupVault")
    [vault] = vaults.values()
    assert vault["Properties"]["EncryptionKeyArn"] == arn_of(stack, stack.storage.key)
    assert vault["DeletionPolicy"] == "Retain"
    [plan] = template.find_resources("AWS::Backup::BackupPlan").values()
    [rule] = plan["Properties"]["BackupPlan"]["BackupPlanRule"]
    assert rule["ScheduleExpression"] == "cron(0 3 1 * ? *)"
    assert rule["Lifecycle"] == {"DeleteAfterDays": 365}
    selections = template.find_resources("AWS::Backup::BackupSelection").values()
    selected = [item["Properties"]["BackupSelection"]["Resources"] for item in selections]
    assert sorted(selected, key=len) == [
        [arn_of(stack, stack.events.table)],
        [arn_of(stack, stack.storage.table), arn_of(stack, stack.storage.audit_table)],
    ]


# Audit table


def test_audit_table_matches_audit_model(resources: dict[str, Any], stack: CirrusStack) -> None:
    model = AuditRecord._get_schema()
    table = properties(resources, stack, stack.storage.audit_table)

    assert table["TableName"] == NAMES.audit_table
    assert table["KeySchema"] == model["key_schema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(
        model["attribute_definitions"], key=str
    )
    [index] = table["GlobalSecondaryIndexes"]
    [model_index] = model["global_secondary_indexes"]
    assert index["IndexName"] == model_index["index_name"] == STUDY_INDEX[0]
    assert index["KeySchema"] == model_index["key_schema"]


def test_audit_table_encrypted_and_kept(resources: dict[str, Any], stack: CirrusStack) -> None:
    table = properties(resources, stack, stack.storage.audit_table)

    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": arn_of(stack, stack.storage.key),
    }
    assert table["DeletionProtectionEnabled"] is True
    assert resources[logical_id(stack, stack.storage.audit_table)]["DeletionPolicy"] == "Retain"


def test_audit_table_denies_changes_to_all(resources: dict[str, Any], stack: CirrusStack) -> None:
    table = properties(resources, stack, stack.storage.audit_table)
    [statement] = table["ResourcePolicy"]["PolicyDocument"]["Statement"]

    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == {"AWS": "*"}
    assert set(statement["Action"]) == {
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:PartiQLUpdate",
        "dynamodb:PartiQLDelete",
    }


def test_roles_only_append_audit_records(template: Template, stack: CirrusStack) -> None:
    """Every role that names the audit table may put items into it, get one by its key, and
    do nothing else."""
    audit = arn_of(stack, stack.storage.audit_table)
    writers = set()
    for logical, policy in _policies(template).items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            resources = statement["Resource"]
            resources = resources if isinstance(resources, list) else [resources]
            if audit in resources:
                assert statement["Effect"] == "Allow"
                assert statement["Action"] == ["dynamodb:GetItem", "dynamodb:PutItem"], logical
                assert resources == [audit]
                writers.add(logical)
    expected = {
        logical_id(stack, stack.dicomweb.policy),
        logical_id(stack, stack.dicomweb.pixels.policy),
    }
    assert expected <= writers
    assert len(writers) == 3  # and the gateway task role's policy


def _policies(template: Template) -> dict[str, Any]:
    return {
        **template.find_resources("AWS::IAM::Policy"),
        **template.find_resources("AWS::IAM::ManagedPolicy"),
    }


# Archive options


def _archive_bucket(context: dict[str, Any]) -> dict[str, Any]:
    _, other = build_app({**CDK_CONTEXT, **context})
    [bucket] = [
        resource["Properties"]
        for resource in Template.from_stack(other).find_resources("AWS::S3::Bucket").values()
        if "NotificationConfiguration" in resource["Properties"]
    ]
    return bucket


def test_default_tiering_all_sites(resources: dict[str, Any], stack: CirrusStack) -> None:
    rules = properties(resources, stack, stack.storage.bucket)["LifecycleConfiguration"]["Rules"]
    [tiering] = [rule for rule in rules if rule["Id"].startswith("tier-")]
    assert tiering["Prefix"] == "sites/"
    assert tiering["Transitions"] == [{"StorageClass": "GLACIER_IR", "TransitionInDays": 180}]
    assert tiering["Status"] == "Enabled"


def test_tiering_per_site() -> None:
    bucket = _archive_bucket(
        {
            "archive-tiering": [
                {"site": "north", "days": 30, "storage-class": "INTELLIGENT_TIERING"},
                {"site": "south", "days": 365, "storage-class": "GLACIER_INSTANT_RETRIEVAL"},
            ]
        }
    )
    rules = {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["tier-north"]["Prefix"] == "sites/north/"
    assert rules["tier-north"]["Transitions"] == [
        {"StorageClass": "INTELLIGENT_TIERING", "TransitionInDays": 30}
    ]
    assert rules["tier-south"]["Prefix"] == "sites/south/"
    assert rules["tier-south"]["Transitions"] == [
        {"StorageClass": "GLACIER_IR", "TransitionInDays": 365}
    ]
    assert "tier-all-sites" not in rules
    assert "expire-transfers" in rules


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"archive-tiering": [{"site": "Bad Site", "days": 3}]}, "site"),
        ({"archive-tiering": [{"site": "*", "days": 3, "storage-class": "TAPE"}]}, "TAPE"),
        ({"archive-tiering": [{"site": "*"}]}, "days"),
        ({"archive-object-lock": {"mode": "FOREVER", "days": 1}}, "GOVERNANCE or COMPLIANCE"),
        ({"archive-object-lock": {"mode": "COMPLIANCE", "days": 0}}, "days >= 1"),
        ({"archive-replica": {"bucket-arn": "arn:aws:s3:::copy"}}, "key-arn"),
    ],
)
def test_invalid_archive_options_rejected(context: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_app({**CDK_CONTEXT, **context})


def test_no_object_lock_by_default(resources: dict[str, Any], stack: CirrusStack) -> None:
    bucket = properties(resources, stack, stack.storage.bucket)
    assert "ObjectLockEnabled" not in bucket
    assert "ObjectLockConfiguration" not in bucket
    assert "ReplicationConfiguration" not in bucket


def test_object_lock_from_context() -> None:
    bucket = _archive_bucket({"archive-object-lock": {"mode": "COMPLIANCE", "days": 2555}})
    assert bucket["ObjectLockEnabled"] is True
    assert bucket["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 2555}},
    }


def test_replication_from_context() -> None:
    replica = "arn:aws:s3:::cirrus-replica-eu-west-1"
    key = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    bucket = _archive_bucket({"archive-replica": {"bucket-arn": replica, "key-arn": key}})
    [rule] = bucket["ReplicationConfiguration"]["Rules"]
    assert rule["Destination"]["Bucket"] == replica
    assert rule["Destination"]["EncryptionConfiguration"] == {"ReplicaKmsKeyID": key}
    assert rule["SourceSelectionCriteria"]["SseKmsEncryptedObjects"] == {"Status": "Enabled"}
    assert rule["Status"] == "Enabled"


# Outputs


def test_outputs(template: Template, stack: CirrusStack) -> None:
    storage = stack.storage
    template.has_output("BucketName", {"Value": {"Ref": logical_id(stack, storage.bucket)}})
    template.has_output("TableName", {"Value": {"Ref": logical_id(stack, storage.table)}})
    template.has_output(
        "IngestQueueUrl", {"Value": {"Ref": logical_id(stack, storage.ingest_queue)}}
    )
    template.has_output("KeyArn", {"Value": arn_of(stack, storage.key)})


# cdk-nag


@pytest.mark.parametrize("component", ["Cirrus/Storage", "Cirrus/Dicomweb"])
def test_rule_packs_pass(stack: CirrusStack, component: str) -> None:
    assert findings(stack, component) == []


def test_acknowledged_findings(stack: CirrusStack) -> None:
    storage_and_api = acknowledged(stack, "Cirrus/Storage") | acknowledged(stack, "Cirrus/Dicomweb")
    assert storage_and_api == ACKNOWLEDGED_FINDINGS


# The app script


def test_cdk_json_runs_app_script() -> None:
    interpreter, script = shlex.split(CDK_JSON["app"])
    assert interpreter == ".venv/bin/python"
    assert (REPO / script).is_file()
    assert CDK_CONTEXT["cli-telemetry"] is False


def test_app_command_synthesizes(tmp_path: Path) -> None:
    # Runs the app command of cdk.json as the CDK CLI does, which passes the context and the
    # output folder in these variables. It starts a second jsii runtime, which costs seconds.
    environment = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({**CDK_CONTEXT, "deployment": "cirrus-ci"}),
        "CDK_OUTDIR": str(tmp_path),
    }
    result = subprocess.run(
        shlex.split(CDK_JSON["app"]),
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["artifacts"]["Cirrus"]["properties"]["stackName"] == "cirrus-ci"
    template = Template.from_json(json.loads((tmp_path / "Cirrus.template.json").read_text()))
    template.has_resource_properties("AWS::DynamoDB::Table", {"TableName": "cirrus-ci-index"})
