"""cdk-nag findings and acknowledgments of the synthesized stack, by construct path.

Each component's test module checks the acknowledgments under its own construct path, so that
every new acknowledgment shows in the review of that component's tests.
"""

from __future__ import annotations

from aws_cdk import Validations
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from constructs import IConstruct

RULE_PACK_PREFIXES = ("AwsSolutions-", "HIPAA.Security-")


def findings(scope: IConstruct, path_prefix: str = "") -> list[str]:
    """Return the unacknowledged findings of both rule packs under ``path_prefix``."""
    found = []
    for checks in (AwsSolutionsChecks(), HIPAASecurityChecks()):
        report = checks.validate_scope(scope)
        found += [
            f"{violation.rule_name} at {resource.construct_path}: {violation.description}"
            for violation in report.violations
            for resource in violation.violating_resources
            if resource.construct_path.startswith(path_prefix)
        ]
    return found


def acknowledged(scope: IConstruct, path_prefix: str = "") -> set[tuple[str, str]]:
    """Return the acknowledged cdk-nag findings under ``path_prefix`` as (path, rule id).

    Fails when an acknowledgment gives no reason.
    """
    result = set()
    for construct in scope.node.find_all():
        path = construct.node.path
        if not path.startswith(path_prefix):
            continue
        for entry in construct.node.metadata:
            if entry.type != Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                continue
            # Each key of the entry is "Annotation::{rule id}", and its value is the reason.
            # CDK itself acknowledges some rules of its own validations, such as F3002.
            for key, reason in entry.data.items():
                rule_id = key.split("::", 1)[-1]
                if not rule_id.startswith(RULE_PACK_PREFIXES):
                    continue
                assert reason.strip(), f"{key} on {path} has no reason"
                result.add((path, rule_id))
    return result
