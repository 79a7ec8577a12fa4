"""The ``cirrus export`` and ``cirrus deidentify`` commands behind their command-line options.

Exit status: 0 when every instance was written or sent, 1 when some failed, 2 when the command
could not run (no stack, study not found, destination unusable, peer unreachable) or its audit
record was not written, 130 on Ctrl-C.

Each run writes its audit records when it ends, also when it fails or is interrupted
(``cirrus.operations.command_audit``). An export is audited on the study's site. A
de-identified copy is audited as an export on the source site and an import on the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cirrus.audit import (
    DESTINATION_MEDIA_ROLE,
    DESTINATION_ROLE,
    SOURCE_ROLE,
    Actor,
    AuditAction,
    AuditLog,
)
from cirrus.deid import DateHandling, Deidentifier, ProfileOptions
from cirrus.deid.deidentifier import MIN_KEY_BYTES
from cirrus.errors import InvalidInstanceError, StoreUnavailableError
from cirrus.operations.command_audit import (
    CommandRecord,
    TransferTally,
    dimse_party,
    media_party,
    site_party,
)
from cirrus.operations.export import FAILED, ExportError, InstanceResult, export_file_set
from cirrus.operations.forward import ForwardSettings, Peer, forward_study
from cirrus.operations.report import Output
from cirrus.operations.target import Target
from cirrus.storage.keys import check_uid
from cirrus.storage.objects import ObjectStore


class CommandError(Exception):
    """A command that cannot run, with the reason; the exit status is 2."""


@dataclass(frozen=True)
class DeidOptions:
    """The de-identification flags of the command line."""

    retain_uids: bool = False
    retain_dates: bool = False
    shift_dates: bool = False
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    key_file: Path | None = None

    def given(self) -> bool:
        """Tell whether any de-identification flag was given."""
        return any(
            (
                self.retain_uids,
                self.retain_dates,
                self.shift_dates,
                self.retain_patient_characteristics,
                self.retain_device_identity,
                self.key_file is not None,
            )
        )

    def deidentifier(self) -> Deidentifier:
        """Return the de-identifier these flags describe, or raise ``CommandError``."""
        if self.retain_dates and self.shift_dates:
            raise CommandError("--retain-dates and --shift-dates exclude each other; give one")
        dates = DateHandling.REMOVE
        if self.retain_dates:
            dates = DateHandling.RETAIN
        elif self.shift_dates:
            dates = DateHandling.SHIFT
        options = ProfileOptions(
            retain_uids=self.retain_uids,
            dates=dates,
            retain_patient_characteristics=self.retain_patient_characteristics,
            retain_device_identity=self.retain_device_identity,
        )
        if self.key_file is None:
            return Deidentifier(options)
        return Deidentifier(options, read_key(self.key_file))


def read_key(path: Path) -> bytes:
    """Return the key in ``path``: its bytes without surrounding whitespace."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise CommandError(f"key file {path} cannot be read: {exc.strerror}") from exc
    if len(key) < MIN_KEY_BYTES:
        raise CommandError(
            f"key file {path} contains {len(key)} bytes; use at least {MIN_KEY_BYTES}, such as the "
            "output of `openssl rand -hex 32`"
        )
    return key


@dataclass(frozen=True)
class Auditing:
    """The audit log of a command and who runs it."""

    audit: AuditLog
    actor: Actor


def run_export(
    target: Target,
    output: Output,
    site: str,
    study_uid: str,
    to_path: Path | None,
    peer_text: str | None,
    deidentifier: Deidentifier | None,
    forward_settings: ForwardSettings,
    auditing: Auditing,
) -> int:
    """Export the study to ``to_path`` or send it to the peer; return the exit status."""
    if (to_path is None) == (peer_text is None):
        raise CommandError("give one of --to PATH and --to-dimse AE@HOST:PORT")
    store = target.services.store
    anonymized = deidentifier is not None
    if to_path is not None:
        title = f"export of {study_uid} to {to_path}"
        party = media_party(to_path, DESTINATION_MEDIA_ROLE)
        record = CommandRecord(
            auditing.audit, AuditAction.EXPORT, auditing.actor, site, party, anonymized=anonymized
        )
        tally = _study_tally(study_uid)
        with output.progress(title):
            counts = _audited(
                record,
                tally,
                lambda: export_file_set(
                    store, site, study_uid, to_path, deidentifier, _reporter(output, tally)
                ),
            )
    else:
        try:
            peer = Peer.parse(str(peer_text))
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        title = f"export of {study_uid} to {peer}"
        party = dimse_party(peer.ae_title, peer.host, DESTINATION_ROLE)
        record = CommandRecord(
            auditing.audit, AuditAction.EXPORT, auditing.actor, site, party, anonymized=anonymized
        )
        tally = _study_tally(study_uid)
        with output.progress(title):
            counts = _audited(
                record,
                tally,
                lambda: forward_study(
                    store,
                    site,
                    study_uid,
                    peer,
                    deidentifier,
                    forward_settings,
                    _reporter(output, tally),
                ),
            )
    output.summary(title, list(counts), counts, deidentified=anonymized)
    return 1 if counts.get(FAILED) else 0


