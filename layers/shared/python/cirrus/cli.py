"""The ``cirrus`` command line."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cirrus.audit import AuditAction
from cirrus.config import DEFAULT_AE_TITLE, DEFAULT_STABLE_AFTER_SECONDS, validate_ae_title
from cirrus.errors import StoreUnavailableError
from cirrus.gateway.tls import DEFAULT_TLS_PORT, TLSConfig, TLSConfigError
from cirrus.gateway.workers import MAX_WORKERS, available_cores
from cirrus.lifecycle import GroupBy
from cirrus.lifecycle.commands import (
    hold_app,
    lifecycle_app,
    load_lifecycle_rules,
    parse_since,
    retention_app,
    run_stats,
)
from cirrus.local.moto_process import LOOPBACK

if TYPE_CHECKING:
    from cirrus.local.datadir import FolderObjectStore
    from cirrus.operations.checkpoint import Checkpoint
    from cirrus.operations.export_command import Auditing
    from cirrus.operations.report import Output
    from cirrus.operations.target import Target

app = typer.Typer(help="Cirrus PACS: a serverless DICOM archive.", no_args_is_help=True)

# The viewer's build folder in a checkout of the repository, which `cirrus dev` serves unless
# given --viewer-dir: layers/shared/python/cirrus/cli.py is four folders below the root.
REPOSITORY_VIEWER_DIR = Path(__file__).resolve().parents[4] / "viewer" / "dist"


@app.callback()
def main() -> None:
    """Cirrus PACS: a serverless DICOM archive."""


def _check_ae_title(value: str) -> str:
    try:
        return validate_ae_title(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _check_origins(values: list[str] | None) -> list[str] | None:
    for origin in values or ():
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise typer.BadParameter(f"{origin!r} is not an origin; give scheme://host[:port]")
    return values


def _tls_config(
    certificate: Path | None,
    private_key: Path | None,
    port: int,
    ca_file: Path | None,
    require_client_certificate: bool,
) -> TLSConfig | None:
    """Return the TLS listener of ``cirrus dev``, None without --tls-certificate and --tls-key."""
    if certificate is None and private_key is None:
        if ca_file is not None or require_client_certificate:
            raise typer.BadParameter("--tls-ca and --tls-require-client-certificate need TLS")
        return None
    if certificate is None or private_key is None:
        raise typer.BadParameter("give both --tls-certificate and --tls-key, or neither")
    return TLSConfig(certificate, private_key, port, ca_file, require_client_certificate)


@app.command()
def dev(
    dicom_port: Annotated[
        int, typer.Option(min=0, max=65535, help="TCP port of the DICOM gateway; 0 picks one.")
    ] = 11112,
    http_port: Annotated[
        int,
        typer.Option(min=0, max=65535, help="TCP port of DICOMweb and the viewer; 0 picks one."),
    ] = 8080,
    ae_title: Annotated[
        str,
        typer.Option(
            callback=_check_ae_title,
            help="AE title of the gateway; other called AE titles are rejected.",
        ),
    ] = DEFAULT_AE_TITLE,
    data_dir: Annotated[
        Path,
        typer.Option(file_okay=False, help="Folder that keeps stored objects across restarts."),
    ] = Path(".cirrus"),
    ae_config: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="AE configuration (JSON): the calling AE titles of each site and the C-MOVE "
            "destinations. Without it the gateway accepts every calling AE title.",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address both servers bind; other addresses expose the archive.")
    ] = LOOPBACK,
    tls_certificate: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="PEM server certificate of the DICOM TLS listener; with --tls-key, the gateway "
            "also serves DICOM TLS.",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(dir_okay=False, help="Unencrypted PEM private key of --tls-certificate."),
    ] = None,
    tls_port: Annotated[
        int,
        typer.Option(min=0, max=65535, help="TCP port of the DICOM TLS listener; 0 picks one."),
    ] = DEFAULT_TLS_PORT,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="PEM CA certificates that TLS client certificates must chain to. Without it "
            "the TLS listener does not ask for client certificates.",
        ),
    ] = None,
    tls_require_client_certificate: Annotated[
        bool,
        typer.Option(
            help="Reject TLS clients without a valid certificate (mutual TLS); needs --tls-ca."
        ),
    ] = False,
    gateway_workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_WORKERS,
            help="Gateway processes that share the DICOM port; default the number of CPUs.",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            callback=_check_origins,
            help="Origin (scheme://host:port) whose browser pages may call DICOMweb; repeatable. "
            "None by default, so that no other web page can read the archive.",
        ),
    ] = None,
    access: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="DICOMweb access document (JSON): the sites and actions of each IAM principal. "
            "With it DICOMweb accepts only SigV4-signed requests of the --credentials keys; "
            "without it every request has every action on the site default.",
        ),
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Local SigV4 credentials (JSON): the secret access key and principal ARN of "
            "each access key id; needs --access.",
        ),
    ] = None,
    viewer_dir: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="Build folder of the web viewer (with index.html), served at / on the HTTP "
            "port; default viewer/dist of the repository.",
        ),
    ] = None,
    lifecycle_rules: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Rules file whose tiering rules are written to moto's bucket configuration.",
        ),
    ] = None,
    stable_after: Annotated[
        int,
        typer.Option(
            min=1,
            help="Seconds without a new instance of a study before its StudyStable event.",
        ),
    ] = DEFAULT_STABLE_AFTER_SECONDS,
) -> None:
    """Run the whole stack on this machine until Ctrl-C."""
    from cirrus.local.stack import LocalStack, LocalStackConfig, StartError
    from cirrus.local.viewer import BUILD_COMMAND, built_viewer
    from cirrus.logs import configure_console_logging

    configure_console_logging()
    logger = logging.getLogger("cirrus.local")
    if viewer_dir is not None and not built_viewer(viewer_dir):
        logger.error(
            "--viewer-dir %s has no index.html; give the viewer's build folder, which %s "
            "writes to viewer/dist",
            viewer_dir,
            BUILD_COMMAND,
        )
        raise typer.Exit(2)
    if host != LOOPBACK:
        logger.warning(
            "binding a non-loopback address: the archive accepts unauthenticated requests",
            extra={"host": host},
        )
    try:
        tls = _tls_config(
            tls_certificate, tls_key, tls_port, tls_ca, tls_require_client_certificate
        )
    except (typer.BadParameter, TLSConfigError) as exc:
        logger.error("TLS options are invalid: %s", exc)
        raise typer.Exit(2) from exc
    rules = load_lifecycle_rules(lifecycle_rules, logger)
    config = LocalStackConfig(
        lifecycle_rules=rules,
        host=host,
        dicom_port=dicom_port,
        http_port=http_port,
        ae_title=ae_title,
        data_dir=data_dir,
        ae_config=ae_config,
        cors_origins=tuple(cors_origin or ()),
        tls=tls,
        gateway_workers=gateway_workers if gateway_workers is not None else available_cores(),
        access_file=access,
        credentials_file=credentials,
        viewer_dir=viewer_dir if viewer_dir is not None else REPOSITORY_VIEWER_DIR,
        stable_after_seconds=stable_after,
    )
    stack = LocalStack(config)
    # A shell starts background jobs with SIGINT ignored, and SIGTERM would end the process
    # without stopping its children. During the start both stop it as Ctrl-C does.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        stack.start()
    except StartError as exc:
        logger.error("local stack failed to start: %s", exc)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        # start() has stopped what it started before re-raising.
        logger.info("start interrupted")
        raise typer.Exit(130) from None

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    exited: list[int] = []
    try:
        # A gateway worker that dies leaves its share of the DICOM port closed, so the stack
        # stops with an error, as the gateway container does, rather than serve half.
        while not stopping.wait(_WATCH_SECONDS):
            exited = stack.exited_gateway_workers()
            if exited:
                logger.error(
                    "gateway worker %d exited, stopping the local stack; run cirrus dev again",
                    exited[0],
                    extra={"workers": exited},
                )
                break
    finally:
        stack.stop()
    if exited:
        raise typer.Exit(1)


# How often ``cirrus dev`` checks that its gateway worker processes are alive.
_WATCH_SECONDS = 0.5


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _parse_time(value: str | None) -> datetime | None:
    """Parse an ISO 8601 date or time; one without an offset is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or time, such as 2026-05-04 or 2026-05-04T10:15:00Z"
        ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@app.command()
