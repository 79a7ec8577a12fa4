"""Legal holds: a held study cannot be deleted, by a DELETE request or by retention.

A hold is a small JSON object in the archive bucket, ``sites/{site}/holds/{study}.json``, with
who set it, when and why. The bucket is the source of truth of the archive, so a hold survives
a rebuild of the index, is encrypted with the data key like every object, and is scoped to its
site by the key prefix. The delete path (``cirrus.dicomweb.delete``) reads it before it writes
anything. S3 Object Lock legal holds are not used: they need a bucket created with Object Lock,
and this check covers every delete that Cirrus makes either way.

Every set and release writes an audit record before the hold object changes, so the trail
never misses a change. The record carries the reason as its EventOutcomeDescription. The
reason is never logged; operators must keep patient details out of it, because the audit
trail is meant to contain none.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Final

from cirrus.audit import Actor, AuditAction, AuditEvent, AuditLog, AuditOutcome, StudyAccess
from cirrus.errors import (
    InvalidInstanceError,
    InvalidRequestError,
    LegalHoldError,
    NotFoundError,
)
from cirrus.storage.keys import InstanceKey, check_uid, site_prefix
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

_HOLDS_FOLDER: Final = "holds/"
_SUFFIX: Final = ".json"
HOLD_CONTENT_TYPE: Final = "application/json"
# A reason is for people to read; a longer text belongs in the case file that it names.
MAX_REASON_LENGTH: Final = 1000


@dataclass(frozen=True)
class LegalHold:
    """One study's hold: who set it, when (ISO 8601, UTC), why and its audit record."""

    site: str
    study: str
    reason: str
    held_by: str
    held_at: str
    audit_record: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def hold_key(site: str, study: str) -> str:
    """Return the object key of the hold of ``study``; raise ``InvalidRequestError``."""
    try:
        check_uid("StudyInstanceUID (0020,000D)", study)
    except InvalidInstanceError as exc:
        raise InvalidRequestError(
            f"{study!r} is not a valid StudyInstanceUID (0020,000D); give at most 64 digits and '.'"
        ) from exc
    return f"{site_prefix(site)}{_HOLDS_FOLDER}{study}{_SUFFIX}"


class LegalHolds:
    """Sets, releases, lists and checks the legal holds of the studies in one archive."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def get(self, site: str, study: str) -> LegalHold | None:
        """Return the hold of ``study``, or None. Raises ``StoreUnavailableError``."""
        try:
            body = self._store.get(hold_key(site, study))
        except NotFoundError:
            return None
        return _parse(body, site, study)

    def check_deletable(self, site: str, study: str) -> None:
        """Raise ``LegalHoldError`` when ``study`` is under legal hold."""
        hold = self.get(site, study)
        if hold is not None:
            raise LegalHoldError(
                f"study {study} is under legal hold since {hold.held_at}; an operator must "
                "release the hold (cirrus hold release) before it can be deleted"
            )

    def check_replaceable(self, key: InstanceKey, same_content: Callable[[bytes], bool]) -> None:
        """Raise ``LegalHoldError`` when a store would change an instance of a held study.

        ``same_content`` tells whether the stored object's bytes equal the new instance. A
        resend of the same bytes, and a new instance of a held study, are allowed.
        """
        hold = self.get(key.site, key.study)
        if hold is None:
            return
        try:
            stored = self._store.get(key.object_key)
        except NotFoundError:
            return
        if same_content(stored):
            return
        raise LegalHoldError(
            f"study {key.study} is under legal hold since {hold.held_at}, and SOP Instance UID "
            f"{key.sop} is stored in it with other content; an operator must release the hold "
            "(cirrus hold release) before the instance can be replaced"
        )

    def set(self, site: str, study: str, reason: str, actor: Actor, audit: AuditLog) -> LegalHold:
        """Put ``study`` under legal hold and return the hold; a held study keeps its first hold.

        The study need not be archived yet, so a hold can precede the images it protects.
        Raises ``InvalidRequestError`` for an empty or long reason, ``LegalHoldError`` when the
        study is held already, and ``StoreUnavailableError`` when S3 or the audit table fail.
        """
        reason = _checked_reason(reason)
        key = hold_key(site, study)
        existing = self.get(site, study)
        if existing is not None:
            raise LegalHoldError(
                f"study {study} is under legal hold already since {existing.held_at}"
            )
        record = _audit(audit, AuditAction.HOLD, site, study, actor, reason)
        hold = LegalHold(
            site=site,
            study=study,
            reason=reason,
            held_by=_who(actor),
            held_at=datetime.now(UTC).isoformat(timespec="seconds"),
            audit_record=record,
        )
        # NOTE: two operators who set a hold on one study at the same moment both succeed, and
        # the later write's reason is kept. Both are in the audit trail.
        self._store.put(key, hold.to_json().encode(), content_type=HOLD_CONTENT_TYPE)
        logger.info("legal hold set", extra={"site": site, "study": study, "audit_record": record})
        return hold

    def release(
        self, site: str, study: str, actor: Actor, audit: AuditLog, reason: str
    ) -> LegalHold:
        """Release the hold of ``study`` and return it; raise ``NotFoundError`` without one."""
        reason = _checked_reason(reason)
        hold = self.get(site, study)
        if hold is None:
            raise NotFoundError(f"study {study} of site {site} has no legal hold")
        record = _audit(audit, AuditAction.RELEASE, site, study, actor, reason)
        self._store.delete([hold_key(site, study)])
        logger.info(
            "legal hold released", extra={"site": site, "study": study, "audit_record": record}
        )
        return hold

    def list(self, site: str) -> list[LegalHold]:
        """Return the holds of ``site`` in study UID order."""
        prefix = f"{site_prefix(site)}{_HOLDS_FOLDER}"
        holds = []
        for obj in self._store.list_keys(prefix):
            study = obj.key[len(prefix) :].removesuffix(_SUFFIX)
            hold = self.get(site, study)
            if hold is not None:
                holds.append(hold)
        return holds


def _checked_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise InvalidRequestError(f"a reason must have 1 to {MAX_REASON_LENGTH} characters")
    return reason


def _who(actor: Actor) -> str:
    return actor.principal or actor.source_ip or "unknown"


def _audit(
    audit: AuditLog, action: AuditAction, site: str, study: str, actor: Actor, reason: str
) -> str:
    event = AuditEvent(
        action=action,
        outcome=AuditOutcome.SUCCESS,
        actor=actor,
        site=site,
        request_id=str(uuid.uuid4()),
        transport="command line",
        studies=(StudyAccess(study=study),),
        detail=reason,
    )
    return audit.write(event)


def _parse(body: bytes, site: str, study: str) -> LegalHold:
    """Read a hold object. One that cannot be read still counts as a hold, to keep the study."""
    try:
        data = json.loads(body)
        return LegalHold(**{name: str(data[name]) for name in LegalHold.__dataclass_fields__})
    except (ValueError, KeyError, TypeError):
        logger.warning("legal hold object unreadable; the hold stays", extra={"study": study})
        return LegalHold(site, study, "(unreadable hold object)", "unknown", "unknown", "")
