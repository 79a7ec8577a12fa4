"""Creates on moto the resources that the CDK stack defines in AWS.

The names come from ``cirrus.config.ResourceNames`` as in the stack; the shape (SSE-KMS by
default, the redrive policy, the object-created notification) follows ``infra/``.
"""

from __future__ import annotations

import dataclasses
import json

from cirrus.audit_table import bind_audit_model
from cirrus.aws import AwsClients
from cirrus.config import INGEST_MAX_RECEIVES, Settings
from cirrus.index.models import bind_index_model
from cirrus.local.event_resources import create_event_resources
from cirrus.storage.keys import INSTANCE_SUFFIX
from cirrus.storage.transfers import TRANSFER_EXPIRATION_DAYS, TRANSFER_PREFIX

INGEST_VISIBILITY_TIMEOUT_SECONDS = 120


def create_resources(settings: Settings) -> Settings:
    """Create the key, bucket, tables and queues; return settings with the key's ARN."""
    clients = AwsClients(settings)
    key_arn = _create_key(clients, settings)
    settings = dataclasses.replace(settings, kms_key_id=key_arn)
    queue_arn = _create_queues(clients, settings)
    _create_bucket(clients, settings, key_arn, queue_arn)
    model = bind_index_model(settings)
    if not model.exists():
        model.create_table(wait=True, billing_mode="PAY_PER_REQUEST")
    create_audit_table(settings)
    create_event_resources(clients, settings)
    return settings


def create_audit_table(settings: Settings) -> None:
    """Create the audit table with its ``by-study`` index, unless it exists or is not named."""
    audit_model = bind_audit_model(settings)
    if audit_model is not None and not audit_model.exists():
        audit_model.create_table(wait=True, billing_mode="PAY_PER_REQUEST")


def _create_key(clients: AwsClients, settings: Settings) -> str:
    alias = settings.kms_key_id
    for entry in clients.kms.list_aliases()["Aliases"]:
        if entry["AliasName"] == alias and "TargetKeyId" in entry:
            return str(clients.kms.describe_key(KeyId=entry["TargetKeyId"])["KeyMetadata"]["Arn"])
    metadata = clients.kms.create_key(Description=f"{settings.deployment} data at rest")[
        "KeyMetadata"
    ]
    clients.kms.enable_key_rotation(KeyId=metadata["KeyId"])
    clients.kms.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
    return str(metadata["Arn"])


def _create_queues(clients: AwsClients, settings: Settings) -> str:
    sqs = clients.sqs
    dlq_url = sqs.create_queue(
        QueueName=settings.dead_letter_queue,
        Attributes={"KmsMasterKeyId": settings.kms_key_id, "MessageRetentionPeriod": "1209600"},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(INGEST_MAX_RECEIVES)}
    queue_url = sqs.create_queue(
        QueueName=settings.ingest_queue,
        Attributes={
            "KmsMasterKeyId": settings.kms_key_id,
            "VisibilityTimeout": str(INGEST_VISIBILITY_TIMEOUT_SECONDS),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    return str(
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    )


def _create_bucket(clients: AwsClients, settings: Settings, key_arn: str, queue_arn: str) -> None:
    s3 = clients.s3
    existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    if settings.bucket not in existing:
        s3.create_bucket(Bucket=settings.bucket)
    s3.put_bucket_encryption(
        Bucket=settings.bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key_arn,
                    },
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    s3.put_public_access_block(
        Bucket=settings.bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_lifecycle_configuration(
        Bucket=settings.bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "expire-transfers",
                    "Filter": {"Prefix": TRANSFER_PREFIX},
                    "Status": "Enabled",
                    "Expiration": {"Days": TRANSFER_EXPIRATION_DAYS},
                    "AbortIncompleteMultipartUpload": {
                        "DaysAfterInitiation": TRANSFER_EXPIRATION_DAYS
                    },
                }
            ]
        },
    )
    s3.put_bucket_notification_configuration(
        Bucket=settings.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {
                            "FilterRules": [
                                {"Name": "prefix", "Value": "sites/"},
                                {"Name": "suffix", "Value": INSTANCE_SUFFIX},
                            ]
                        }
                    },
                }
            ]
        },
    )
