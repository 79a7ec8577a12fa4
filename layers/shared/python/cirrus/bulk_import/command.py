"""``cirrus import``: the source and target of a run, its output and its exit status.

Each run ends with one audit record per study that it imported into, or found stored already
(``cirrus.operations.command_audit``), with the source as the other participant. Files and
instances whose study is unknown, because they were rejected before or failed, are counted
in one more record without a study.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from rich.console import Console

from cirrus.audit import SOURCE_MEDIA_ROLE, SOURCE_ROLE, AuditAction, TransferParty
from cirrus.bulk_import.checkpoint import ImportCheckpoint
from cirrus.bulk_import.outcome import PROBLEMS, Outcome, Result
from cirrus.bulk_import.report import ProgressDisplay, ReportFile, Summary
from cirrus.bulk_import.run import ImportRun
from cirrus.bulk_import.sources import (
    PathsSource,
    Source,
    SourceUnavailableError,
    Unit,
    local_source,
)
from cirrus.bulk_import.study_filter import StudyFilter
from cirrus.bulk_import.writer import InstanceImporter
from cirrus.errors import StoreUnavailableError
from cirrus.operations.checkpoint import CheckpointError
from cirrus.operations.command_audit import (
    CommandRecord,
    TransferTally,
    dimse_party,
    media_party,
    url_party,
)
from cirrus.operations.export_command import Auditing
from cirrus.operations.target import Target

logger = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_PROBLEMS: Final = 1
EXIT_ERROR: Final = 2
EXIT_INTERRUPTED: Final = 130
# Width of the output when standard output is not a terminal, which rich would make 80.
_PIPED_WIDTH: Final = 200


@dataclass(frozen=True)
class SourceSpec:
    """The source of an import: exactly one of ``paths``, ``dicomweb_url`` and ``dimse_peer``."""

    paths: tuple[Path, ...] = ()
    dicomweb_url: str | None = None
    dimse_peer: str | None = None
    study_filter: StudyFilter = field(default_factory=StudyFilter)
    calling_ae: str = ""
    port: int = 0
    use_get: bool = False


@dataclass(frozen=True)
class RunOptions:
    site: str
    workers: int
    checkpoint: Path | None
    checkpoint_every: int
    report: Path | None
    json_lines: bool


def source_party(spec: SourceSpec) -> TransferParty:
    """Return the source of ``spec`` as the audit records name it; raise ``ValueError``.

    Several PATHs are named by the deepest folder that contains them all, because one
    record has one source.
    """
    if spec.paths:
        resolved = [path.resolve() for path in spec.paths]
        media = resolved[0] if len(resolved) == 1 else Path(os.path.commonpath(resolved))
        return media_party(media, SOURCE_MEDIA_ROLE)
    if spec.dicomweb_url is not None:
        return url_party(spec.dicomweb_url)
    assert spec.dimse_peer is not None
    from cirrus.bulk_import.dimse_source import parse_peer

    peer = parse_peer(spec.dimse_peer)
    return dimse_party(peer.ae_title, peer.host, SOURCE_ROLE)


class _ImportTally:
    """The studies of an import's outcomes, counted from the worker threads."""

    def __init__(self) -> None:
        self.tally = TransferTally()
        self._lock = threading.Lock()

    def add(self, outcome: Outcome) -> None:
        if outcome.result is Result.SKIPPED:
            return
        with self._lock:
            if outcome.result in (Result.STORED, Result.REPLACED):
                self.tally.add(outcome.object_key, moved=True)
            elif outcome.result is Result.DUPLICATE:
                # Stored already: the study gets a record, which does not list the instance.
                self.tally.add_study_of(outcome.object_key)
            else:
                self.tally.add(outcome.object_key, moved=False, failure=outcome.result.value)


def open_source(spec: SourceSpec) -> Source:
    """Return the source that ``spec`` names; raise ``SourceUnavailableError`` or ``ValueError``."""
    if len(spec.paths) == 1:
        return local_source(spec.paths[0])
    if spec.paths:
        return PathsSource([local_source(path) for path in spec.paths], spec.paths)
    if spec.dicomweb_url is not None:
        from cirrus.bulk_import.dicomweb_source import DicomwebSource

        return DicomwebSource(spec.dicomweb_url, spec.study_filter)
    assert spec.dimse_peer is not None
    from cirrus.bulk_import.dimse_source import DimseSource, parse_peer

    source = DimseSource(
        parse_peer(spec.dimse_peer), spec.study_filter, spec.calling_ae, spec.port, spec.use_get
    )
    source.start()
    return source


def log_warnings_to_stderr() -> None:
    """Print logged warnings on standard error with their keys, such as ``object_key=...``."""
    from cirrus.logs import configure_console_logging

    configure_console_logging(logging.WARNING)
    # The command reports failed associations itself, with their cause.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


