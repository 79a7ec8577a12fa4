"""Terminal output of the operator commands: a progress display, findings, a summary table."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Final

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

# Width of the output when standard output is not a terminal, which rich would make 80.
_PIPED_WIDTH: Final = 200


class Output:
    """Writes findings and the summary as text or, with ``json_lines``, as JSON lines.

    The progress display goes to standard error, and only when it is a terminal and the
    output is text, so piped output contains only findings and the summary.
    """

    def __init__(self, json_lines: bool) -> None:
        self.json_lines = json_lines
        self.console = Console(soft_wrap=True)
        if not self.console.is_terminal:
            self.console = Console(width=_PIPED_WIDTH, soft_wrap=True)
        self._errors = Console(stderr=True)
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    @contextmanager
    def progress(self, description: str) -> Iterator[None]:
        """Show a spinner with the count of finished items while the block runs."""
        display = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("{task.completed} done"),
            TimeElapsedColumn(),
            console=self._errors,
            disable=self.json_lines or not self._errors.is_terminal,
        )
        with display:
            self._progress = display
            self._task = display.add_task(description, total=None)
            try:
                yield
            finally:
                self._progress = None

    def advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def line(self, json_line: str, *columns: str) -> None:
        """Print one finding: ``json_line`` with --json, else ``columns`` separated by spaces."""
        if self.json_lines:
            print(json_line, flush=True)
        else:
            self.console.print("  ".join(column for column in columns if column), markup=False)

    def summary(
        self, title: str, names: Sequence[str], counts: Mapping[str, int], **extra: object
    ) -> None:
        """Print the count of each of ``names``, 0 where ``counts`` has none, and ``extra``."""
        totals = {name: counts.get(name, 0) for name in names}
        if self.json_lines:
            print(json.dumps({"summary": totals, **extra}), flush=True)
            return
        table = Table(title=title)
        table.add_column("Item", justify="left")
        table.add_column("Count", justify="right")
        for name, value in totals.items():
            table.add_row(name, str(value))
        self.console.print(table)

    def error(self, message: str) -> None:
        """Print ``message`` to standard error on one line, so a path in it stays whole."""
        self._errors.print(message, markup=False, highlight=False, soft_wrap=True)
