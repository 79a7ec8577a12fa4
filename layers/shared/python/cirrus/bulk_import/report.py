"""What an import shows and writes: a progress bar, the summary, and the ``--report`` file."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cirrus.bulk_import.outcome import Outcome, Result
from cirrus.bulk_import.run import RunCounts

RESULTS = tuple(Result)


class ProgressDisplay:
    """A progress bar on standard error while an import runs, only when that is a terminal.

    It shows instances done (of the total when the source says it), bytes imported, the rate
    and the time remaining.
    """

    def __init__(self, console: Console, enabled: bool) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[size]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self._task: TaskID | None = None
        self._bytes = 0
        self._lock = threading.Lock()

    @contextmanager
    def show(self, description: str, total: int | None) -> Iterator[ProgressDisplay]:
        with self._progress:
            self._task = self._progress.add_task(description, total=total, size="", rate="")
            yield self

    def set_total(self, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, total=total)

    def advance(self, outcome: Outcome) -> None:
        if self._task is None:
            return
        with self._lock:
            if outcome.result in (Result.STORED, Result.REPLACED):
                self._bytes += outcome.size
            self._progress.advance(self._task)
            task = self._progress.tasks[self._task]
            speed = task.speed
            rate = f"{speed:.1f} inst/s" if speed else ""
            self._progress.update(self._task, size=decimal(self._bytes), rate=rate)


class ReportFile:
    """The ``--report`` JSON document, whose entries are spooled to a file while the run goes.

    The entries of a long import would not fit in memory, so each outcome is appended to a
    temporary file beside the report, and ``write`` streams them into the final document.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._spool: IO[str] | None = None
        self._spool_path: Path | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-entries-")
            self._spool = os.fdopen(fd, "w")
            self._spool_path = Path(name)

    def add(self, outcome: Outcome) -> None:
        if self._spool is None:
            return
        line = json.dumps(outcome.to_json())
        with self._lock:
            self._spool.write(line + "\n")

    def write(self, header: Mapping[str, Any]) -> None:
        """Write the report: ``header``'s fields and then ``entries``; remove the spool file."""
        if self.path is None or self._spool is None or self._spool_path is None:
            return
        self._spool.close()
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}-")
        try:
            with os.fdopen(fd, "w") as out, self._spool_path.open() as entries:
                out.write(json.dumps(dict(header), indent=2)[:-2] + ',\n  "entries": [')
                for number, line in enumerate(entries):
                    out.write(("\n    " if number == 0 else ",\n    ") + line.rstrip("\n"))
                out.write("\n  ]\n}\n")
            os.replace(temporary, self.path)
        finally:
            Path(temporary).unlink(missing_ok=True)
            self._spool_path.unlink(missing_ok=True)

    def discard(self) -> None:
        if self._spool is not None:
            self._spool.close()
        if self._spool_path is not None:
            self._spool_path.unlink(missing_ok=True)


@dataclass
class Summary:
    """The figures of one run, for the summary table, ``--json`` and the report."""

    source: str
    target: str
    site: str
    started: datetime
    seconds: float
    totals: Mapping[str, int]
    total_bytes: int
    this_run: RunCounts
    complete: bool
    resumed: bool
    workers: int
    interrupted: bool = False
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        instances = sum(
            self.this_run.counts.get(r.value, 0) for r in RESULTS if r != Result.SKIPPED
        )
        rate = instances / self.seconds if self.seconds > 0 else 0.0
        document: dict[str, Any] = {
            "command": "import",
            "source": self.source,
            "target": self.target,
            "site": self.site,
            "started": self.started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "complete": self.complete,
            "resumed": self.resumed,
            "interrupted": self.interrupted,
            "totals": {**_all_counts(self.totals), "bytes": self.total_bytes},
            "this_run": {
                **_all_counts(self.this_run.counts),
                "bytes": self.this_run.bytes_imported,
                "finished_before": self.this_run.skipped_units,
                "instances_per_second": round(rate, 2),
            },
            "reasons": self.this_run.reasons,
        }
        if self.error:
            document["error"] = self.error
        return document

    def print(self, console: Console) -> None:
        table = Table(title=f"import: {self.source} into site {self.site!r} of {self.target}")
        table.add_column("Result", justify="left")
        table.add_column("Total", justify="right")
        table.add_column("This run", justify="right")
        for result in RESULTS:
            total = self.totals.get(result.value, 0)
            table.add_row(result.value, str(total), str(self.this_run.counts.get(result.value, 0)))
        table.add_row("bytes", decimal(self.total_bytes), decimal(self.this_run.bytes_imported))
        console.print(table)
        for name, reasons in sorted(self.this_run.reasons.items()):
            console.print(f"{name} by reason:", markup=False, highlight=False)
            for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
                console.print(f"  {count:>8}  {reason}", markup=False, highlight=False)


def _all_counts(counts: Mapping[str, int]) -> dict[str, int]:
    return {result.value: counts.get(result.value, 0) for result in RESULTS}