def audit(
    study: Annotated[
        str | None, typer.Option(help="Study Instance UID whose records to list.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Start of the time range, inclusive: an ISO 8601 date or time, UTC unless "
            "it has an offset."
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="End of the time range, exclusive; default now. Needs --since."),
    ] = None,
    site: Annotated[str | None, typer.Option(help="List only the records of this site.")] = None,
    action: Annotated[
        AuditAction | None, typer.Option(help="List only the records of this action.")
    ] = None,
    json_lines: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per record instead of a table.")
    ] = False,
    data_dir: Annotated[
        Path,
        typer.Option(
            file_okay=False,
            help="Data folder of the local stack whose audit records to read; ignored with "
            "--from-env.",
        ),
    ] = Path(".cirrus"),
    from_env: Annotated[
        bool,
        typer.Option(
            help="Read the audit table that the CIRRUS_* environment variables name, as the "
            "Lambda functions do, instead of a data folder."
        ),
    ] = False,
) -> None:
    """List audit records by study or by time range, oldest first."""
    from cirrus.audit_table import AuditEntry
    from cirrus.audit_view import AuditQuery, print_records, read_local, read_settings

    start, end = _parse_time(since), _parse_time(until)
    if end is not None and start is None:
        raise typer.BadParameter("--until needs --since")
    if study is None and start is None:
        raise typer.BadParameter("give --study UID, or --since (and optionally --until)")
    query = AuditQuery(study=study, since=start, until=end, site=site, action=action)
    try:
        records: Iterable[AuditEntry]
        if from_env:
            records = read_settings(query)
        else:
            records = read_local(data_dir, query)
        print_records(records, json_lines)
    except (ValueError, StoreUnavailableError) as exc:
        typer.echo(f"cirrus audit: {exc}", err=True)
        raise typer.Exit(1) from exc


