"""Checkpoint files that let an interrupted ``verify`` or ``reindex`` continue where it stopped.

A checkpoint names the last finished object key (S3 lists keys in order, and ``StartAfter``
continues after it) or, in the pass over the index, the last finished index key (a Scan's
``ExclusiveStartKey``), with the counts so far. It is written to a temporary file that then
replaces the checkpoint, so a crash leaves the old checkpoint or the new one, never half of
one. A run that finishes deletes it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

OBJECTS_PHASE = "objects"
INDEX_PHASE = "index"
STUDIES_PHASE = "studies"
PHASES = (OBJECTS_PHASE, INDEX_PHASE, STUDIES_PHASE)

_Record = TypeVar("_Record")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, invalid, or belongs to another command or scope."""


@dataclass
class Progress:
    """The position of a run and its counts so far."""

    phase: str = OBJECTS_PHASE
    # The last object key finished in the objects phase.
    after_key: str = ""
    # The key of the last index record finished in the index or studies phase, as DynamoDB
    # returns it.
    after_record: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount


class Checkpoint:
    """The checkpoint file of one command on one scope (a key prefix); no file when None."""

    def __init__(self, path: Path | None, command: str, scope: str, every: int = 500) -> None:
        self.path = path
        self._command = command
        self._scope = scope
        self._every = every
        self._unsaved = 0

    def load(self) -> Progress:
        """Return the saved progress, or a fresh one when there is no checkpoint file."""
        if self.path is None:
            return Progress()
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return Progress()
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {self.path} is unreadable: {exc}; delete it to start over"
            ) from exc
        if not isinstance(document, dict):
            raise self._invalid(f"a JSON {type(document).__name__} instead of an object")
        if document.get("command") != self._command or document.get("scope") != self._scope:
            raise CheckpointError(
                f"checkpoint {self.path} belongs to `{document.get('command')}` on "
                f"{document.get('scope')!r}, not `{self._command}` on {self._scope!r}; give "
                "another --checkpoint or delete that file"
            )
        problem = _shape_problem(document)
        if problem:
            raise self._invalid(problem)
        return Progress(
            phase=document["phase"],
            after_key=document["after_key"],
            after_record=document["after_record"],
            counts=dict(document["counts"]),
        )

    def _invalid(self, problem: str) -> CheckpointError:
        return CheckpointError(
            f"checkpoint {self.path} is invalid: {problem}; delete it to start over"
        )

    def step(self, progress: Progress) -> None:
        """Count one finished item; save ``progress`` after every ``every`` of them."""
        self._unsaved += 1
        if self._unsaved >= self._every:
            self.save(progress)

    def save(self, progress: Progress) -> None:
        if self.path is None:
            return
        document = {
            "command": self._command,
            "scope": self._scope,
            "phase": progress.phase,
            "after_key": progress.after_key,
            "after_record": progress.after_record,
            "counts": progress.counts,
        }
        write_atomically(self.path, document)
        self._unsaved = 0

    def finish(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def write_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as JSON to a temporary file, flush it to disk, then rename it to ``path``.

    A crash leaves the previous file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(document, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _shape_problem(document: dict[str, Any]) -> str:
    """Return what is wrong with the fields of a checkpoint document, or "" when nothing is."""
    phase = document.get("phase")
    if phase not in PHASES:
        return f"phase {phase!r} is not one of {', '.join(PHASES)}"
    if not isinstance(document.get("after_key"), str):
        return "after_key is missing or not a string"
    if "after_record" not in document:
        return "after_record is missing"
    if document["after_record"] is not None and not isinstance(document["after_record"], dict):
        return "after_record is neither null nor an object"
    counts = document.get("counts")
    if not isinstance(counts, dict):
        return "counts is missing or not an object"
    for name, value in counts.items():
        # bool is a subclass of int, but true or false is no count.
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"count {name!r} is {value!r}, not a whole number >= 0"
    return ""


class Run:
    """The progress of one ``verify`` or ``reindex`` run, saved to its checkpoint as it goes.

    Used as a context manager: on exit the progress is saved, and after a run that ends
    without an exception the checkpoint file is deleted.
    """

    def __init__(self, checkpoint: Checkpoint, advance: Callable[[], None]) -> None:
        self.checkpoint = checkpoint
        self.progress = checkpoint.load()
        self._advance = advance

    def in_phase(self, phase: str) -> bool:
        return self.progress.phase == phase

    def finished_object(self, key: str) -> None:
        """Record ``key`` as the last finished object of the objects phase."""
        self.progress.after_key = key
        self._step()

    def records(self, listing: Iterator[tuple[_Record, dict[str, Any]]]) -> Iterator[_Record]:
        """Yield each record of a Scan, and mark it finished once the caller has processed it."""
        for record, position in listing:
            yield record
            self.progress.after_record = position
            self._step()

    def start_phase(self, phase: str) -> None:
        """Save the progress at the start of ``phase``, from the first record of its Scan."""
        self.progress.phase, self.progress.after_record = phase, None
        self.checkpoint.save(self.progress)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.checkpoint.save(self.progress)
        if exc_type is None:
            self.checkpoint.finish()

    def _step(self) -> None:
        self.checkpoint.step(self.progress)
        self._advance()
