"""Storage of one deployment: data key, archive bucket, index table and ingest queues."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_backup as backup
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cirrus.audit_table import STUDY_INDEX
from cirrus.config import INGEST_MAX_RECEIVES, ResourceNames
from cirrus.lifecycle.rules import LifecycleRules, load_rules
from cirrus.storage.keys import INSTANCE_SUFFIX, site_prefix, validate_site
from cirrus.storage.tags import MODALITY_TAG
from cirrus.storage.transfers import TRANSFER_EXPIRATION_DAYS, TRANSFER_PREFIX

# S3 bucket names have at most 63 characters. The archive bucket name ends with
# "-{account}-{region}", and account ids have 12 digits. The region length is an estimate:
# the longest region name known in 2025, us-isof-south-1, has 15 characters.
_MAX_BUCKET_NAME = 63
_MAX_REGION_NAME = 15
_ACCOUNT_AND_REGION_SUFFIX = 1 + 12 + 1 + _MAX_REGION_NAME

# Only instance objects start the ingest pipeline. cirrus.storage.keys defines the key layout.
INGEST_PREFIX: Final = "sites/"

# AWS recommends a visibility timeout of at least six times the timeout of the Lambda function
# that consumes the queue, so the ingest function must finish within 20 s.
INGEST_VISIBILITY_TIMEOUT: Final = Duration.seconds(120)

# A standard queue keeps the original enqueue time when it moves a message to the dead-letter
# queue, so the dead-letter queue keeps messages longer than the ingest queue does.
INGEST_RETENTION: Final = Duration.days(4)
DEAD_LETTER_RETENTION: Final = Duration.days(14)

# Index name, partition key and sort key of each global secondary index of the index table, as
# the model in cirrus.index.models declares them. Every key attribute is a string.
GLOBAL_SECONDARY_INDEXES: Final = (
    ("by-level", "level_pk", "level_sk"),
    ("by-patient", "patient_pk", "patient_sk"),
    ("by-accession", "accession_pk", "accession_sk"),
    ("by-name", "name_pk", "name_sk"),
    ("by-modality", "modality_pk", "modality_sk"),
)


# Index backups in AWS Backup, besides point-in-time recovery, which restores any second of
# the last 35 days: one a month, kept a year. Each backup copies the whole table, so daily
# backups kept a year would cost 365 copies of the index (docs/deploy.md, "Cost model").
BACKUP_RETENTION: Final = Duration.days(365)
# Actions that the audit table's resource policy denies to everyone: every change to an item.
# BatchWriteItem is in the list because it can delete items, and the code writes with PutItem.
AUDIT_CHANGE_ACTIONS: Final = (
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
)
# Actions of the roles that write audit records (cirrus.audit_table.write_entry). GetItem reads
# back an item whose conditional PutItem failed, because botocore retries a PutItem whose
# response was lost, and the retry then finds the item that its first attempt put.
AUDIT_WRITE_ACTIONS: Final = ("dynamodb:GetItem", "dynamodb:PutItem")
# Without context, every site's objects move to Glacier Instant Retrieval after this many days:
# reads still take milliseconds, at a lower storage price (docs/deploy.md has the prices).
DEFAULT_TIERING_DAYS: Final = 180
DEFAULT_TIERING_CLASS: Final = "GLACIER_INSTANT_RETRIEVAL"
ALL_SITES: Final = "*"
# The CDK names of the storage classes that rules files may name.
CDK_STORAGE_CLASSES: Final = {
    "STANDARD_IA": s3.StorageClass.INFREQUENT_ACCESS,
    "ONEZONE_IA": s3.StorageClass.ONE_ZONE_INFREQUENT_ACCESS,
    "INTELLIGENT_TIERING": s3.StorageClass.INTELLIGENT_TIERING,
    "GLACIER_IR": s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
}


@dataclass(frozen=True)
class Tiering:
    """A lifecycle transition of one site's objects (``ALL_SITES`` for every site)."""

    site: str
    days: int
    storage_class: str

    def prefix(self) -> str:
        return INGEST_PREFIX if self.site == ALL_SITES else site_prefix(self.site)