def run_deidentify(
    target: Target,
    store: ObjectStore,
    output: Output,
    source_site: str,
    target_site: str,
    study_uid: str,
    deidentifier: Deidentifier,
    auditing: Auditing,
) -> int:
    """Store de-identified copies of the study in ``target_site``; return the exit status.

    The source site's record is an export to the target site, and the target site's record an
    import from the source site, per study of the copies. Both carry one request id, so a
    reader of the audit trail can link the de-identified study to its source.
    """
    from cirrus.operations.deidentify import deidentify_study

    source_record = CommandRecord(
        auditing.audit,
        AuditAction.EXPORT,
        auditing.actor,
        source_site,
        site_party(target_site, DESTINATION_ROLE),
        anonymized=True,
    )
    target_record = CommandRecord(
        auditing.audit,
        AuditAction.IMPORT,
        auditing.actor,
        target_site,
        site_party(source_site, SOURCE_ROLE),
        request_id=source_record.request_id,
        anonymized=True,
    )
    source_tally = _study_tally(study_uid)
    copies = TransferTally()
    report = _reporter(output, source_tally)

    def report_copy(result: InstanceResult) -> None:
        # A stored copy's detail is its object key in the target site.
        if result.result != FAILED:
            copies.add(result.detail, moved=True)
        report(result)

    title = f"de-identified copy of {study_uid} from {source_site} to {target_site}"
    with output.progress(title):
        try:
            counts = _audited(
                source_record,
                source_tally,
                lambda: deidentify_study(
                    store,
                    target.services.claims,
                    source_site,
                    target_site,
                    study_uid,
                    deidentifier,
                    report_copy,
                ),
            )
        finally:
            _write_records(target_record, copies)
    output.summary(title, list(counts), counts)
    return 1 if counts.get(FAILED) else 0


def _study_tally(study_uid: str) -> TransferTally:
    """Return a tally with a record for ``study_uid`` when it has the syntax of a UID."""
    tally = TransferTally()
    try:
        check_uid("StudyInstanceUID", study_uid)
    except InvalidInstanceError:
        return tally
    tally.ensure(study_uid)
    return tally


def _audited(
    record: CommandRecord, tally: TransferTally, run: Callable[[], dict[str, int]]
) -> dict[str, int]:
    """Run the command and write its records, with the reason when it fails or is interrupted."""
    try:
        counts = _guarded(run)
    except CommandError as exc:
        _write_records(record, tally, str(exc), isinstance(exc.__cause__, StoreUnavailableError))
        raise
    except KeyboardInterrupt:
        _write_records(record, tally, "interrupted")
        raise
    _write_records(record, tally)
    return counts


def _write_records(
    record: CommandRecord, tally: TransferTally, error: str = "", archive_failed: bool = False
) -> None:
    try:
        record.write(tally, error, archive_failed)
    except StoreUnavailableError as exc:
        raise CommandError(f"the audit record was not written: {exc}") from exc


def _reporter(output: Output, tally: TransferTally) -> Callable[[InstanceResult], None]:
    def report(result: InstanceResult) -> None:
        tally.add(result.object_key, moved=result.result != FAILED)
        output.line(result.to_json(), result.result, result.object_key, result.detail)
        output.advance()

    return report


def _guarded(run: Callable[[], dict[str, int]]) -> dict[str, int]:
    try:
        return run()
    except (ExportError, StoreUnavailableError) as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        # Writing the File-set or a temporary file failed: a full disk, or no permission.
        raise CommandError(f"writing failed: {exc}") from exc
