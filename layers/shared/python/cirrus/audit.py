"""Audit records of deletions, written to the archive bucket before anything is deleted.

Each record is one JSON object under ``audit/{site}/{yyyy}/{mm}/{dd}/``, named by the time and
the request id, so records are never overwritten and a day lists in time order. A record
names who asked (the identity API Gateway attaches to the request), when, and the UIDs of
every instance the request deletes. It contains no patient names or other demographics. The prefix
is outside ``sites/``, so listings and rebuilds of the instance tree never see it, and a policy
can let the API write records there without the right to delete them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any, Final, Literal

from cirrus.storage.keys import InstanceKey, validate_site
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

AUDIT_PREFIX: Final = "audit/"
JSON_CONTENT_TYPE: Final = "application/json"


@dataclass(frozen=True)
class Actor:
    """Who sent a request, as far as the request identifies them.

    ``principal`` is the authenticated user (a Cognito ``sub`` or username, or an IAM ARN),
    or None for a request without authentication, such as on the local stack.
    """

    principal: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    # The calling AE title of a DIMSE association.
    ae_title: str | None = None


class AuditAction(StrEnum):
    """What an audited request did, one of the actions that access rules grant."""

    STORE = "store"
    QUERY = "query"
    RETRIEVE = "retrieve"
    DELETE = "delete"


class AuditOutcome(IntEnum):
    """Event Outcome Indicator of the DICOM audit message (PS3.15 A.5.1)."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


@dataclass(frozen=True)
class StudyAccess:
    """One study that a request touched, with the series and instances it touched in it."""

    study: str
    series: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()
    # SOP Class UID to the number of instances of that class, as PS3.15 A.5.2.4 describes them.
    sop_classes: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class AuditEvent:
    """One audited request: who, what, where, when and the outcome, without patient data.

    ``site`` is None when the request was rejected before a site was chosen. ``query_keys``
    names the attributes a query matched on (keywords or tags), never their values, because
    the values of PatientName or PatientID are patient data. ``detail`` is a short reason for
    a failure, written by the code and free of request values.
    """

    action: AuditAction
    outcome: AuditOutcome
    actor: Actor
    site: str | None
    request_id: str
    transport: Literal["DICOMweb", "DIMSE"]
    studies: tuple[StudyAccess, ...] = ()
    query_keys: tuple[str, ...] = ()
    detail: str | None = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class DeletionRecord:
    """One delete request: the resource it names and the instances it removes."""

    site: str
    actor: Actor
    request_id: str
    study: str
    series: str | None = None
    sop: str | None = None
    instances: list[InstanceKey] = field(default_factory=list)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def level(self) -> str:
        if self.sop is not None:
            return "INSTANCE"
        return "SERIES" if self.series is not None else "STUDY"

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "delete",
            "time": self.time.isoformat(timespec="milliseconds"),
            "site": self.site,
            "request_id": self.request_id,
            "actor": asdict(self.actor),
            "level": self.level,
            "study": self.study,
            "series": self.series,
            "sop": self.sop,
            "instances": [
                {"study": key.study, "series": key.series, "sop": key.sop} for key in self.instances
            ],
        }


class AuditLog:
    """Writes audit records as objects of the archive bucket."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def record(self, event: AuditEvent) -> None:
        """Write ``event`` durably; raise ``StoreUnavailableError`` when the store fails."""
        # TODO: an append-only table with ATNA-shaped records, queryable by study and time.
        key = audit_key(event.site or "unknown", event.time, event.request_id)
        body = json.dumps(asdict(event), default=str, separators=(",", ":")).encode()
        self._store.put(key, body, content_type=JSON_CONTENT_TYPE)

    def record_deletion(self, record: DeletionRecord) -> str:
        """Write ``record`` and return its object key once S3 has acknowledged it.

        Raises ``StoreUnavailableError`` when S3 fails; the caller must then delete nothing.
        """
        key = audit_key(record.site, record.time, record.request_id)
        body = json.dumps(record.to_json(), separators=(",", ":")).encode()
        self._store.put(key, body, content_type=JSON_CONTENT_TYPE)
        logger.info(
            "deletion audited",
            extra={
                "audit_key": key,
                "level": record.level,
                "instances": len(record.instances),
                "principal": record.actor.principal,
            },
        )
        return key


def audit_key(site: str, time: datetime, request_id: str) -> str:
    """Return the object key of an audit record: by site and day, then time and request."""
    safe_id = "".join(char if char.isalnum() or char in "-_" else "_" for char in request_id)
    stamp = time.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")
    day = time.astimezone(UTC).strftime("%Y/%m/%d")
    return f"{AUDIT_PREFIX}{validate_site(site)}/{day}/{stamp}Z-{safe_id or 'none'}.json"