@dataclass(frozen=True)
class ArchiveOptions:
    """Deployment choices for the archive bucket, read from the CDK context.

    - ``archive-tiering``: a list of ``{"site": ..., "days": ..., "storage-class": ...}``,
      where site ``"*"`` stands for every site;
    - ``archive-object-lock``: ``{"mode": "GOVERNANCE" | "COMPLIANCE", "days": ...}``, the
      default retention of every new object version (the bucket must be created with it);
    - ``archive-replica``: ``{"bucket-arn": ..., "key-arn": ...}``, a bucket in another
      region, encrypted with that key, which receives a copy of every object;
    - ``lifecycle-rules``: the path of a rules file (``cirrus.lifecycle.rules``), whose
      transitions replace ``archive-tiering``.
    """

    tiering: Sequence[Tiering] = field(
        default_factory=lambda: (Tiering(ALL_SITES, DEFAULT_TIERING_DAYS, DEFAULT_TIERING_CLASS),)
    )
    object_lock_mode: str | None = None
    object_lock_days: int = 0
    replica_bucket_arn: str | None = None
    replica_key_arn: str | None = None
    lifecycle_rules: LifecycleRules | None = None

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> ArchiveOptions:
        """Read the options; raise ``ValueError`` naming the context key of an invalid value."""
        options: dict[str, Any] = {}
        tiering = context.get("archive-tiering")
        if tiering is not None:
            options["tiering"] = tuple(_tiering(entry) for entry in tiering)
        rules_file = context.get("lifecycle-rules")
        if rules_file is not None:
            if tiering is not None:
                raise ValueError("give archive-tiering or lifecycle-rules, not both")
            options["lifecycle_rules"] = load_rules(Path(str(rules_file)))
            options["tiering"] = ()
        lock = context.get("archive-object-lock")
        if lock is not None:
            mode = str(lock.get("mode", ""))
            if mode not in ("GOVERNANCE", "COMPLIANCE") or int(lock.get("days", 0)) < 1:
                raise ValueError(
                    "archive-object-lock needs a mode of GOVERNANCE or COMPLIANCE and days >= 1"
                )
            options["object_lock_mode"] = mode
            options["object_lock_days"] = int(lock["days"])
        replica = context.get("archive-replica")
        if replica is not None:
            if not replica.get("bucket-arn") or not replica.get("key-arn"):
                raise ValueError("archive-replica needs a bucket-arn and a key-arn")
            options["replica_bucket_arn"] = str(replica["bucket-arn"])
            options["replica_key_arn"] = str(replica["key-arn"])
        return cls(**options)


def _tiering(entry: Mapping[str, Any]) -> Tiering:
    site = str(entry.get("site", ""))
    if site != ALL_SITES:
        validate_site(site)
    storage_class = str(entry.get("storage-class", DEFAULT_TIERING_CLASS))
    if not hasattr(s3.StorageClass, storage_class):
        raise ValueError(f"archive-tiering storage class {storage_class!r} is not an S3 class")
    days = int(entry.get("days", -1))
    if days < 0:
        raise ValueError(f"archive-tiering entry for site {site!r} needs days >= 0")
    return Tiering(site, days, storage_class)


