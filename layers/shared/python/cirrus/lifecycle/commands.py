"""The ``cirrus lifecycle``, ``hold``, ``retention`` and ``stats`` commands.

Like ``verify`` and ``reindex``, each works on the local stack running on ``--data-dir`` or,
with ``--from-env``, on the deployment that the CIRRUS_* variables name. Exit statuses: 0 on
success, 1 when the command did not do what it was asked (an invalid rules file, a study
held already, a retention delete that failed), 2 on an error such as no running stack.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from cirrus.errors import CirrusError, LegalHoldError, NotFoundError, StoreUnavailableError
from cirrus.lifecycle import GroupBy
from cirrus.lifecycle.rules import LifecycleRules, RulesError, load_rules
from cirrus.storage.keys import validate_site

# The modules that reach S3 and DynamoDB are imported by the commands that use them, so that
# ``cirrus --help`` and ``cirrus dev`` do not pay for them.
if TYPE_CHECKING:
    from cirrus.audit import Actor, AuditLog
    from cirrus.lifecycle.holds import LegalHold
    from cirrus.lifecycle.retention import Finding
    from cirrus.operations.target import Target

lifecycle_app = typer.Typer(help="Show and check tiering and retention rules files.")
hold_app = typer.Typer(help="Set, release and list legal holds of studies.")
retention_app = typer.Typer(help="Delete the studies whose retention has passed.")

_DATA_DIR_HELP = "Data folder of the running local stack to work on; ignored with --from-env."
_FROM_ENV_HELP = "Work on the deployment that the CIRRUS_* environment variables name."
DataDir = Annotated[Path, typer.Option(file_okay=False, help=_DATA_DIR_HELP)]
FromEnv = Annotated[bool, typer.Option(help=_FROM_ENV_HELP)]
JsonLines = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
RulesFile = Annotated[
    Path, typer.Argument(dir_okay=False, help="The JSON rules file (docs/operations.md).")
]


def _site(value: str | None) -> str | None:
    try:
        return None if value is None else validate_site(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _fail(command: str, message: str, status: int) -> typer.Exit:
    typer.echo(f"cirrus {command}: {message}", err=True)
    return typer.Exit(status)


def _target(command: str, data_dir: Path, from_env: bool) -> tuple[Target, AuditLog]:
    """Return the deployment and its audit log, which locally also appends to the journal."""
    from cirrus.audit import AuditLog
    from cirrus.local.audit_journal import JOURNAL_FILE, FileAuditJournal
    from cirrus.local.endpoints import NoStackError
    from cirrus.operations.target import env_target, local_target

    try:
        target = env_target() if from_env else local_target(data_dir)
    except (NoStackError, ValueError) as exc:
        raise _fail(command, str(exc), 2) from exc
    services = target.services
    audit = services.audit
    if not from_env:
        # The local audit table lives in moto's memory; the journal is what survives a restart.
        journal = FileAuditJournal(data_dir / JOURNAL_FILE)
        audit = AuditLog(audit.model, services.settings.deployment, journal)
    return target, audit


def _operator(command: str, target: Target, from_env: bool) -> Actor:
    """Return who runs the command: the IAM identity on AWS, the OS user on the local stack."""
    from cirrus.operations.command_audit import command_actor

    try:
        return command_actor(target, from_env)
    except StoreUnavailableError as exc:
        raise _fail(command, str(exc), 2) from exc


# --- lifecycle -----------------------------------------------------------------------------


def load_lifecycle_rules(path: Path | None, logger: logging.Logger) -> LifecycleRules | None:
    """Return the rules of ``cirrus dev --lifecycle-rules``; exit with status 2 when invalid."""
    if path is None:
        return None
    try:
        return load_rules(path)
    except RulesError as exc:
        logger.error("--lifecycle-rules is invalid: %s", exc)
        raise typer.Exit(2) from exc


def _load(command: str, path: Path, status: int = 1) -> LifecycleRules:
    try:
        return load_rules(path)
    except RulesError as exc:
        raise _fail(command, str(exc), status) from exc


@lifecycle_app.command("check")
def lifecycle_check(path: RulesFile) -> None:
    """Validate a rules file. Exit status 0 when it is valid, 1 with the reason when not."""
    rules = _load("lifecycle check", path)
    typer.echo(f"{path}: {describe_rules(rules)}")
    if not rules.rules:
        typer.echo(
            f"cirrus lifecycle check: warning: {path} has an empty rules list, so it tiers "
            "and deletes nothing",
            err=True,
        )


def describe_rules(rules: LifecycleRules) -> str:
    """Return the one-line summary of a valid rules file: ``valid, 2 rules for site north``."""
    count = len(rules.rules)
    if count == 0:
        return "valid, no rules"
    sites = rules.sites
    rule_word = "rule" if count == 1 else "rules"
    site_word = "site" if len(sites) == 1 else "sites"
    return f"valid, {count} {rule_word} for {site_word} {', '.join(sites)}"


@lifecycle_app.command("show")
def lifecycle_show(path: RulesFile, json_output: JsonLines = False) -> None:
    """Print the rules of a file and the S3 lifecycle configuration generated from them."""
    rules = _load("lifecycle show", path)
    configuration = {"Rules": rules.s3_rules()}
    if json_output:
        typer.echo(json.dumps({"s3_lifecycle_configuration": configuration}, indent=2))
        return
    table = Table(title=f"Rules of {path}")
    for column in ("Site", "Modality", "Transitions", "Retention"):
        table.add_column(column)
    for rule in rules.rules:
        steps = ", ".join(f"{t.storage_class} after {t.days} days" for t in rule.transitions)
        table.add_row(
            rule.site, rule.modality or "every", steps or "none", rule.describe_retention()
        )
    console = Console()
    console.print(table)
    console.print("S3 lifecycle configuration (the archive bucket's rules for tiering):")
    console.print_json(json.dumps(configuration))


# --- legal hold ----------------------------------------------------------------------------

Site = Annotated[str, typer.Option(callback=_site, help="The site of the study.")]
ListedSite = Annotated[
    str, typer.Option("--site", callback=_site, help="The site whose legal holds are listed.")
]
StudyArgument = Annotated[str, typer.Argument(help="The Study Instance UID.")]


@hold_app.command("set")
def hold_set(
    study: StudyArgument,
    site: Site,
    reason: Annotated[
        str, typer.Option(help="Why the study is held; kept with the hold and audited.")
    ],
    data_dir: DataDir = Path(".cirrus"),
    from_env: FromEnv = False,
) -> None:
    """Put a study under legal hold, so that nothing deletes it until the hold is released."""
    from cirrus.lifecycle.holds import LegalHolds

    target, audit = _target("hold set", data_dir, from_env)
    actor = _operator("hold set", target, from_env)
    try:
        hold = LegalHolds(target.services.store).set(site, study, reason, actor, audit)
    except LegalHoldError as exc:
        raise _fail("hold set", str(exc), 1) from exc
    except CirrusError as exc:
        raise _fail("hold set", str(exc), 2) from exc
    typer.echo(f"study {study} of site {site} held by {hold.held_by} at {hold.held_at}")


@hold_app.command("release")
def hold_release(
    study: StudyArgument,
    site: Site,
    reason: Annotated[str, typer.Option(help="Why the hold ends; audited.")],
    data_dir: DataDir = Path(".cirrus"),
    from_env: FromEnv = False,
) -> None:
    """Release the legal hold of a study. Exit status 1 when it has none."""
    from cirrus.lifecycle.holds import LegalHolds

    target, audit = _target("hold release", data_dir, from_env)
    actor = _operator("hold release", target, from_env)
    try:
        LegalHolds(target.services.store).release(site, study, actor, audit, reason)
    except NotFoundError as exc:
        raise _fail("hold release", str(exc), 1) from exc
    except CirrusError as exc:
        raise _fail("hold release", str(exc), 2) from exc
    typer.echo(f"legal hold of study {study} of site {site} released")


@hold_app.command("list")
def hold_list(
    site: ListedSite,
    json_output: JsonLines = False,
    data_dir: DataDir = Path(".cirrus"),
    from_env: FromEnv = False,
) -> None:
    """List the legal holds of a site."""
    from cirrus.lifecycle.holds import LegalHolds

    target, _ = _target("hold list", data_dir, from_env)
    try:
        holds = LegalHolds(target.services.store).list(site)
    except CirrusError as exc:
        raise _fail("hold list", str(exc), 2) from exc
    if json_output:
        for hold in holds:
            typer.echo(hold.to_json())
        return
    if not holds:
        typer.echo(f"site {site} has no legal holds")
        return
    Console().print(holds_table(site, holds))


def holds_table(site: str, holds: list[LegalHold]) -> Table:
    """Return the table of ``hold list``: one section of fields per hold.

    A row per hold would cut the Study Instance UID (up to 64 characters) with an ellipsis in
    an 80-column terminal. Here the value column fits a whole UID in 80 columns, and folds it
    onto the next line in a narrower one, so the UID can always be copied.
    """
    table = Table(title=f"Legal holds of site {site}", show_header=False)
    table.add_column("Field", no_wrap=True)
    table.add_column("Value", overflow="fold")
    for number, hold in enumerate(holds):
        if number:
            table.add_section()
        table.add_row("Study", hold.study)
        table.add_row("Held by", hold.held_by)
        table.add_row("Held at", hold.held_at)
        table.add_row("Reason", hold.reason)
    return table


# --- retention -----------------------------------------------------------------------------


@retention_app.command("apply")
def retention_apply(
    rules_file: Annotated[
        Path, typer.Option("--rules", dir_okay=False, help="The JSON rules file.")
    ],
    site: Annotated[
        str | None,
        typer.Option(callback=_site, help="Apply the rules of this site only; default all."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="List the studies that would be deleted, and delete none.")
    ] = False,
    json_output: JsonLines = False,
    data_dir: DataDir = Path(".cirrus"),
    from_env: FromEnv = False,
) -> None:
    """Delete the studies past retention that no legal hold keeps, each with an audit record.

    Exit status 0 when every such study was deleted (or listed, with --dry-run), 1 when a
    delete failed, 2 on an error.
    """
    from cirrus.lifecycle.retention import Outcome, Retention

    # Exit status 1 means a failed delete here, so an invalid file is an error (2).
    rules = _load("retention apply", rules_file, 2)
    target, audit = _target("retention apply", data_dir, from_env)
    services = target.services
    retention = Retention(
        rules,
        services.index_model,
        services.store,
        audit,
        changes=services.change_feed,
        events=services.events,
    )
    sites = [site] if site is not None else rules.sites
    console = Console()

    def report(finding: Finding) -> None:
        if json_output:
            typer.echo(json.dumps(finding.to_json()))
        else:
            console.print(finding_line(finding), markup=False, highlight=False)

    counts: dict[str, int] = {}
    try:
        for name in sites:
            for outcome, count in retention.run(name, dry_run, report).items():
                counts[outcome] = counts.get(outcome, 0) + count
    except CirrusError as exc:
        raise _fail("retention apply", str(exc), 2) from exc
    except (ValueError, OverflowError) as exc:
        # One line and no traceback, as for every other error of the command.
        raise _fail("retention apply", f"retention run failed: {exc}", 2) from exc
    summary = {str(outcome): counts.get(str(outcome), 0) for outcome in Outcome}
    if json_output:
        typer.echo(json.dumps({"summary": summary, "dry_run": dry_run}))
    else:
        console.print(", ".join(f"{name}: {count}" for name, count in summary.items()))
    raise typer.Exit(1 if counts.get(str(Outcome.FAILED)) else 0)


def finding_line(finding: Finding) -> str:
    """Return the text line of one retention finding; a deletion has its count and audit id."""
    line = (
        f"{finding.outcome}  {finding.site}  {finding.study}  StudyDate "
        f"{finding.study_date or 'none'}  retention {finding.retention}"
    )
    if finding.audit_record:
        line += f"  {finding.instances} instances  audit record {finding.audit_record}"
    if finding.detail:
        line += f"  {finding.detail}"
    return line


# --- statistics ----------------------------------------------------------------------------


def parse_since(value: str | None) -> date | None:
    if value is None:
        return None
    for pattern in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, pattern).date()
        except ValueError:
            continue
    raise typer.BadParameter(f"{value!r} is not a date; give YYYY-MM-DD")


def run_stats(
    site: str | None,
    since: date | None,
    group_by: GroupBy,
    json_output: bool,
    data_dir: Path,
    from_env: bool,
) -> None:
    """Print the counts of studies, series, instances and bytes per group."""
    from cirrus.lifecycle.stats import statistics

    target, _ = _target("stats", data_dir, from_env)
    services = target.services
    try:
        sites = [site] if site is not None else services.store.child_names("sites/")
        rows = statistics(services.index_model, sites, group_by, since)
    except StoreUnavailableError as exc:
        raise _fail("stats", str(exc), 2) from exc
    warning = _empty_stats_warning(site, since) if not rows else None
    if warning is not None:
        typer.echo(f"cirrus stats: warning: {warning}", err=True)
    if json_output:
        document: dict[str, object] = {
            "by": str(group_by),
            "since": since.isoformat() if since else None,
            "groups": rows,
        }
        if warning is not None:
            document["warning"] = warning
        typer.echo(json.dumps(document))
        return
    table = Table(title=f"Archive statistics by {group_by}" + (f" since {since}" if since else ""))
    table.add_column(str(group_by).capitalize())
    for column in ("Studies", "Series", "Instances", "Bytes"):
        table.add_column(column, justify="right")
    for name, counts in rows.items():
        table.add_row(
            name, *(f"{counts[key]:,}" for key in ("studies", "series", "instances", "bytes"))
        )
    Console().print(table)


def _empty_stats_warning(site: str | None, since: date | None) -> str:
    # An empty result is no error, but with --site it is often a misspelt site name.
    studies = f"no studies with a StudyDate on or after {since}" if since else "no studies"
    if site is None:
        return f"the index has {studies}; check the deployment"
    return f"site {site!r} has {studies} in the index; check the site name"
