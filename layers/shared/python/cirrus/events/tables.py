"""The changes table: the change feed of each site and the arrival record of each study.

One DynamoDB table with a string partition key and a number sort key::

    pk = "{site}#FEED"            sk = 0         the site's sequence counter
    pk = "{site}#FEED"            sk = N > 0     change number N of the site
    pk = "{site}#STABLE#{study}"  sk = 0         when the study last received an instance

Every key starts with the site, so a read of one site's feed cannot return another's.
"""

from __future__ import annotations

from typing import Any, Final

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from cirrus.config import Settings

COUNTER_SK: Final = 0


class ChangeRecord(Model):
    """A change of the feed, or (``sk`` 0) the counter of the site's sequence numbers."""

    class Meta:
        table_name = "unbound"
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)
    sk = NumberAttribute(range_key=True)
    # stored, deleted, or void for a number that its writer did not use.
    action = UnicodeAttribute(null=True)
    study = UnicodeAttribute(null=True)
    series = UnicodeAttribute(null=True)
    sop = UnicodeAttribute(null=True)
    sop_class = UnicodeAttribute(null=True)
    # ISO 8601 UTC time of the change.
    time = UnicodeAttribute(null=True)
    # Seconds since the epoch when the writer got the number (for a change), or handed out
    # the last number (for the counter).
    allocated_at = NumberAttribute(null=True)
    # The counter only: the last number handed out.
    last_sequence = NumberAttribute(null=True)


class ArrivalRecord(Model):
    """When a study last received an instance, and whether a StudyStable check is pending."""

    class Meta:
        table_name = "unbound"
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)
    sk = NumberAttribute(range_key=True)
    # Seconds since the epoch of the last arrival.
    last_arrival = NumberAttribute(null=True)
    # Instances that arrived since the last StudyStable event.
    arrivals = NumberAttribute(null=True)
    # 1 while a check is queued; absent otherwise.
    pending = NumberAttribute(null=True)


def feed_pk(site: str) -> str:
    return f"{site}#FEED"


def arrival_pk(site: str, study: str) -> str:
    return f"{site}#STABLE#{study}"


def _meta(settings: Settings) -> type:
    attrs: dict[str, Any] = {
        "table_name": settings.changes_table,
        "region": settings.region,
        "billing_mode": "PAY_PER_REQUEST",
        "connect_timeout_seconds": 5,
        "read_timeout_seconds": 10,
        "max_retry_attempts": 5,
    }
    if settings.json_endpoint:
        attrs["host"] = settings.json_endpoint
    return type("Meta", (), attrs)


def bind_change_model(settings: Settings) -> type[ChangeRecord] | None:
    """Return ``ChangeRecord`` bound to the changes table of ``settings``, or None without one."""
    if not settings.changes_table:
        return None
    bound: type[ChangeRecord] = type(
        "BoundChangeRecord", (ChangeRecord,), {"Meta": _meta(settings)}
    )
    return bound


def bind_arrival_model(settings: Settings) -> type[ArrivalRecord] | None:
    """Return ``ArrivalRecord`` bound to the changes table of ``settings``, or None."""
    if not settings.changes_table:
        return None
    bound: type[ArrivalRecord] = type(
        "BoundArrivalRecord", (ArrivalRecord,), {"Meta": _meta(settings)}
    )
    return bound