class Storage(Construct):
    """KMS key, archive bucket with its access-log bucket, index table and ingest queues."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        names: ResourceNames,
        options: ArchiveOptions | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.options = options or ArchiveOptions()
        self.key = self._data_key(names)
        self.access_log_bucket = self._access_log_bucket()
        self.dead_letter_queue, self.ingest_queue = self._ingest_queues(names)
        self.bucket = self._archive_bucket(names)
        self.table = self._index_table(names)
        self.audit_table = self._audit_table(names)
        self.backup_plan = self._backup_plan(names)

    def _data_key(self, names: ResourceNames) -> kms.Key:
        key = kms.Key(
            self,
            "DataKey",
            alias=names.kms_alias,
            description=f"Cirrus {names.deployment}: archive objects, index table, ingest queues",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # S3 encrypts each event notification it sends to the ingest queue with this key.
        # NOTE: like the statement that CDK's SqsDestination adds, this one has no aws:SourceArn
        # or aws:SourceAccount condition, because it is not verified that S3 sends these keys
        # with its KMS requests. The queue policy limits the sender to the archive bucket.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowS3EventNotifications",
                principals=[iam.ServicePrincipal("s3.amazonaws.com")],
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=["*"],
            )
        )
        # CloudWatch Logs encrypts the log groups of the functions, the gateway and the flow
        # logs with this key. The condition limits it to log groups of this account and region.
        stack = Stack.of(self)
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogs",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                            service="logs", resource="log-group", resource_name="*"
                        ).replace(":log-group/", ":log-group:")
                    }
                },
            )
        )
        return key

    def _access_log_bucket(self) -> s3.Bucket:
        # SSE-S3, because log delivery can write it without a grant in a KMS key policy.
        # NOTE: ResourceNames has no name for this bucket yet, so CloudFormation generates one.
        bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        for rule_id, reason in (
            ("AwsSolutions-S1", "This bucket receives the access logs. Logging it into itself "
             "would loop."),
            ("HIPAA.Security-S3DefaultEncryptionKMS", "S3 server access logging delivers only "
             "to buckets encrypted with SSE-S3, not SSE-KMS."),
            ("HIPAA.Security-S3BucketReplicationEnabled", "Access logs and flow logs are kept "
             "in one region; the archive bucket is the one to replicate."),
        ):  # fmt: skip
            Validations.of(bucket).acknowledge(Acknowledgment(id=rule_id, reason=reason))
        return bucket

    def _ingest_queues(self, names: ResourceNames) -> tuple[sqs.Queue, sqs.Queue]:
        dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            queue_name=names.dead_letter_queue,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
        )
        ingest_queue = sqs.Queue(
            self,
            "IngestQueue",
            queue_name=names.ingest_queue,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            visibility_timeout=INGEST_VISIBILITY_TIMEOUT,
            retention_period=INGEST_RETENTION,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=dead_letter_queue, max_receive_count=INGEST_MAX_RECEIVES
            ),
        )
        return dead_letter_queue, ingest_queue

    def _archive_bucket(self, names: ResourceNames) -> s3.Bucket:
        stack = Stack.of(self)
        excess = len(names.bucket) + _ACCOUNT_AND_REGION_SUFFIX - _MAX_BUCKET_NAME
        if excess > 0:
            raise ValueError(
                f"deployment name {names.deployment!r} is too long for the archive bucket name "
                f"'{names.bucket}-{{account}}-{{region}}', which S3 limits to {_MAX_BUCKET_NAME} "
                f"characters; use at most {len(names.deployment) - excess} characters"
            )
        bucket_name = f"{names.bucket}-{stack.account}-{stack.region}"
        # The ARN is built from the name, not read from the bucket, so the queue policy does
        # not depend on the bucket and the bucket can depend on the queue policy below.
        bucket_arn = stack.format_arn(service="s3", region="", account="", resource=bucket_name)
        self.ingest_queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowArchiveEventNotifications",
                principals=[iam.ServicePrincipal("s3.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[self.ingest_queue.queue_arn],
                conditions={
                    "ArnEquals": {"aws:SourceArn": bucket_arn},
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            )
        )

        bucket = s3.Bucket(
            self,
            "Archive",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="archive/",
            lifecycle_rules=[self._transfer_expiration(), *self._tiering_rules()],
            removal_policy=RemovalPolicy.RETAIN,
            **self._object_lock(),
            **self._replication(),
        )
        self._notify_ingest_queue(bucket)
        self._require_data_key(bucket)
        if self.options.replica_bucket_arn is not None:
            self._acknowledge_replication_role(bucket, self.options.replica_bucket_arn)
        else:
            Validations.of(bucket).acknowledge(
                Acknowledgment(
                    id="HIPAA.Security-S3BucketReplicationEnabled",
                    reason="A replica needs a bucket in a second region, which this stack "
                    "cannot create; the archive-replica context value turns replication on.",
                )
            )
        return bucket

    def _require_data_key(self, bucket: s3.Bucket) -> None:
        """Deny writes that ask for another encryption than SSE-KMS with the data key.

        A write that names no encryption gets the bucket's default, SSE-KMS with the data key,
        so clients that send no encryption headers, presigned uploads among them, still work.
        """
        objects = bucket.arn_for_objects("*")
        for sid, header, value in (
            ("DenyOtherEncryption", "s3:x-amz-server-side-encryption", "aws:kms"),
            (
                "DenyOtherKey",
                "s3:x-amz-server-side-encryption-aws-kms-key-id",
                self.key.key_arn,
            ),
        ):
            bucket.add_to_resource_policy(
                iam.PolicyStatement(
                    sid=sid,
                    effect=iam.Effect.DENY,
                    principals=[iam.AnyPrincipal()],
                    actions=["s3:PutObject"],
                    resources=[objects],
                    conditions={"StringNotEqualsIfExists": {header: value}},
                )
            )

    @staticmethod
    def _acknowledge_replication_role(bucket: s3.Bucket, replica_arn: str) -> None:
        """Acknowledge the findings on the role that CDK writes for replication."""
        role = bucket.node.find_child("ReplicationRole")
        cfn_bucket = cast(s3.CfnBucket, bucket.node.default_child)
        archive = f"<{Stack.of(bucket).get_logical_id(cfn_bucket)}.Arn>"
        every_object = "Replication reads every object version of the archive and writes it to "
        for rule_id, reason in (
            (f"AwsSolutions-IAM5[Resource::{archive}/*]", every_object + "the replica."),
            (f"AwsSolutions-IAM5[Resource::{replica_arn}/*]", every_object + "the replica."),
            ("AwsSolutions-IAM5[Action::kms:GenerateDataKey*]", "CDK's grant to encrypt with "
             "the replica's key; the resource is that one key."),
            ("AwsSolutions-IAM5[Action::kms:ReEncrypt*]", "CDK's grant to re-encrypt with the "
             "replica's key; the resource is that one key."),
            ("HIPAA.Security-IAMNoInlinePolicy", "CDK writes the replication role's policy "
             "inline, and the role is used by S3 replication alone."),
        ):  # fmt: skip
            Validations.of(role).acknowledge(Acknowledgment(id=rule_id, reason=reason))

    def _tiering_rules(self) -> list[s3.LifecycleRule]:
        """Move each site's objects to a cheaper storage class after the configured days.

        Reads of a tiered object still work: Glacier Instant Retrieval and Intelligent-Tiering
        serve GETs in milliseconds. Transfer objects expire sooner and are never tiered.
        """
        return [
            s3.LifecycleRule(
                id=f"tier-{'all-sites' if entry.site == ALL_SITES else entry.site}",
                prefix=entry.prefix(),
                transitions=[
                    s3.Transition(
                        storage_class=getattr(s3.StorageClass, entry.storage_class),
                        transition_after=Duration.days(entry.days),
                    )
                ],
            )
            for entry in self.options.tiering
        ] + self._rules_file_tiering()

    def _rules_file_tiering(self) -> list[s3.LifecycleRule]:
        """Return the transitions of the ``lifecycle-rules`` file, by site prefix and modality tag.

        Retention is not an S3 expiration: ``cirrus retention apply`` deletes through the
        archive's delete path, which keeps the index and the audit trail consistent.
        """
        rules = self.options.lifecycle_rules
        if rules is None:
            return []
        return [
            s3.LifecycleRule(
                id=str(generated["ID"]),
                prefix=site_prefix(rule.site),
                tag_filters={MODALITY_TAG: rule.modality} if rule.modality else None,
                transitions=[
                    s3.Transition(
                        storage_class=CDK_STORAGE_CLASSES[step.storage_class],
                        transition_after=Duration.days(step.days),
                    )
                    for step in rule.transitions
                ],
            )
            for rule in rules.rules
            if (generated := rule.s3_rule()) is not None
        ]

    def _object_lock(self) -> dict[str, Any]:
        options = self.options
        if options.object_lock_mode is None:
            return {}
        mode = s3.ObjectLockMode[options.object_lock_mode]
        retention = Duration.days(options.object_lock_days)
        return {
            "object_lock_enabled": True,
            "object_lock_default_retention": s3.ObjectLockRetention.governance(retention)
            if mode == s3.ObjectLockMode.GOVERNANCE
            else s3.ObjectLockRetention.compliance(retention),
        }

    def _replication(self) -> dict[str, Any]:
        options = self.options
        if options.replica_bucket_arn is None or options.replica_key_arn is None:
            return {}
        replica = s3.Bucket.from_bucket_arn(self, "Replica", options.replica_bucket_arn)
        replica_key = kms.Key.from_key_arn(self, "ReplicaKey", options.replica_key_arn)
        return {
            "replication_rules": [
                s3.ReplicationRule(
                    destination=replica,
                    kms_key=replica_key,
                    sse_kms_encrypted_objects=True,
                    delete_marker_replication=True,
                    priority=0,
                )
            ]
        }

    @staticmethod
    def _transfer_expiration() -> s3.LifecycleRule:
        """Delete staged responses and uploads (cirrus.storage.transfers) a day after writing.

        The bucket is versioned, so expiration leaves a noncurrent version, which goes a day
        later. Incomplete multipart uploads of staged responses are aborted as well.
        """
        days = Duration.days(TRANSFER_EXPIRATION_DAYS)
        return s3.LifecycleRule(
            id="expire-transfers",
            prefix=TRANSFER_PREFIX,
            expiration=days,
            noncurrent_version_expiration=days,
            abort_incomplete_multipart_upload_after=days,
        )

    def _notify_ingest_queue(self, bucket: s3.Bucket) -> None:
        """Send object-created events of instance objects to the ingest queue.

        The notification is a property of the bucket resource. ``Bucket.add_event_notification``
        would instead deploy a custom resource, with its own Lambda function and IAM role, only
        to write this setting. S3 sends a test event to the queue when the configuration is
        saved and fails the deployment unless the queue policy already allows it, so the bucket
        depends on the queue policy.
        """
        cfn_bucket = cast(s3.CfnBucket, bucket.node.default_child)
        key_filter = s3.CfnBucket.S3KeyFilterProperty(
            rules=[
                s3.CfnBucket.FilterRuleProperty(name="prefix", value=INGEST_PREFIX),
                s3.CfnBucket.FilterRuleProperty(name="suffix", value=INSTANCE_SUFFIX),
            ]
        )
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            queue_configurations=[
                s3.CfnBucket.QueueConfigurationProperty(
                    event="s3:ObjectCreated:*",
                    queue=self.ingest_queue.queue_arn,
                    filter=s3.CfnBucket.NotificationFilterProperty(s3_key=key_filter),
                )
            ]
        )
        queue_policy = self.ingest_queue.node.find_child("Policy")
        cfn_bucket.node.add_dependency(queue_policy)

    def _index_table(self, names: ResourceNames) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            "Index",
            table_name=names.table,
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        for index_name, partition_key, sort_key in GLOBAL_SECONDARY_INDEXES:
            table.add_global_secondary_index(
                index_name=index_name,
                partition_key=dynamodb.Attribute(
                    name=partition_key, type=dynamodb.AttributeType.STRING
                ),
                sort_key=dynamodb.Attribute(name=sort_key, type=dynamodb.AttributeType.STRING),
                projection_type=dynamodb.ProjectionType.ALL,
            )
        return table

    def _audit_table(self, names: ResourceNames) -> dynamodb.Table:
        """Create the append-only audit trail (cirrus.audit_table), encrypted with the data key.

        Application roles get PutItem and GetItem only (``AUDIT_WRITE_ACTIONS``), and the code
        writes every item under a condition that it does not exist yet. The table's resource
        policy also denies every principal the operations that change or delete an item,
        administrators included. NOTE: PutItem without that condition would still replace an
        item, because IAM has no condition key for a condition expression. Point-in-time
        recovery keeps 35 days of history against it.
        """
        table = dynamodb.Table(
            self,
            "Audit",
            table_name=names.audit_table,
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
            resource_policy=iam.PolicyDocument(
                statements=[
                    iam.PolicyStatement(
                        sid="AppendOnly",
                        effect=iam.Effect.DENY,
                        principals=[iam.AnyPrincipal()],
                        actions=list(AUDIT_CHANGE_ACTIONS),
                        resources=["*"],
                    )
                ]
            ),
        )
        index_name, partition_key, sort_key = STUDY_INDEX
        table.add_global_secondary_index(
            index_name=index_name,
            partition_key=dynamodb.Attribute(
                name=partition_key, type=dynamodb.AttributeType.STRING
            ),
            sort_key=dynamodb.Attribute(name=sort_key, type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.ALL,
        )
        return table

    def _backup_plan(self, names: ResourceNames) -> backup.BackupPlan:
        """Back the index table up monthly into a vault encrypted with the data key.

        The index can always be rebuilt from the archive, but a restore is faster, and
        point-in-time recovery covers only 35 days.
        """
        vault = backup.BackupVault(
            self,
            "BackupVault",
            backup_vault_name=f"{names.deployment}-backups",
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        plan = backup.BackupPlan(self, "BackupPlan", backup_vault=vault)
        plan.add_rule(
            backup.BackupPlanRule(
                rule_name="monthly",
                schedule_expression=events.Schedule.cron(day="1", hour="3", minute="0"),
                delete_after=BACKUP_RETENTION,
            )
        )
        # The audit trail too, so its records outlive point-in-time recovery's 35 days.
        selection = plan.add_selection(
            "Index",
            resources=[
                backup.BackupResource.from_dynamo_db_table(self.table),
                backup.BackupResource.from_dynamo_db_table(self.audit_table),
            ],
        )
        Validations.of(selection).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                "service-role/AWSBackupServiceRolePolicyForBackup]",
                reason="AWS Backup's service role policy is maintained by AWS for the actions "
                "that backing up each resource type needs, and the role only backs up.",
            )
        )
        return plan
