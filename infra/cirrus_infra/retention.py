"""The retention function of one deployment and the daily schedule that invokes it.

It exists only when the ``lifecycle-rules`` file gives a retention. Its role may read the
index through the ``by-level`` index, delete instances and their records through the delete
path (``cirrus.dicomweb.delete``), read legal holds and write audit records, and nothing else
here. ``Events.connect_retention`` adds the change feed's writes and PutEvents on the bus.
"""

from __future__ import annotations

import json
from typing import Final

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from cirrus.config import ResourceNames
from cirrus.lifecycle.rules import LifecycleRules
from cirrus_infra.ingest import TABLE_ACTIONS
from cirrus_infra.lambdas import (
    WILDCARD_RESOURCE_REASON,
    FunctionSettings,
    acknowledge_runtime,
    acknowledge_wildcards,
    create_function,
    data_key_statement,
    encrypted_log_group,
    function_role,
    logical_id,
    settings_environment,
)
from cirrus_infra.layers import Layers
from cirrus_infra.network import Network
from cirrus_infra.storage import AUDIT_WRITE_ACTIONS, INGEST_PREFIX, Storage

SERVICE: Final = "cirrus-retention"
RULES_VARIABLE: Final = "CIRRUS_LIFECYCLE_RULES"
# Lambda's maximum. A run that does not finish leaves the rest to the next day's run.
FUNCTION_TIMEOUT: Final = Duration.minutes(15)
FUNCTION_MEMORY_MB: Final = 512
# Once a day at 03:00 UTC, outside the busiest reading hours of most sites.
SCHEDULE: Final = events.Schedule.cron(minute="0", hour="3")
# Lambda's environment variables take at most 4 KB together; the rules leave room for the rest.
MAX_RULES_BYTES: Final = 3000
RETENTION_INDEX: Final = "by-level"


class RetentionSchedule(Construct):
    """The retention function with its role and log group, invoked by a daily rule."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        names: ResourceNames,
        storage: Storage,
        network: Network,
        layers: Layers,
        rules: LifecycleRules,
    ) -> None:
        super().__init__(scope, construct_id)
        rules_text = rules_json(rules)
        self.log_group = encrypted_log_group(self, "FunctionLogs", storage.key)
        self.role, self.policy = function_role(
            self,
            "FunctionRole",
            description="Cirrus retention function",
            log_group=self.log_group,
            statements=self._statements(storage),
        )
        settings = FunctionSettings(
            package="retention",
            service=SERVICE,
            memory_mb=FUNCTION_MEMORY_MB,
            timeout=FUNCTION_TIMEOUT,
            # Two runs at once would try to delete the same studies.
            reserved_concurrency=1,
            environment={**settings_environment(names, storage), RULES_VARIABLE: rules_text},
        )
        self.function = create_function(
            self,
            "Function",
            settings=settings,
            layers=layers,
            network=network,
            role=self.role,
            log_group=self.log_group,
        )
        self.rule = events.Rule(
            self,
            "Schedule",
            description=f"Cirrus {names.deployment}: daily retention run",
            schedule=SCHEDULE,
            targets=[targets.LambdaFunction(self.function, retry_attempts=2)],
        )
        self._acknowledge(storage)

    def _statements(self, storage: Storage) -> list[iam.PolicyStatement]:
        bucket = storage.bucket.bucket_arn
        table = storage.table.table_arn
        return [
            # Instances, metadata sidecars and bundles of a deleted study, and legal holds.
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:DeleteObject"],
                resources=[f"{bucket}/{INGEST_PREFIX}*"],
            ),
            # The delete path lists a study's objects; ListBucket also turns a missing hold
            # into 404 instead of 403.
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket]),
            # The delete path reads and writes index items with the actions that ingest needs.
            iam.PolicyStatement(actions=list(TABLE_ACTIONS), resources=[table]),
            iam.PolicyStatement(
                actions=["dynamodb:Query"], resources=[f"{table}/index/{RETENTION_INDEX}"]
            ),
            iam.PolicyStatement(
                actions=list(AUDIT_WRITE_ACTIONS), resources=[storage.audit_table.table_arn]
            ),
            data_key_statement(self, storage.key, ["s3", "dynamodb"]),
        ]

    def _acknowledge(self, storage: Storage) -> None:
        bucket = logical_id(storage.bucket)
        reasons = {
            f"Resource::<{bucket}.Arn>/{INGEST_PREFIX}*": "Instance keys are made from the UIDs "
            "of each stored instance, and hold keys from the study's UID.",
            "Resource::*": WILDCARD_RESOURCE_REASON,
        }
        acknowledge_wildcards(self.policy, reasons)
        acknowledge_runtime(self.function)
        Validations.of(self.function).acknowledge(
            Acknowledgment(
                id="HIPAA.Security-LambdaDLQ",
                reason="EventBridge retries a failed run twice, the function's error alarm "
                "fires, and the next day's run repeats the work, so a failed event needs no "
                "queue.",
            )
        )


def rules_json(rules: LifecycleRules) -> str:
    """Return the rules as compact JSON for the function; raise ``ValueError`` when too long."""
    text = json.dumps(
        {
            "rules": [
                {
                    key: value
                    for key, value in (
                        ("site", rule.site),
                        ("modality", rule.modality),
                        ("retain_days", rule.retain_days),
                        ("retain_years", rule.retain_years),
                    )
                    if value is not None
                }
                for rule in rules.rules
                if rule.has_retention
            ]
        },
        separators=(",", ":"),
    )
    if len(text.encode()) > MAX_RULES_BYTES:
        raise ValueError(
            f"the retention rules take {len(text.encode())} bytes of JSON, more than the "
            f"{MAX_RULES_BYTES} that fit into the function's environment; merge rules"
        )
    return text