class _Output:
    """Findings and the summary on standard output; messages and progress on standard error."""

    def __init__(self, json_lines: bool) -> None:
        self.json_lines = json_lines
        self.console = Console(soft_wrap=True)
        if not self.console.is_terminal:
            self.console = Console(width=_PIPED_WIDTH, soft_wrap=True)
        self.errors = Console(stderr=True)
        # Worker threads print findings, and unlocked prints may interleave within a line.
        self._lock = threading.Lock()

    def finding(self, outcome: Outcome) -> None:
        """Print a rejected or failed instance, the findings of an import."""
        if outcome.result not in PROBLEMS:
            return
        with self._lock:
            if self.json_lines:
                print(json.dumps(outcome.to_json()), flush=True)
            else:
                text = f"{outcome.result.value}  {outcome.name}  {outcome.reason}"
                self.console.print(text, markup=False, highlight=False)

    def error(self, message: str) -> None:
        self.errors.print(message, markup=False, highlight=False, soft_wrap=True)


def run_import_command(
    spec: SourceSpec, target: Target, options: RunOptions, auditing: Auditing
) -> int:
    """Import from ``spec`` into the site ``options.site`` of ``target``; return the exit status."""
    log_warnings_to_stderr()
    output = _Output(options.json_lines)
    try:
        party = source_party(spec)
        source = open_source(spec)
    except (SourceUnavailableError, ValueError) as exc:
        output.error(f"cirrus import: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        output.error("cirrus import: interrupted")
        return EXIT_INTERRUPTED
    record = CommandRecord(auditing.audit, AuditAction.IMPORT, auditing.actor, options.site, party)
    try:
        return _run(source, target, options, output, record)
    except KeyboardInterrupt:
        # Ctrl-C while a remote source lists its studies, before anything is imported.
        output.error("cirrus import: interrupted")
        return EXIT_INTERRUPTED
    finally:
        source.close()


def _run(
    source: Source, target: Target, options: RunOptions, output: _Output, record: CommandRecord
) -> int:
    scope = f"{source.description} into site {options.site} of {target.name}"
    resume = (
        f"; run again with --checkpoint {options.checkpoint} to continue"
        if options.checkpoint
        else ""
    )
    try:
        checkpoint = ImportCheckpoint(
            options.checkpoint, scope, source.order, options.checkpoint_every
        )
        units, total = _list_units(source, output)
    except (CheckpointError, SourceUnavailableError) as exc:
        output.error(f"cirrus import: {exc}")
        return EXIT_ERROR
    report = ReportFile(options.report)
    importer = InstanceImporter(target.services.store, target.services.claims, options.site)
    display = ProgressDisplay(output.errors, not options.json_lines and output.errors.is_terminal)
    studies = _ImportTally()

    def on_outcome(outcome: Outcome) -> None:
        studies.add(outcome)
        report.add(outcome)
        output.finding(outcome)
        display.advance(outcome)

    run = ImportRun(source, importer, checkpoint, options.workers, on_outcome)
    started, start_time = datetime.now(UTC), time.monotonic()
    error, status, complete, archive_failed = "", EXIT_OK, False, False
    try:
        with display.show(f"import: {source.description}", total):
            run.run(units)
        complete = True
    except KeyboardInterrupt:
        error, status = f"interrupted{resume}", EXIT_INTERRUPTED
    except (StoreUnavailableError, SourceUnavailableError, CheckpointError) as exc:
        error, status = f"{exc}{resume}", EXIT_ERROR
        archive_failed = isinstance(exc, StoreUnavailableError)
    if error:
        output.error(f"cirrus import: {error}")
    audit_error = _write_records(record, studies.tally, status, error, archive_failed)
    if audit_error:
        output.error(f"cirrus import: {audit_error}")
        error, status = error or audit_error, EXIT_ERROR
    summary = Summary(
        source=source.description,
        target=target.name,
        site=options.site,
        started=started,
        seconds=time.monotonic() - start_time,
        totals=dict(checkpoint.state.counts),
        total_bytes=checkpoint.state.bytes_imported,
        this_run=run.this_run,
        complete=complete,
        resumed=checkpoint.resumed_from_file,
        workers=options.workers,
        interrupted=status == EXIT_INTERRUPTED,
        error=error,
    )
    report.write(summary.to_json())
    if complete:
        checkpoint.complete()
    if output.json_lines:
        print(json.dumps({"summary": summary.to_json()}), flush=True)
    else:
        summary.print(output.console)
    if status != EXIT_OK:
        return status
    problems = any(checkpoint.state.counts.get(result.value) for result in PROBLEMS)
    return EXIT_PROBLEMS if problems else EXIT_OK


def _write_records(
    record: CommandRecord, tally: TransferTally, status: int, error: str, archive_failed: bool
) -> str:
    """Write the run's audit records; return why they were not written, or ""."""
    reason = "interrupted" if status == EXIT_INTERRUPTED else error
    try:
        record.write(tally, reason, archive_failed)
    except StoreUnavailableError as exc:
        return f"the audit records were not written: {exc}"
    return ""


def _list_units(source: Source, output: _Output) -> tuple[Iterator[Unit], int | None]:
    """Return the units of ``source`` and the number of instances they contain, when known.

    A folder or ZIP is counted first, which a walk of the folder costs. The studies of a
    remote source are listed whole, so that a failed search ends the run before it starts.
    """
    count = getattr(source, "count", None)
    if callable(count):
        total = count() if output.errors.is_terminal and not output.json_lines else None
        return source.units(), total
    units = list(source.units())
    known = [unit.instances for unit in units]
    total = None if any(n is None for n in known) else sum(n or 0 for n in known)
    return iter(units), total