_DATA_DIR_HELP = "Data folder of the running local stack to work on; ignored with --from-env."
_FROM_ENV_HELP = (
    "Work on the deployment that the CIRRUS_* environment variables name, as the Lambda "
    "functions do, instead of a local stack."
)
_CHECKPOINT_HELP = (
    "Checkpoint file: a run saves its position there and continues from it when started "
    "again; deleted when the run finishes."
)
DataDirOption = Annotated[Path, typer.Option(file_okay=False, help=_DATA_DIR_HELP)]
FromEnvOption = Annotated[bool, typer.Option(help=_FROM_ENV_HELP)]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object per line instead of text.")
]
CheckpointOption = Annotated[Path | None, typer.Option(dir_okay=False, help=_CHECKPOINT_HELP)]
CheckpointEveryOption = Annotated[
    int,
    typer.Option(min=1, help="Save the checkpoint after this many objects, entries or studies."),
]


def _operations_target(command: str, data_dir: Path, from_env: bool) -> Target:
    """Return the deployment to work on, or exit with status 2 and the reason."""
    from cirrus.local.endpoints import NoStackError
    from cirrus.operations.target import env_target, local_target

    try:
        return env_target() if from_env else local_target(data_dir)
    except (NoStackError, ValueError) as exc:
        typer.echo(f"cirrus {command}: {exc}", err=True)
        raise typer.Exit(2) from exc


