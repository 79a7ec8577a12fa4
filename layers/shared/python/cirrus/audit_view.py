"""The queries and output of ``cirrus audit``, on a data folder or on a deployment.

A data folder's records are in its audit journal (``cirrus.local.audit_journal``). They are
read through the same Queries as a deployment's: the command starts a moto server of its own,
writes the journal into a new audit table there, queries it and stops the server. That works
whether or not a local stack is running on the folder, because the journal is only appended to.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from cirrus.audit import AuditAction, AuditLog, filter_records, query_keys_of
from cirrus.audit_table import AuditEntry, bind_audit_model
from cirrus.config import ResourceNames, Settings

OUTCOMES: Final = {0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure"}
# Width of the table when standard output is not a terminal, which rich would make 80.
_PIPED_WIDTH: Final = 200


@dataclass(frozen=True)
class AuditQuery:
    """The records to list: of one study, or of a time range, or both, then filtered."""

    study: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    site: str | None = None
    action: AuditAction | None = None

    def run(self, log: AuditLog) -> Iterator[AuditEntry]:
        """Yield the matching records of ``log``, oldest first."""
        if self.study is not None:
            records = log.records_of_study(self.study, self.since, self.until)
        elif self.since is not None:
            records = log.records_between(self.since, self.until or datetime.now(UTC))
        else:
            raise ValueError("an audit query needs a study or a start time")
        return filter_records(records, self.site, self.action)


def read_settings(query: AuditQuery) -> Iterator[AuditEntry]:
    """Yield the records of the deployment that the environment names (``Settings.from_env``)."""
    settings = Settings.from_env()
    return query.run(AuditLog(bind_audit_model(settings), settings.deployment))


def read_local(data_dir: Path, query: AuditQuery) -> list[AuditEntry]:
    """Return the records of a local stack's data folder, read through a moto of their own."""
    from cirrus.local.audit_journal import JOURNAL_FILE, restore_journal
    from cirrus.local.moto_process import start_moto, use_local_credentials
    from cirrus.local.resources import create_audit_table

    if not data_dir.is_dir():
        raise ValueError(f"data folder {data_dir} does not exist; give the stack's --data-dir")
    journal = data_dir / JOURNAL_FILE
    if not journal.exists():
        return []
    use_local_credentials()
    moto = start_moto()
    try:
        settings = Settings.for_names(ResourceNames(), endpoint_url=moto.endpoint_url)
        create_audit_table(settings)
        model = bind_audit_model(settings)
        assert model is not None  # for_names names the audit table
        restore_journal(journal, model)
        return list(query.run(AuditLog(model, settings.deployment)))
    finally:
        moto.stop()


def print_records(records: Iterable[AuditEntry], json_lines: bool) -> int:
    """Print ``records`` as a table, or as JSON Lines; return how many were printed."""
    if json_lines:
        count = 0
        for record in records:
            print(json.dumps(record.to_json(), separators=(",", ":")), flush=True)
            count += 1
        return count
    console = Console()
    if not console.is_terminal:
        console = Console(width=_PIPED_WIDTH)
    table = Table("Time (UTC)", "Action", "Outcome", "Site", "Requestor", "Address", "Studies")
    table.add_column("Instances", justify="right")
    table.add_column("Keys or detail")
    count = 0
    for record in records:
        table.add_row(*summary_row(record))
        count += 1
    table.caption = f"{count} record{'' if count == 1 else 's'}"
    console.print(table)
    return count


def summary_row(record: AuditEntry) -> list[str]:
    """Return the table cells of one record, read from its message."""
    message = record.message
    requestor: Mapping[str, Any] = next(
        (
            participant
            for participant in message.get("ActiveParticipant", ())
            if participant.get("UserIsRequestor")
        ),
        {},
    )
    instances = sum(
        int(element.get("NumberOfInstances", 0))
        for item in message.get("ParticipantObjectIdentification", ())
        for element in (item.get("ParticipantObjectDescription") or {}).get("SOPClass", ())
    )
    event = message.get("EventIdentification", {})
    notes = []
    if record.action == AuditAction.QUERY:
        level = _detail(message, "QueryRetrieveLevel")
        keys = ", ".join(query_keys_of(message)) or "no keys"
        notes.append(f"{level} {keys}" if level else keys)
    if event.get("EventOutcomeDescription"):
        notes.append(str(event["EventOutcomeDescription"]))
    return [
        record.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        record.action,
        OUTCOMES.get(record.outcome, str(record.outcome)),
        record.site or "",
        str(requestor.get("UserID", "")),
        str(requestor.get("NetworkAccessPointID", "")),
        "\n".join(record.studies),
        str(instances) if record.studies else "",
        "\n".join(notes),
    ]


def _detail(message: Mapping[str, Any], detail_type: str) -> str | None:
    """Return the decoded value of the first ParticipantObjectDetail of ``detail_type``."""
    for item in message.get("ParticipantObjectIdentification", ()):
        for detail in item.get("ParticipantObjectDetail", ()):
            if detail.get("type") == detail_type:
                return base64.b64decode(detail["value"]).decode()
    return None
