"""The local stack's audit journal: the audit table's records, kept in the data folder.

moto keeps the audit table in memory, so each record is also appended to ``audit.jsonl`` in
the data folder, one JSON object per line, before it is written to the table. The journal is
the durable copy: the stack's own process writes the table afterwards on a thread of its own
(``TableWriter``), so that a DICOMweb request waits for one flushed append and not also for
moto. Each start of
the local stack writes the journal's records back into its new table, and ``cirrus audit``
reads a data folder the same way. The gateway's worker processes and the DICOMweb handler
append to one journal, each line under an exclusive ``flock``, flushed to disk before the
append returns.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from cirrus.audit_table import (
    AuditEntry,
    AuditRecord,
    audit_connection,
    write_entries,
    write_entry,
)
from cirrus.errors import StoreUnavailableError

logger = logging.getLogger(__name__)

JOURNAL_FILE: Final = "audit.jsonl"
# How long ``TableWriter`` waits for more entries after one, in seconds. ``AuditLog`` flushes
# the writer before it reads the table, so readers in the stack's process see every record.
# Another process that reads the table directly can find a record up to this much later.
BATCH_WINDOW_SECONDS: Final = 0.1
# The maximum number of entries that ``TableWriter`` writes in one batch, which
# ``write_entries`` splits into transactions of at most 100 items.
BATCH_ENTRIES: Final = 25


class FileAuditJournal:
    """Appends audit entries to a JSON Lines file, durably and one whole line at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entry: AuditEntry) -> None:
        """Append ``entry``; raise ``StoreUnavailableError`` when the file cannot be written."""
        line = json.dumps(entry.to_json(), separators=(",", ":")) + "\n"
        try:
            append_durably(self.path, line.encode())
        except OSError as exc:
            raise StoreUnavailableError(
                f"audit journal {self.path} was not written: {exc.strerror}"
            ) from exc


def append_durably(path: Path, lines: bytes) -> None:
    """Append whole ``lines`` to ``path`` under an exclusive ``flock``; raise ``OSError``.

    The lines are flushed to disk before this returns, and a failed write leaves the file as
    it was, so the processes of the local stack can share one JSON Lines file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _append_line(fd, lines)
    finally:
        os.close(fd)


def _append_line(fd: int, line: bytes) -> None:
    """Append ``line`` to the locked journal ``fd`` whole and flushed, or leave the file as it was.

    ``os.write`` may write part of the line and return its count when the disk fills, so the
    rest is written in a loop, and a failure truncates the file back to its length before.
    A journal that ends inside a line, cut short by a crash, gets a newline first, so that
    the fragment stays a line of its own and is skipped on reading.
    """
    start = os.fstat(fd).st_size
    if start > 0 and os.pread(fd, 1, start - 1) != b"\n":
        line = b"\n" + line
    try:
        written = 0
        while written < len(line):
            count = os.write(fd, line[written:])
            if count == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written += count
        os.fsync(fd)
    except OSError:
        os.ftruncate(fd, start)
        raise


def read_journal(path: Path) -> Iterator[AuditEntry]:
    """Yield the entries of the journal at ``path``; none when it does not exist.

    A line that is not a whole entry, such as the last line of a write that a crash cut
    short, is skipped and counted in one warning.
    """
    if not path.exists():
        return
    skipped = 0
    # Bytes, so that a line which is not UTF-8 fails in json.loads and is skipped with the rest.
    with path.open("rb") as file:
        for line in file:
            try:
                yield AuditEntry.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                skipped += 1
    if skipped:
        logger.warning(
            "unreadable lines of the audit journal skipped",
            extra={"path": str(path), "lines": skipped},
        )


def restore_journal(path: Path, model: type[AuditRecord]) -> int:
    """Write every entry of the journal into a new audit table; return how many were written.

    Many entries go in each request (``write_entries``), so a long journal is restored in
    seconds. A line that repeats an earlier one is written again without error, and counted
    again. A line whose record id an earlier line has, with other content, is skipped, and
    the skipped lines are counted in one warning. Raises ``StoreUnavailableError`` when the
    table fails.
    """
    count = 0

    def counted(entries: Iterator[AuditEntry]) -> Iterator[AuditEntry]:
        nonlocal count
        for entry in entries:
            count += 1
            yield entry

    conflicts = len(write_entries(model, counted(read_journal(path))))
    if conflicts:
        logger.warning(
            "audit journal lines skipped: an earlier line has their record id with other content",
            extra={"path": str(path), "lines": conflicts},
        )
    return count - conflicts


class TableWriter:
    """Writes journaled audit entries into the local audit table on a thread of its own.

    The ``DeferredTable`` of the local stack's ``AuditLog``. After an entry arrives, the
    thread waits up to ``window`` seconds for more, at most ``BATCH_ENTRIES`` in all, and
    writes them in one transaction (``write_entries``), or a single entry with PutItem.
    So a steady stream of requests costs moto one transaction per window instead of one
    PutItem per entry. A ``flush`` or ``close`` ends the wait at once. An entry that the
    table rejects stays in the journal, so the next start writes it, unless an earlier line
    of the journal has its record id. The failure is logged without the entry's content.
    """

    def __init__(self, model: type[AuditRecord], window: float = BATCH_WINDOW_SECONDS) -> None:
        self._model = model
        self._window = window
        self._connection = audit_connection(model)
        self._queue: queue.SimpleQueue[AuditEntry | threading.Event | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-table", daemon=True)
        self._thread.start()

    def submit(self, entry: AuditEntry) -> None:
        self._queue.put(entry)

    def flush(self) -> None:
        done = threading.Event()
        self._queue.put(done)
        done.wait()

    def close(self) -> None:
        """Write what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if isinstance(item, threading.Event):
                item.set()
                continue
            batch, control = self._collect(item)
            self._write(batch)
            for request in control:
                if request is None:
                    return
                request.set()

    def _collect(self, first: AuditEntry) -> tuple[list[AuditEntry], list[threading.Event | None]]:
        """Return the entries queued within the window after ``first``, and what ended it.

        The second list contains the flush event, or None for ``close``, that ended the window
        early, and is empty otherwise.
        """
        batch = [first]
        deadline = time.monotonic() + self._window
        while len(batch) < BATCH_ENTRIES:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    item = self._queue.get(timeout=remaining)
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None or isinstance(item, threading.Event):
                return batch, [item]
            batch.append(item)
        return batch, []

    def _write(self, batch: list[AuditEntry]) -> None:
        if len(batch) > 1:
            try:
                rejected = write_entries(self._model, batch, self._connection)
            except StoreUnavailableError:
                # Entry by entry, so that each failure is logged with its record id.
                pass
            else:
                for entry in rejected:
                    _log_not_written(entry, "a record with other content has its record id")
                return
        for entry in batch:
            try:
                write_entry(self._model, entry)
            except StoreUnavailableError as exc:
                _log_not_written(entry, str(exc))


def _log_not_written(entry: AuditEntry, error: str) -> None:
    logger.error(
        "audit record not written to the table; the journal keeps it",
        extra={"audit_record": entry.record_id, "error": error},
    )