def _check_site(value: str | None) -> str | None:
    from cirrus.storage.keys import validate_site

    try:
        return None if value is None else validate_site(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _checkpointed_command(
    command: str,
    site: str | None,
    checkpoint: Path | None,
    checkpoint_every: int,
    json_lines: bool,
    data_dir: Path,
    from_env: bool,
) -> tuple[Target, Output, Checkpoint]:
    """Return the deployment, output and checkpoint of a ``verify`` or ``reindex`` run."""
    from cirrus.operations.checkpoint import Checkpoint
    from cirrus.operations.report import Output

    target = _operations_target(command, data_dir, from_env)
    scope = target.object_prefix(site)
    return target, Output(json_lines), Checkpoint(checkpoint, command, scope, checkpoint_every)


@contextmanager
def _exit_on_failure(command: str, output: Output, checkpoint: Path | None) -> Iterator[None]:
    """Exit with status 2 and the reason when a request fails or the checkpoint is unusable.

    Ctrl-C exits with status 130. Either way the checkpoint contains the last finished position.
    """
    from cirrus.operations.checkpoint import CheckpointError

    resume = f"; run again with --checkpoint {checkpoint} to continue" if checkpoint else ""
    try:
        yield
    except CheckpointError as exc:
        output.error(f"cirrus {command}: {exc}")
        raise typer.Exit(2) from exc
    except StoreUnavailableError as exc:
        output.error(f"cirrus {command}: {exc}{resume}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        output.error(f"cirrus {command}: interrupted{resume}")
        raise typer.Exit(130) from None


def _warn_if_empty(command: str, site: str | None, output: Output, empty: bool) -> dict[str, str]:
    """Warn on standard error when a run found no objects and no index entries.

    An empty scope is no error, but with ``--site`` it is often a misspelt site name. Returns
    the ``warning`` field for the JSON summary, or nothing when the scope was not empty.
    """
    if not empty:
        return {}
    if site is None:
        warning = "the archive has no objects and no index entries; check the deployment"
    else:
        warning = f"site {site!r} has no objects and no index entries; check the site name"
    output.error(f"cirrus {command}: warning: {warning}")
    return {"warning": warning}


@app.command()
def verify(
    site: Annotated[
        str | None,
        typer.Option(
            callback=_check_site, help="Compare the objects and entries of this site only."
        ),
    ] = None,
    checkpoint: CheckpointOption = None,
    checkpoint_every: CheckpointEveryOption = 500,
    json_lines: JsonOption = False,
    data_dir: DataDirOption = Path(".cirrus"),
    from_env: FromEnvOption = False,
) -> None:
    """Compare the archived objects with the index and list every difference.

    Exit status 0 when they agree, 1 when differences were found, 2 on an error.
    """
    from cirrus.operations.verify import OBJECTS, RECORDS, STUDIES, Difference
    from cirrus.operations.verify import verify as run_verify

    target, output, saved = _checkpointed_command(
        "verify", site, checkpoint, checkpoint_every, json_lines, data_dir, from_env
    )
    with _exit_on_failure("verify", output, checkpoint), output.progress(f"verify: {target.name}"):
        counts = run_verify(
            target,
            site,
            saved,
            lambda f: output.line(f.to_json(), f.kind.value, f.object_key, f.detail),
            output.advance,
        ).counts
    differences = sum(counts.get(kind.value, 0) for kind in Difference)
    names = [OBJECTS, RECORDS, STUDIES, *(kind.value for kind in Difference)]
    empty = not counts.get(OBJECTS) and not counts.get(RECORDS)
    warning = _warn_if_empty("verify", site, output, empty)
    output.summary(f"verify: {target.name}", names, counts, differences=differences, **warning)
    raise typer.Exit(1 if differences else 0)


@app.command()
def reindex(
    site: Annotated[
        str | None,
        typer.Option(callback=_check_site, help="Index the objects of this site only."),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(
            help="Remove index entries whose object is gone, as a delete does; without it "
            "they are only listed."
        ),
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Stop after this many objects; with --checkpoint a second run continues.",
        ),
    ] = None,
    checkpoint: CheckpointOption = None,
    checkpoint_every: CheckpointEveryOption = 500,
    json_lines: JsonOption = False,
    data_dir: DataDirOption = Path(".cirrus"),
    from_env: FromEnvOption = False,
) -> None:
    """Index every archived object through ingest, as its notification would.

    Exit status 0 when every object is indexed, 1 when objects were rejected or entries
    without an object remain, 2 on an error.
    """
    from cirrus.operations.reindex import LimitReached, Result
    from cirrus.operations.reindex import reindex as run_reindex

    target, output, saved = _checkpointed_command(
        "reindex", site, checkpoint, checkpoint_every, json_lines, data_dir, from_env
    )
    complete = True
    with (
        _exit_on_failure("reindex", output, checkpoint),
        output.progress(f"reindex: {target.name}"),
    ):
        try:
            counts = run_reindex(
                target,
                site,
                saved,
                lambda o: output.line(o.to_json(), o.result.value, o.object_key, o.reason),
                output.advance,
                prune=prune,
                limit=limit,
            ).counts
        except LimitReached as exc:
            complete = False
            counts = exc.progress.counts
            output.error(f"cirrus reindex: {exc}; run again with the same --checkpoint")
    names = [result.value for result in Result]
    # Each object counts as indexed, updated, unchanged or rejected, and each index entry
    # without an object as pruned or missing object. All of them 0 means neither was found.
    found = set(Result) - {Result.COUNTS_REPAIRED}
    empty = not any(counts.get(result.value) for result in found)
    warning = _warn_if_empty("reindex", site, output, empty)
    output.summary(f"reindex: {target.name}", names, counts, complete=complete, **warning)
    problems = counts.get(Result.REJECTED.value, 0) + counts.get(Result.MISSING_OBJECT.value, 0)
    raise typer.Exit(1 if problems else 0)


@app.command()
def redrive(
    max_messages: Annotated[
        int | None,
        typer.Option("--max", min=1, help="Move at most this many messages; default all."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="List the messages that would move, and move none.")
    ] = False,
    json_lines: JsonOption = False,
    data_dir: DataDirOption = Path(".cirrus"),
    from_env: FromEnvOption = False,
) -> None:
    """Move messages from the ingest dead-letter queue back to the ingest queue.

    Run it once the cause of the failures is fixed. Exit status 0, or 2 on an error.
    """
    from cirrus.operations.redrive import redrive as run_redrive
    from cirrus.operations.report import Output

    target = _operations_target("redrive", data_dir, from_env)
    output = Output(json_lines)
    action = "would move" if dry_run else "moved"
    with _exit_on_failure("redrive", output, None):
        count = run_redrive(
            target,
            lambda m: output.line(m.to_json(not dry_run), action, m.message_id, m.content),
            max_messages,
            dry_run,
        )
    output.summary(f"redrive: {target.name}", [action], {action: count}, dry_run=dry_run)


RetainUidsOption = Annotated[
    bool, typer.Option(help="Keep the UIDs (Retain UIDs Option); default: replace them.")
]
RetainDatesOption = Annotated[
    bool, typer.Option(help="Keep dates and times (Retain Longitudinal Temporal Information).")
]
ShiftDatesOption = Annotated[
    bool,
    typer.Option(help="Move each patient's dates back by 1 to 3650 days, derived from the key."),
]
RetainPatientOption = Annotated[
    bool, typer.Option(help="Keep age, sex, size, weight and similar patient characteristics.")
]
RetainDeviceOption = Annotated[
    bool, typer.Option(help="Keep station names, device serial numbers and device UIDs.")
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        dir_okay=False,
        help="File with the secret key (16 bytes or more) that makes replaced UIDs, patient "
        "pseudonyms and date shifts repeat across runs; default: a random key per run.",
    ),
]


