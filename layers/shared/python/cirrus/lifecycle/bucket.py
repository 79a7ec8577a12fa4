"""The archive bucket's lifecycle configuration, written from a rules file.

On AWS the CDK stack writes it (``-c lifecycle-rules=FILE``). ``cirrus dev --lifecycle-rules``
writes it to moto's bucket with this module, which keeps the transfer expiration that the
local bucket has. moto stores the configuration but never moves an object to another storage
class, and the local archive objects are files in the data folder, so locally the rules
change nothing but the configuration that ``get_bucket_lifecycle_configuration`` returns.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cirrus.errors import StoreUnavailableError
from cirrus.lifecycle.rules import LifecycleRules

logger = logging.getLogger(__name__)


def apply_lifecycle_rules(s3: Any, bucket: str, rules: LifecycleRules) -> int:
    """Replace the tiering rules of ``bucket`` with those of ``rules``; return their count.

    Rules of the bucket whose ID does not start with ``tier-`` are kept.
    """
    try:
        try:
            current = s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
                raise
            current = []
        kept = [rule for rule in current if not str(rule.get("ID", "")).startswith("tier-")]
        generated = rules.s3_rules()
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": kept + generated}
        )
    except (ClientError, BotoCoreError) as exc:
        raise StoreUnavailableError(
            f"lifecycle configuration of bucket {bucket} was not written: {exc}"
        ) from exc
    logger.info(
        "lifecycle rules applied",
        extra={"bucket": bucket, "rules": len(generated), "sites": rules.sites},
    )
    return len(generated)
