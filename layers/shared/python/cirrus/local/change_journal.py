"""The local stack's change journal: every change of the feed, kept in the data folder.

moto keeps the changes table in memory, so each change that a writer saves is also appended
to ``changes.jsonl`` in the data folder, one JSON object per line, after the transaction that
saved it. Each number written as void is appended too. A stop of the local stack appends each
site's counter (a line with sequence 0), which also covers numbers handed out but never
written. Each start writes the journal back into its new table and sets each site's counter
to the highest journaled number, so sequence numbers continue and past changes, deletes
included, are served again. The start then compares the journal with the
archive (``reconcile_feed``): an archived instance whose last journaled change is not
``stored`` gets a ``stored`` change, and an instance whose last change is ``stored`` but that
is no longer archived gets a ``deleted`` one. The index rebuild itself writes no changes.

NOTE: after a stack that did not stop cleanly, a change saved by a process that died before
its journal append is lost, and numbers handed out but never written are handed out again.
A consumer whose cursor passed such a number misses the change that reuses it, and one that
read the lost change sees the instance again in the change that the reconciliation adds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from botocore.exceptions import BotoCoreError
from pynamodb.exceptions import PynamoDBException

from cirrus.errors import StoreUnavailableError
from cirrus.events.feed import DELETED, STORED, ChangeFeed
from cirrus.events.tables import COUNTER_SK, ChangeRecord
from cirrus.local.audit_journal import append_durably
from cirrus.storage.keys import InstanceKey

logger = logging.getLogger(__name__)

JOURNAL_FILE: Final = "changes.jsonl"
_FEED_SUFFIX: Final = "#FEED"
_FIELDS: Final = (
    "action",
    "study",
    "series",
    "sop",
    "sop_class",
    "time",
    "allocated_at",
    "last_sequence",
)


class FileChangeJournal:
    """Appends saved changes to a JSON Lines file, durably and whole lines at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, records: Sequence[ChangeRecord]) -> None:
        """Append ``records``; raise ``StoreUnavailableError`` when the file cannot be written."""
        if not records:
            return
        lines = "".join(_encode(record) for record in records)
        try:
            append_durably(self.path, lines.encode())
        except OSError as exc:
            raise StoreUnavailableError(
                f"change journal {self.path} was not written: {exc.strerror}"
            ) from exc


def _encode(record: ChangeRecord) -> str:
    return json.dumps(_line(record), separators=(",", ":")) + "\n"


def _line(record: ChangeRecord) -> dict[str, Any]:
    line: dict[str, Any] = {"pk": record.pk, "sequence": int(record.sk)}
    for name in _FIELDS:
        value = getattr(record, name)
        if value is not None:
            line[name] = value
    return line


def read_change_journal(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the lines of the journal at ``path``; none when it does not exist.

    A line that is not a whole change, such as the last line of a write that a crash cut
    short, is skipped and counted in one warning.
    """
    if not path.exists():
        return
    skipped = 0
    # Bytes, so that a line which is not UTF-8 fails in json.loads and is skipped with the rest.
    with path.open("rb") as file:
        for text in file:
            try:
                line = json.loads(text)
                if not str(line["pk"]).endswith(_FEED_SUFFIX) or int(line["sequence"]) < 0:
                    raise ValueError("not a change or counter")
                if line["sequence"] == COUNTER_SK:
                    int(line["last_sequence"])
            except (ValueError, KeyError, TypeError):
                skipped += 1
                continue
            yield line
    if skipped:
        logger.warning(
            "unreadable lines of the change journal skipped",
            extra={"path": str(path), "lines": skipped},
        )


@dataclass
class RestoredFeed:
    """The contents of a restored journal: the count of changes and each instance's last action."""

    changes: int = 0
    # The action of the highest-numbered change of each instance, by its storage key.
    last_actions: dict[InstanceKey, str] = field(default_factory=dict)

    def stored_keys(self) -> set[InstanceKey]:
        return {key for key, action in self.last_actions.items() if action == STORED}


def restore_change_journal(path: Path, model: type[ChangeRecord]) -> RestoredFeed:
    """Write the journal's changes and each site's counter into a new changes table.

    Raises ``StoreUnavailableError`` when the table fails.
    """
    lines = sorted(read_change_journal(path), key=lambda line: (line["pk"], line["sequence"]))
    restored = RestoredFeed()
    # The line with the highest number of each site, a change's or a counter's.
    counters: dict[str, tuple[int, Any]] = {}
    try:
        with model.batch_write() as batch:
            for line in lines:
                number = _last_number(line)
                if number >= counters.get(line["pk"], (0, None))[0]:
                    counters[line["pk"]] = (number, line.get("allocated_at"))
                if line["sequence"] == COUNTER_SK:
                    continue
                batch.save(_record(model, line))
                restored.changes += 1
                key = _instance_key(line)
                if key is not None and line.get("action") in (STORED, DELETED):
                    restored.last_actions[key] = line["action"]
        for pk, (number, allocated_at) in counters.items():
            # The counter gets the time of its last number: no reader waits for a gap after it.
            counter = model(pk, COUNTER_SK, last_sequence=number, allocated_at=allocated_at)
            counter.save()
    except (PynamoDBException, BotoCoreError) as exc:
        raise StoreUnavailableError(
            f"change journal {path} was not restored: {type(exc).__name__}"
        ) from exc
    return restored


def journal_counters(model: type[ChangeRecord], journal: FileChangeJournal) -> int:
    """Append each site's counter to the journal; return how many sites it has.

    Raises ``StoreUnavailableError`` when DynamoDB or the journal fail.
    """
    try:
        counters = [
            record
            for record in model.scan(model.sk == COUNTER_SK)
            if record.pk.endswith(_FEED_SUFFIX) and record.last_sequence is not None
        ]
    except (PynamoDBException, BotoCoreError) as exc:
        raise StoreUnavailableError(
            f"change feed counters were not read: {type(exc).__name__}"
        ) from exc
    journal.append(counters)
    return len(counters)


def _last_number(line: dict[str, Any]) -> int:
    if line["sequence"] == COUNTER_SK:
        return int(line["last_sequence"])
    return int(line["sequence"])


def _record(model: type[ChangeRecord], line: dict[str, Any]) -> ChangeRecord:
    values = {name: line[name] for name in _FIELDS if line.get(name) is not None}
    return model(line["pk"], line["sequence"], **values)


def _instance_key(line: dict[str, Any]) -> InstanceKey | None:
    site = str(line["pk"]).removesuffix(_FEED_SUFFIX)
    parts = (line.get("study"), line.get("series"), line.get("sop"))
    if not all(isinstance(part, str) and part for part in parts):
        return None
    study, series, sop = (str(part) for part in parts)
    return InstanceKey(site, study, series, sop)


def reconcile_feed(
    feed: ChangeFeed, restored: RestoredFeed, archived: Iterable[InstanceKey]
) -> dict[str, int]:
    """Add the changes that bring the feed in line with the archived instances.

    Returns the number of ``stored`` and ``deleted`` changes added. Raises
    ``StoreUnavailableError`` when DynamoDB fails.
    """
    archived_keys = set(archived)
    in_feed = restored.stored_keys()
    added = {STORED: 0, DELETED: 0}
    for action, keys in ((STORED, archived_keys - in_feed), (DELETED, in_feed - archived_keys)):
        by_site: dict[str, list[InstanceKey]] = {}
        for key in sorted(keys, key=lambda k: (k.site, k.study, k.series, k.sop)):
            by_site.setdefault(key.site, []).append(key)
        for site, site_keys in by_site.items():
            added[action] += feed.save_changes(site, action, site_keys)
    return added
