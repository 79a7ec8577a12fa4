"""Retention: delete the studies whose retention has passed, through the archive's delete path.

A study's age counts from its StudyDate (0008,0020): a study is past retention on the day its
StudyDate plus the retention of its rule (``LifecycleRules.retention_of``) lies before today
(UTC). Studies are found without a Scan: each site's 16 ``by-level`` study shards are queried
with ``level_sk`` (``"{StudyDate}#{study}"``) before the date that the shortest retention
of the site's rules keeps. A study without a StudyDate, or with one that is not a valid
date, is never deleted and is reported as skipped.

Each deletion runs ``delete_resource``, as a DELETE request does: it writes its audit record
first, then removes the objects and the index records, writes a ``deleted`` change of the feed
for each instance and sends its InstanceDeleted event. A study under legal hold is skipped.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Final

from botocore.exceptions import BotoCoreError
from pynamodb.exceptions import PynamoDBException

from cirrus.audit import Actor, AuditLog
from cirrus.dicomweb.delete import DeleteTarget, delete_resource
from cirrus.errors import LegalHoldError, NotFoundError, StoreUnavailableError
from cirrus.events.feed import ChangeFeed
from cirrus.events.publisher import Publisher
from cirrus.index.deletion import IndexDeleter
from cirrus.index.models import STUDY, IndexRecord, level_pks
from cirrus.lifecycle.holds import LegalHolds
from cirrus.lifecycle.rules import LifecycleRules
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

# The principal of the audit records of retention deletions.
RETENTION_PRINCIPAL: Final = "cirrus-retention"
_DATE_FORMAT: Final = "%Y%m%d"


class Outcome(StrEnum):
    DELETED = "deleted"
    WOULD_DELETE = "would delete"
    HELD = "held"
    NO_DATE = "skipped: no valid StudyDate"
    FAILED = "failed"


@dataclass(frozen=True)
class Finding:
    """One study that retention looked at, and what it did with it."""

    site: str
    study: str
    study_date: str
    retention: str
    outcome: Outcome
    instances: int = 0
    audit_record: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "site": self.site,
            "study": self.study,
            "study_date": self.study_date,
            "retention": self.retention,
            "outcome": str(self.outcome),
            "instances": self.instances,
            "audit_record": self.audit_record,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Candidate:
    site: str
    study: str
    study_date: str
    modalities: frozenset[str]


class Retention:
    """Finds the studies past retention and deletes those that no legal hold keeps."""

    def __init__(
        self,
        rules: LifecycleRules,
        model: type[IndexRecord],
        store: ObjectStore,
        audit: AuditLog,
        *,
        changes: ChangeFeed | None,
        events: Publisher,
        today: date | None = None,
    ) -> None:
        self._rules = rules
        self._model = model
        self._store = store
        self._audit = audit
        self._deleter = IndexDeleter(model, changes)
        self._events = events
        self._today = today or datetime.now(UTC).date()

    def candidates(self, site: str) -> Iterator[Candidate]:
        """Yield the studies of ``site`` that the shortest retention of its rules has passed.

        ``run`` then checks each against the retention of its own modalities.
        """
        rules = [r for r in self._rules.rules if r.site == site and r.has_retention]
        if not rules:
            return
        before = max(rule.expires_before(self._today) for rule in rules).strftime(_DATE_FORMAT)
        model = self._model
        for pk in level_pks(site, STUDY):
            try:
                for record in model.by_level.query(pk, model.level_sk < before):
                    study_date, _, study = str(record.level_sk).partition("#")
                    study = study or record.pk.split("#", 1)[1]
                    modalities = frozenset(record.modalities or ())
                    yield Candidate(site, study, study_date, modalities)
            except (PynamoDBException, BotoCoreError) as exc:
                raise StoreUnavailableError(f"index query of {pk} failed: {exc}") from exc

    def run(self, site: str, dry_run: bool, report: Callable[[Finding], None]) -> dict[str, int]:
        """Apply retention to ``site``; report each study past retention; return the counts."""
        counts: dict[str, int] = {}
        for candidate in self.candidates(site):
            finding = self._apply(candidate, dry_run)
            if finding is None:
                continue
            counts[str(finding.outcome)] = counts.get(str(finding.outcome), 0) + 1
            report(finding)
        return counts

    def _apply(self, candidate: Candidate, dry_run: bool) -> Finding | None:
        site, study, study_date = candidate.site, candidate.study, candidate.study_date
        rule = self._rules.retention_of(site, candidate.modalities)
        if rule is None:
            return None
        retention = rule.describe_retention()
        try:
            dated = datetime.strptime(study_date, _DATE_FORMAT).date()
        except ValueError:
            return Finding(site, study, study_date, retention, Outcome.NO_DATE)
        if dated >= rule.expires_before(self._today):
            return None
        if LegalHolds(self._store).get(site, study) is not None:
            return Finding(site, study, study_date, retention, Outcome.HELD)
        if dry_run:
            return Finding(site, study, study_date, retention, Outcome.WOULD_DELETE)
        return self._delete(candidate, retention)

    def _delete(self, candidate: Candidate, retention: str) -> Finding:
        site, study, study_date = candidate.site, candidate.study, candidate.study_date
        request_id = f"retention-{uuid.uuid4()}"
        try:
            outcome = delete_resource(
                self._store,
                self._deleter,
                self._audit,
                self._events,
                DeleteTarget(site, study),
                Actor(principal=RETENTION_PRINCIPAL),
                request_id,
                transport="retention",
            )
        except LegalHoldError:
            return Finding(site, study, study_date, retention, Outcome.HELD)
        except NotFoundError:
            return Finding(site, study, study_date, retention, Outcome.FAILED, detail="not found")
        except StoreUnavailableError as exc:
            logger.warning(
                "retention delete failed", extra={"site": site, "study": study, "error": str(exc)}
            )
            return Finding(site, study, study_date, retention, Outcome.FAILED, detail=str(exc))
        logger.info(
            "study deleted by retention",
            extra={"site": site, "study": study, "audit_record": outcome.audit_record},
        )
        return Finding(
            site,
            study,
            study_date,
            retention,
            Outcome.DELETED,
            instances=outcome.removed,
            audit_record=outcome.audit_record,
        )
