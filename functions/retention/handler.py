"""The retention Lambda: deletes the studies whose retention has passed, once a day.

An EventBridge schedule invokes it. The rules come from ``CIRRUS_LIFECYCLE_RULES``, the JSON
text of the deployment's rules file, which the CDK stack sets. Each study past retention is
deleted through the archive's delete path with its own audit record, and held studies are
skipped (``cirrus.lifecycle.retention``). The log names each study by its UID and outcome,
never by patient data.

A run that ends before every study is deleted (a timeout, a failed delete) is repeated by the
next day's run, because deletes are idempotent. A failed delete raises at the end, so the
function's error alarm fires.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any, Final

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from cirrus.config import Settings
from cirrus.lifecycle.retention import Finding, Outcome, Retention
from cirrus.lifecycle.rules import LifecycleRules, parse_rules
from cirrus.services import Services

SERVICE: Final = "cirrus-retention"
RULES_VARIABLE: Final = "CIRRUS_LIFECYCLE_RULES"

logger = Logger(service=SERVICE)


class RetentionFailedError(Exception):
    """At least one study past retention could not be deleted; the next run tries again."""


@cache
def _lambda_services() -> Services:
    copy_config_to_registered_loggers(source_logger=logger, include={"cirrus"})
    return Services(Settings.from_env())


def handle(services: Services, rules: LifecycleRules) -> dict[str, int]:
    """Apply ``rules`` to every site they name; return the count of each outcome."""
    retention = Retention(
        rules,
        services.index_model,
        services.store,
        services.audit,
        changes=services.change_feed,
        events=services.events,
    )

    def report(finding: Finding) -> None:
        logger.info(
            "retention finding",
            extra={
                "site": finding.site,
                "study": finding.study,
                "outcome": str(finding.outcome),
                "instances": finding.instances,
                "audit_record": finding.audit_record,
            },
        )

    counts: dict[str, int] = {}
    for site in rules.sites:
        for outcome, count in retention.run(site, False, report).items():
            counts[outcome] = counts.get(outcome, 0) + count
    logger.info("retention run finished", extra={"counts": counts})
    return counts


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    rules = parse_rules(os.environ[RULES_VARIABLE], RULES_VARIABLE)
    counts = handle(_lambda_services(), rules)
    failed = counts.get(str(Outcome.FAILED), 0)
    if failed:
        raise RetentionFailedError(f"{failed} studies past retention were not deleted")
    return counts