@app.command("export")
def export_study(
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID of the study to export.")],
    to: Annotated[
        Path | None,
        typer.Option(help="Write a DICOM File-set with a DICOMDIR into this new folder or .zip."),
    ] = None,
    to_dimse: Annotated[
        str | None, typer.Option(help="Send the instances with C-STORE to AE@HOST:PORT.")
    ] = None,
    site: Annotated[str, typer.Option(callback=_check_site, help="Site of the study.")] = "default",
    calling_ae: Annotated[
        str, typer.Option(callback=_check_ae_title, help="Calling AE title for --to-dimse.")
    ] = DEFAULT_AE_TITLE,
    retries: Annotated[
        int, typer.Option(min=0, help="Retries of each instance after a transient failure.")
    ] = 3,
    deidentify: Annotated[
        bool, typer.Option(help="De-identify (PS3.15 Basic Profile) before writing or sending.")
    ] = False,
    retain_uids: RetainUidsOption = False,
    retain_dates: RetainDatesOption = False,
    shift_dates: ShiftDatesOption = False,
    retain_patient_characteristics: RetainPatientOption = False,
    retain_device_identity: RetainDeviceOption = False,
    deid_key_file: KeyFileOption = None,
    json_lines: JsonOption = False,
    data_dir: DataDirOption = Path(".cirrus"),
    from_env: FromEnvOption = False,
) -> None:
    """Export a study as a File-set (folder or ZIP) or send it to a DICOM peer.

    Exit status 0 when every instance was exported, 1 when some failed, 2 on an error.
    """
    try:
        # The imports and the connection to the stack take a second, so a Ctrl-C often
        # lands here, before the export runs.
        from cirrus.operations.export_command import CommandError, DeidOptions, run_export
        from cirrus.operations.forward import ForwardSettings
        from cirrus.operations.report import Output

        output = Output(json_lines)
        flags = DeidOptions(
            retain_uids,
            retain_dates,
            shift_dates,
            retain_patient_characteristics,
            retain_device_identity,
            deid_key_file,
        )
        if flags.given() and not deidentify:
            raise CommandError("the de-identification options need --deidentify")
        deidentifier = flags.deidentifier() if deidentify else None
        target = _operations_target("export", data_dir, from_env)
        settings = ForwardSettings(calling_ae, retries)
        with _exit_on_failure("export", output, None):
            auditing = _command_auditing(target, data_dir, from_env)
            status = run_export(
                target, output, site, study_uid, to, to_dimse, deidentifier, settings, auditing
            )
    except KeyboardInterrupt:
        typer.echo("cirrus export: interrupted", err=True)
        raise typer.Exit(130) from None
    except CommandError as exc:
        output.error(f"cirrus export: {exc}")
        raise typer.Exit(2) from exc
    raise typer.Exit(status)


