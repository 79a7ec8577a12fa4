"""The local stack's journal of Cirrus events: a JSON Lines file in the data folder.

A rule on the local event bus sends every Cirrus event to the journal queue
(``cirrus.local.event_resources``), and a poller of the local stack appends each message, the
event as EventBridge delivers it, as one line to ``events.jsonl``. ``cirrus events`` reads and
follows that file. The file is kept across restarts, like the archive.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

JOURNAL_FILE: Final = "events.jsonl"
FOLLOW_INTERVAL_SECONDS: Final = 0.5


class EventJournalWriter:
    """Appends the events of SQS batches to the journal file; the poller's batch handler."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        lines = []
        for record in event.get("Records", ()):
            try:
                parsed = json.loads(record.get("body", ""))
            except json.JSONDecodeError:
                logger.warning("journal message is not JSON; dropped")
                continue
            lines.append(json.dumps(parsed, separators=(",", ":"), sort_keys=True) + "\n")
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as journal:
                journal.writelines(lines)
        except OSError as exc:
            logger.error("event journal not written", extra={"error": str(exc)})
            failures = [{"itemIdentifier": r["messageId"]} for r in event.get("Records", ())]
            return {"batchItemFailures": failures}
        return {"batchItemFailures": []}


@dataclass(frozen=True)
class EventFilter:
    """A selection of journal entries: all, or those of one site and one detail type."""

    site: str | None = None
    detail_type: str | None = None

    def matches(self, entry: dict[str, Any]) -> bool:
        detail = entry.get("detail")
        if not isinstance(detail, dict):
            return False
        if self.site is not None and detail.get("site") != self.site:
            return False
        return self.detail_type is None or entry.get("detail-type") == self.detail_type


def read_events(
    path: Path,
    selection: EventFilter,
    follow: bool = False,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[dict[str, Any]]:
    """Yield the journal's entries that ``selection`` matches, oldest first.

    With ``follow``, wait for new entries until ``stop`` returns True. A line that is not a
    JSON object (a partial line being written) is read again once complete, or skipped.
    """
    position = 0
    while True:
        position = yield from _read_from(path, position, selection)
        if not follow or stop():
            return
        sleep(FOLLOW_INTERVAL_SECONDS)


def _read_from(
    path: Path, position: int, selection: EventFilter
) -> Generator[dict[str, Any], None, int]:
    # The generator's return value is the offset after the last complete line.
    try:
        with path.open("rb") as journal:
            journal.seek(position)
            for line in journal:
                if not line.endswith(b"\n"):
                    break  # written in part; read it again next time
                position += len(line)
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and selection.matches(entry):
                    yield entry
    except FileNotFoundError:
        pass
    return position
