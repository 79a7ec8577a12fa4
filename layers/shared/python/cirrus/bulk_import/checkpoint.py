"""The checkpoint of an import: which units of the source are finished, and the counts so far.

A unit is what the source lists: a file, a ZIP member, or a study. Units are listed in a fixed
order (``Source.order``), but workers finish them out of order. The checkpoint therefore keeps
the last unit before which every unit is finished (``after``), the finished units after it
(``done``, at most about the number of units in flight), and, for each unfinished study, the
SOP Instance UIDs already imported (``partial``). A resumed run skips all of these, so no
instance is counted twice. The file is written as ``cirrus.operations.checkpoint`` writes
its own: to a temporary file that then replaces it. A run that finishes deletes it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cirrus.bulk_import.outcome import Result
from cirrus.operations.checkpoint import CheckpointError, write_atomically

COMMAND: Final = "import"


@dataclass
class ImportState:
    """The finished units and counts of an import, as a checkpoint saves them."""

    after: str | None = None
    done: set[str] = field(default_factory=set)
    partial: dict[str, set[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    bytes_imported: int = 0

    def to_json(self, scope: str) -> dict[str, Any]:
        return {
            "command": COMMAND,
            "scope": scope,
            "after": self.after,
            "done": sorted(self.done),
            "partial": {unit: sorted(uids) for unit, uids in self.partial.items()},
            "counts": self.counts,
            "bytes": self.bytes_imported,
        }


def parse_state(document: object, path: Path, scope: str) -> ImportState:
    """Return the state in a checkpoint document; raise ``CheckpointError`` if it is invalid."""

    def invalid(problem: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} is invalid: {problem}; delete it to start over")

    if not isinstance(document, dict):
        raise invalid(f"a JSON {type(document).__name__} instead of an object")
    if document.get("command") != COMMAND or document.get("scope") != scope:
        raise CheckpointError(
            f"checkpoint {path} belongs to `{document.get('command')}` on "
            f"{document.get('scope')!r}, not `{COMMAND}` on {scope!r}; give another "
            "--checkpoint or delete that file"
        )
    after, done, partial = document.get("after"), document.get("done"), document.get("partial")
    if after is not None and not isinstance(after, str):
        raise invalid("after is neither null nor a string")
    if not isinstance(done, list) or not all(isinstance(unit, str) for unit in done):
        raise invalid("done is not a list of strings")
    if not isinstance(partial, dict) or not all(
        isinstance(uids, list) and all(isinstance(uid, str) for uid in uids)
        for uids in partial.values()
    ):
        raise invalid("partial is not an object of lists of strings")
    counts, size = document.get("counts"), document.get("bytes")
    if not isinstance(counts, dict) or not all(_is_count(value) for value in counts.values()):
        raise invalid("counts is not an object of whole numbers >= 0")
    unknown = set(counts) - {result.value for result in Result}
    if unknown:
        raise invalid(f"counts has unknown results {sorted(unknown)}")
    if not isinstance(size, int) or not _is_count(size):
        raise invalid("bytes is not a whole number >= 0")
    return ImportState(
        after=after,
        done=set(done),
        partial={unit: set(uids) for unit, uids in partial.items()},
        counts=dict(counts),
        bytes_imported=size,
    )


def _is_count(value: object) -> bool:
    # bool is a subclass of int, but true or false is no count.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class ImportCheckpoint:
    """Tracks finished units and saves them to the checkpoint file; no file when ``path`` is None.

    ``order`` maps a unit key to a value that sorts as the source lists its units. Every
    method may be called from any worker thread.
    """

    def __init__(
        self,
        path: Path | None,
        scope: str,
        order: Callable[[str], Hashable],
        every: int = 200,
    ) -> None:
        self.path = path
        self.scope = scope
        self._order = order
        self._every = every
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._unsaved = 0
        # Units started and not yet below the watermark, in the order they were started.
        self._in_flight: list[str] = []
        # Set when the run continues from a checkpoint file.
        self.resumed_from_file = False
        self.state = self._load()

    def _load(self) -> ImportState:
        if self.path is None:
            return ImportState()
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return ImportState()
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {self.path} is unreadable: {exc}; delete it to start over"
            ) from exc
        state = parse_state(document, self.path, self.scope)
        self.resumed_from_file = True
        return state

    def finished_before(self, unit: str) -> bool:
        """Tell whether an earlier run finished ``unit``, which the caller then skips."""
        state = self.state
        if unit in state.done:
            return True
        after = state.after
        return after is not None and self._order(unit) <= self._order(after)  # type: ignore[operator]

    def imported_before(self, unit: str, instance: str) -> bool:
        """Tell whether an earlier run imported ``instance`` of the unfinished ``unit``."""
        with self._lock:
            return instance in self.state.partial.get(unit, ())

    def start(self, unit: str) -> None:
        """Note that ``unit`` is in flight; units must be started in the source's order."""
        with self._lock:
            self._in_flight.append(unit)

    def count(self, result: Result, size: int, unit: str | None = None, instance: str = "") -> None:
        """Count one outcome; ``instance`` of a study ``unit`` is noted as imported."""
        with self._lock:
            state = self.state
            state.counts[result.value] = state.counts.get(result.value, 0) + 1
            if result in (Result.STORED, Result.REPLACED):
                state.bytes_imported += size
            if unit is not None and instance:
                state.partial.setdefault(unit, set()).add(instance)

    def finish(self, unit: str) -> None:
        """Mark ``unit`` finished, and save the checkpoint every ``every`` units."""
        with self._lock:
            state = self.state
            state.partial.pop(unit, None)
            state.done.add(unit)
            # Move the watermark over every finished unit at the head of the in-flight list.
            while self._in_flight and self._in_flight[0] in state.done:
                head = self._in_flight.pop(0)
                state.done.discard(head)
                state.after = head
            self._unsaved += 1
            due = self._unsaved >= self._every
        if due:
            self.save()

    def save(self) -> None:
        if self.path is None:
            return
        # Saves are serialized, so an older document never replaces a newer one.
        with self._save_lock:
            with self._lock:
                document = self.state.to_json(self.scope)
                self._unsaved = 0
            write_atomically(self.path, document)

    def complete(self) -> None:
        """Delete the checkpoint file after a run that finished every unit."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