@app.command("deidentify")
def deidentify_study(
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID of the study to copy.")],
    to_site: Annotated[
        str, typer.Option(callback=_check_site, help="Site that receives the de-identified copy.")
    ],
    site: Annotated[str, typer.Option(callback=_check_site, help="Site of the study.")] = "default",
    retain_uids: RetainUidsOption = False,
    retain_dates: RetainDatesOption = False,
    shift_dates: ShiftDatesOption = False,
    retain_patient_characteristics: RetainPatientOption = False,
    retain_device_identity: RetainDeviceOption = False,
    deid_key_file: KeyFileOption = None,
    json_lines: JsonOption = False,
    data_dir: DataDirOption = Path(".cirrus"),
    from_env: FromEnvOption = False,
) -> None:
    """Store a de-identified copy of a study in another site of the archive.

    Exit status 0 when every instance was stored, 1 when some failed, 2 on an error.
    """
    from cirrus.operations.export_command import CommandError, DeidOptions, run_deidentify
    from cirrus.operations.report import Output

    output = Output(json_lines)
    flags = DeidOptions(
        retain_uids,
        retain_dates,
        shift_dates,
        retain_patient_characteristics,
        retain_device_identity,
        deid_key_file,
    )
    try:
        deidentifier = flags.deidentifier()
        target = _operations_target("deidentify", data_dir, from_env)
        store = target.services.store if from_env else _notifying_store(target, data_dir)
        with _exit_on_failure("deidentify", output, None):
            auditing = _command_auditing(target, data_dir, from_env)
            status = run_deidentify(
                target, store, output, site, to_site, study_uid, deidentifier, auditing
            )
    except CommandError as exc:
        output.error(f"cirrus deidentify: {exc}")
        raise typer.Exit(2) from exc
    raise typer.Exit(status)


def _command_auditing(target: Target, data_dir: Path, from_env: bool) -> Auditing:
    """Return the audit log and operator of a command; raise ``StoreUnavailableError``."""
    from cirrus.operations.command_audit import command_actor, command_audit
    from cirrus.operations.export_command import Auditing

    return Auditing(command_audit(target, data_dir, from_env), command_actor(target, from_env))


def _notifying_store(target: Target, data_dir: Path) -> FolderObjectStore:
    """Return the local stack's store with the notifier that makes its ingest index new objects."""
    from cirrus.local.datadir import FolderObjectStore
    from cirrus.local.endpoints import read_endpoints
    from cirrus.local.stack import local_notifier

    endpoints = read_endpoints(data_dir)
    notifier = local_notifier(target.services)
    return FolderObjectStore(endpoints.objects_dir, endpoints.settings.bucket, notifier)


