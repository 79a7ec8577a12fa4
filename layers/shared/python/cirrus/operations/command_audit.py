"""Audit records of the commands that export, copy or import instances.

``cirrus export``, ``cirrus deidentify`` and ``cirrus import`` write one record per study when
they end, whether they succeeded, failed in part, failed or were interrupted. A record names
the operator, the study, the instances that crossed the boundary and the media, DICOM peer or
site on the other side, and counts the instances that failed in its EventOutcomeDescription.
Like every record, it contains no patient names or IDs: per-instance error texts are left out,
because they can quote element values.
"""

from __future__ import annotations

import getpass
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cirrus.audit import (
    SOURCE_ROLE,
    URI_MEDIA,
    Actor,
    AuditAction,
    AuditEvent,
    AuditLog,
    AuditOutcome,
    StudyAccess,
    TransferParty,
)
from cirrus.errors import StoreUnavailableError
from cirrus.operations.target import Target
from cirrus.storage.keys import InstanceKey


def command_audit(target: Target, data_dir: Path, from_env: bool) -> AuditLog:
    """Return the audit log of ``target``; on the local stack it also appends to the journal.

    Raises ``StoreUnavailableError`` when no audit table is configured, so that nothing is
    exported or imported without its record.
    """
    from cirrus.local.audit_journal import JOURNAL_FILE, FileAuditJournal

    services = target.services
    audit = services.audit
    if audit.model is None:
        raise StoreUnavailableError("no audit table is configured; set CIRRUS_AUDIT_TABLE")
    if from_env:
        return audit
    # The local audit table lives in moto's memory; the journal is what survives a restart.
    journal = FileAuditJournal(data_dir / JOURNAL_FILE)
    return AuditLog(audit.model, services.settings.deployment, journal)


def command_actor(target: Target, from_env: bool) -> Actor:
    """Return who runs the command: the IAM identity on AWS, the OS user on the local stack.

    Raises ``StoreUnavailableError`` when STS cannot tell the identity.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    if not from_env:
        return Actor(principal=f"local user {getpass.getuser()}")
    settings = target.services.settings
    try:
        sts = boto3.client("sts", region_name=settings.region, endpoint_url=settings.endpoint_url)
        return Actor(principal=str(sts.get_caller_identity()["Arn"]))
    except (ClientError, BotoCoreError) as exc:
        raise StoreUnavailableError(f"cannot tell who runs the command from STS: {exc}") from exc


def media_party(path: Path, role: tuple[str, str]) -> TransferParty:
    """Return a folder, ZIP or file as media identified by its file URI."""
    uri = path.resolve().as_uri()
    return TransferParty(uri, role, media_type=URI_MEDIA, media_id=uri)


def site_party(site: str, role: tuple[str, str]) -> TransferParty:
    """Return another site of the same archive as the other side of a copy."""
    return TransferParty(f"site {site}", role)


def dimse_party(ae_title: str, host: str, role: tuple[str, str]) -> TransferParty:
    return TransferParty(ae_title, role, ae_title=True, address=host)


def url_party(url: str) -> TransferParty:
    """Return a DICOMweb service that an import reads from, identified by its URL."""
    return TransferParty(url, SOURCE_ROLE, media_type=URI_MEDIA, media_id=url)


@dataclass
class StudyTally:
    """The instances of one study that crossed the boundary, and the count of those that failed."""

    series: set[str] = field(default_factory=set)
    instances: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)


@dataclass
class TransferTally:
    """Collects the results of one command per study; ``None`` is the study of unknown files.

    Not thread-safe: the import calls ``add`` under its own lock.
    """

    studies: dict[str | None, StudyTally] = field(default_factory=dict)

    def add(self, object_key: str, moved: bool, failure: str = "failed") -> str | None:
        """Count the instance of ``object_key``: moved, or failed with the kind ``failure``.

        A key that is not an instance key (a file whose study is unknown) counts under None.
        Returns the study UID.
        """
        key = _instance_key(object_key)
        study = key.study if key is not None else None
        tally = self.studies.setdefault(study, StudyTally())
        if moved and key is not None:
            tally.series.add(key.series)
            tally.instances.append(key.sop)
        elif not moved:
            tally.failures[failure] += 1
        return study

    def add_study_of(self, object_key: str) -> None:
        """Make the study of ``object_key`` get a record, without counting the instance."""
        key = _instance_key(object_key)
        if key is not None:
            self.ensure(key.study)

    def ensure(self, study: str) -> None:
        """Make ``study`` get a record even when no instance of it was counted."""
        self.studies.setdefault(study, StudyTally())


def _instance_key(object_key: str) -> InstanceKey | None:
    try:
        return InstanceKey.parse(object_key) if object_key else None
    except ValueError:
        return None


@dataclass(frozen=True)
class CommandRecord:
    """The fields that one command's records share: the operator, the site and the other side."""

    audit: AuditLog
    action: AuditAction
    actor: Actor
    site: str
    party: TransferParty
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    anonymized: bool = False

    def write(self, tally: TransferTally, error: str = "", archive_failed: bool = False) -> int:
        """Write one record per study of ``tally``; return how many.

        ``error`` is why the command stopped, if it did: each record is then a failure, a
        serious one (8) with ``archive_failed``, when S3 or DynamoDB failed. Raises
        ``StoreUnavailableError`` when a record is not written.
        """
        for study, counts in tally.studies.items():
            self.audit.write(self._event(study, counts, error, archive_failed))
        return len(tally.studies)

    def _event(
        self, study: str | None, counts: StudyTally, error: str, archive_failed: bool
    ) -> AuditEvent:
        failed = sum(counts.failures.values())
        notes = [f"{count} {kind}" for kind, count in sorted(counts.failures.items())]
        if error:
            notes.insert(0, error)
        if study is None:
            notes.insert(0, "instances of unknown study")
        outcome = AuditOutcome.SUCCESS
        if error:
            outcome = AuditOutcome.SERIOUS_FAILURE if archive_failed else AuditOutcome.MINOR_FAILURE
        elif failed:
            outcome = (
                AuditOutcome.SERIOUS_FAILURE if not counts.instances else AuditOutcome.MINOR_FAILURE
            )
        studies: tuple[StudyAccess, ...] = ()
        if study is not None:
            access = StudyAccess(
                study=study,
                series=tuple(sorted(counts.series)),
                instances=tuple(counts.instances),
                anonymized=self.anonymized,
            )
            studies = (access,)
        return AuditEvent(
            action=self.action,
            outcome=outcome,
            actor=self.actor,
            site=self.site,
            request_id=self.request_id,
            transport="command line",
            studies=studies,
            detail="; ".join(notes) or None,
            party=self.party,
        )
