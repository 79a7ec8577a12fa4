"""``cirrus events`` and ``cirrus changes``: print the local event journal and a change feed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from cirrus.events.console import change_line, event_line
from cirrus.events.feed import ChangeReader
from cirrus.local.event_journal import JOURNAL_FILE, EventFilter, read_events

Echo = Callable[[str], None]


def print_events(
    data_dir: Path,
    selection: EventFilter,
    follow: bool,
    json_lines: bool,
    echo: Echo,
    warn: Echo,
) -> int:
    """Print the journal's events; return how many were printed."""
    path = data_dir / JOURNAL_FILE
    if not path.exists() and not follow:
        warn(f"no event journal in {data_dir}; `cirrus dev --data-dir {data_dir}` writes one")
        return 0
    printed = 0
    for entry in read_events(path, selection, follow):
        echo(event_line(entry, json_lines))
        printed += 1
    return printed


def print_changes(
    reader: ChangeReader,
    site: str,
    since: int,
    limit: int,
    follow: bool,
    interval: float,
    json_lines: bool,
    echo: Echo,
    warn: Echo,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the changes of ``site`` after ``since``; return the cursor to continue from.

    Without ``follow`` it returns once the feed has no more changes to give now. Raises
    ``StoreUnavailableError`` when DynamoDB fails.
    """
    cursor = since
    while True:
        page = reader.read(site, cursor, limit)
        for change in page.changes:
            echo(change_line(site, change, json_lines))
        cursor = page.cursor
        if page.more:
            continue
        if not follow:
            if page.waiting:
                warn(
                    f"change {cursor + 1} is numbered but not saved yet; "
                    f"run again with --since {cursor} to read on"
                )
            return cursor
        sleep(interval)