app.add_typer(lifecycle_app, name="lifecycle")
app.add_typer(hold_app, name="hold")
app.add_typer(retention_app, name="retention")


@app.command()
def stats(
    site: Annotated[
        str | None, typer.Option(callback=_check_site, help="Count this site only.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Count only studies whose StudyDate is on or after this YYYY-MM-DD."),
    ] = None,
    by: Annotated[GroupBy, typer.Option(help="Count per site, modality or StudyDate.")] = (
        GroupBy.SITE
    ),
    json_lines: JsonOption = False,
    data_dir: DataDirOption = Path(".cirrus"),
    from_env: FromEnvOption = False,
) -> None:
    """Count the studies, series, instances and bytes in the index, per site, modality or day."""
    run_stats(site, parse_since(since), by, json_lines, data_dir, from_env)


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    for pattern in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, pattern).date()
        except ValueError:
            continue
    raise typer.BadParameter(f"{value!r} is not a date; give YYYY-MM-DD or YYYYMMDD")


@app.command("import")
def import_(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="PATH",
            help="Files, folders (read recursively) or ZIP files of DICOM files.",
            show_default=False,
        ),
    ] = None,
    from_dicomweb: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Import the studies of this DICOMweb service root."),
    ] = None,
    from_dimse: Annotated[
        str | None,
        typer.Option(metavar="AE@HOST:PORT", help="Import the studies of this DICOM peer."),
    ] = None,
    study: Annotated[
        list[str] | None,
        typer.Option(help="Import only this Study Instance UID; may be given more than once."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only studies of this StudyDate or later (YYYY-MM-DD).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only studies of this StudyDate or earlier (YYYY-MM-DD).")
    ] = None,
    patient_id: Annotated[
        str | None, typer.Option(help="Only the studies of this Patient ID.")
    ] = None,
    calling_ae: Annotated[
        str,
        typer.Option(
            callback=_check_ae_title,
            help="AE title of the import with --from-dimse, and the C-MOVE destination.",
        ),
    ] = "CIRRUS-IMPORT",
    port: Annotated[
        int,
        typer.Option(
            min=1, max=65535, help="Port of the Storage SCP on 127.0.0.1 that receives C-MOVE."
        ),
    ] = 11113,
    get: Annotated[
        bool, typer.Option("--get", help="Retrieve with C-GET instead of C-MOVE.")
    ] = False,
    site: Annotated[
        str, typer.Option(callback=_check_site, help="Site that receives the instances.")
    ] = "default",
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Number of files or studies imported at once.")
    ] = 4,
    checkpoint: CheckpointOption = None,
    checkpoint_every: Annotated[
        int,
        typer.Option(min=1, help="Save the checkpoint after this many finished files or studies."),
    ] = 200,
    report: Annotated[
        Path | None,
        typer.Option(dir_okay=False, help="Write a JSON report of every outcome to this file."),
    ] = None,
    json_lines: JsonOption = False,
    data_dir: DataDirOption = Path(".cirrus"),
    from_env: FromEnvOption = False,
) -> None:
    """Import DICOM instances from files, a DICOMweb service or a DICOM peer.

    Each instance is checked and stored as C-STORE and STOW-RS store it. Exit status 0 when
    every instance was stored, replaced or a duplicate, 1 when some were rejected or failed, 2
    on an error, 130 on Ctrl-C.
    """
    from cirrus.bulk_import.command import RunOptions, SourceSpec, run_import_command
    from cirrus.bulk_import.study_filter import StudyFilter

    sources = [value for value in (paths, from_dicomweb, from_dimse) if value]
    if len(sources) != 1:
        raise typer.BadParameter("give exactly one of PATH, --from-dicomweb and --from-dimse")
    study_filter = StudyFilter(
        tuple(study or ()), _parse_date(since), _parse_date(until), patient_id
    )
    if study_filter.since and study_filter.until and study_filter.since > study_filter.until:
        raise typer.BadParameter(f"--since {since} is after --until {until}")
    if paths and study_filter != StudyFilter():
        raise typer.BadParameter(
            "--study, --since, --until and --patient-id select studies of a remote source"
        )
    if from_dicomweb is not None and not from_dicomweb.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{from_dicomweb!r} is not an http:// or https:// URL")
    assert site is not None  # the option has a default
    spec = SourceSpec(
        tuple(paths or ()), from_dicomweb, from_dimse, study_filter, calling_ae, port, get
    )
    target = _import_target(data_dir, from_env)
    try:
        auditing = _command_auditing(target, data_dir, from_env)
    except StoreUnavailableError as exc:
        typer.echo(f"cirrus import: {exc}", err=True)
        raise typer.Exit(2) from exc
    options = RunOptions(site, workers, checkpoint, checkpoint_every, report, json_lines)
    raise typer.Exit(run_import_command(spec, target, options, auditing))


def _import_target(data_dir: Path, from_env: bool) -> Target:
    """Return the deployment to import into, or exit with status 2 and the reason."""
    from cirrus.local.endpoints import NoStackError

    try:
        if from_env:
            from cirrus.operations.target import env_target

            return env_target()
        from cirrus.bulk_import.target import local_import_target

        return local_import_target(data_dir)
    except (NoStackError, ValueError) as exc:
        typer.echo(f"cirrus import: {exc}", err=True)
        raise typer.Exit(2) from exc


def _check_detail_type(value: str | None) -> str | None:
    from cirrus.events.model import DETAIL_TYPES

    if value is not None and value not in DETAIL_TYPES:
        raise typer.BadParameter(f"{value!r} is not an event type; use {', '.join(DETAIL_TYPES)}")
    return value


@app.command()
def events(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl-C.")
    ] = False,
    site: Annotated[
        str | None, typer.Option(callback=_check_site, help="Print only this site's events.")
    ] = None,
    detail_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            callback=_check_detail_type,
            help="Print only events of this type: InstanceStored, InstanceDeleted, "
            "InstanceRejected or StudyStable.",
        ),
    ] = None,
    json_lines: JsonOption = False,
    data_dir: Annotated[
        Path,
        typer.Option(file_okay=False, help="Data folder of the local stack whose events to print."),
    ] = Path(".cirrus"),
) -> None:
    """Print the events that the local stack sent to its event bus, oldest first.

    Exit status 0, or 130 when --follow ends with Ctrl-C.
    """
    from cirrus.events.commands import print_events
    from cirrus.local.event_journal import EventFilter

    selection = EventFilter(site=site, detail_type=detail_type)
    try:
        print_events(data_dir, selection, follow, json_lines, typer.echo, _warn)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def changes(
    since: Annotated[
        int, typer.Option(min=0, help="Cursor: print the changes numbered above it.")
    ] = 0,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new changes until Ctrl-C.")
    ] = False,
    site: Annotated[
        str | None,
        typer.Option(
            callback=_check_site, help="Site whose feed to print; default the default site."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Changes read per request.")] = 100,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between reads with --follow.")
    ] = 2.0,
    json_lines: JsonOption = False,
    data_dir: DataDirOption = Path(".cirrus"),
    from_env: FromEnvOption = False,
) -> None:
    """Print a site's change feed in order, and on standard error the cursor to continue from.

    Exit status 0, 2 on an error, 130 when --follow ends with Ctrl-C.
    """
    from cirrus.events.commands import print_changes
    from cirrus.events.feed import CursorAheadError

    target = _operations_target("changes", data_dir, from_env)
    reader = target.services.change_reader
    if reader is None:
        typer.echo("cirrus changes: this deployment has no changes table", err=True)
        raise typer.Exit(2)
    feed_site = site or target.services.settings.default_site
    try:
        cursor = print_changes(
            reader, feed_site, since, limit, follow, interval, json_lines, typer.echo, _warn
        )
    except (StoreUnavailableError, CursorAheadError) as exc:
        _warn(f"cirrus changes: {exc}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    _warn(f"cursor {cursor}; continue with --since {cursor}")


def _warn(message: str) -> None:
    typer.echo(message, err=True)


if __name__ == "__main__":
    app()
