"""One import run: units of the source imported by worker threads, counted and checkpointed.

The main thread lists the source's units in order and hands them to a thread pool, with at
most twice as many units in flight as there are workers. A worker imports the instances of its
unit and then marks the unit finished in the checkpoint. When the object store or the index
fail (``StoreUnavailableError``), or on Ctrl-C, no further unit starts, the units in flight stop
at their next instance, and the checkpoint is saved: a unit that did not finish is imported
again by the next run, except for the instances of it that the checkpoint lists.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cirrus.bulk_import.checkpoint import ImportCheckpoint
from cirrus.bulk_import.outcome import Outcome, Result
from cirrus.bulk_import.sources import ImportStopped, Source, Unit
from cirrus.bulk_import.writer import NOT_PART10, InstanceImporter

logger = logging.getLogger(__name__)

# Threads suit the work because an instance spends most of its time waiting on the file system,
# the object store and the index: bench/import_folder.py measured 4 workers 2.5 times as fast
# as 1 on 2 cores.
DEFAULT_WORKERS: Final = 4
MAX_WORKERS: Final = 64


# A UID in a reason: digits and at least two dots (PS3.5 9.1). An IPv4 address matches too.
_UID_IN_REASON: Final = re.compile(r"(?<![\d.])\d+(?:\.\d+){2,}(?![\d.])")


def reason_group(reason: str) -> str:
    """Return ``reason`` with each UID replaced by "<UID>", to count similar reasons as one."""
    return _UID_IN_REASON.sub("<UID>", reason)


@dataclass
class RunCounts:
    """The outcomes of this run alone, and their reasons, with the UIDs in them left out."""

    counts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    bytes_imported: int = 0
    skipped_units: int = 0

    def add(self, outcome: Outcome) -> None:
        result = outcome.result
        self.counts[result.value] = self.counts.get(result.value, 0) + 1
        if result in (Result.STORED, Result.REPLACED):
            self.bytes_imported += outcome.size
        if outcome.reason:
            by_reason = self.reasons.setdefault(result.value, {})
            reason = reason_group(outcome.reason)
            by_reason[reason] = by_reason.get(reason, 0) + 1


@dataclass
class RunResult:
    this_run: RunCounts
    complete: bool
    seconds: float


OutcomeCallback = Callable[[Outcome], None]


class _UnitImport:
    """Imports the instances of one unit and counts each outcome once."""

    def __init__(self, run: ImportRun, unit: Unit) -> None:
        self._run = run
        self._unit = unit

    def file(self, path: Path, name: str) -> Outcome:
        self._run.check_running()
        return self._record(self._run.importer.import_file(path, name))

    def data(self, data: bytes, name: str, not_dicom: Result = Result.REJECTED) -> Outcome:
        self._run.check_running()
        if self._run.checkpoint.imported_before(self._unit.key, name):
            return Outcome(name, Result.DUPLICATE, "imported by an earlier run", len(data))
        outcome = self._run.importer.import_bytes(data, name)
        rejected = outcome.result is Result.REJECTED
        if not_dicom is Result.SKIPPED and rejected and outcome.reason == NOT_PART10:
            outcome = Outcome(name, Result.SKIPPED, outcome.reason, outcome.size)
        return self._record(outcome, instance=name)

    def failed(self, name: str, reason: str) -> Outcome:
        return self._record(Outcome(name, Result.FAILED, reason))

    def note(self, name: str, result: Result, reason: str) -> Outcome:
        return self._record(Outcome(name, result, reason))

    def _record(self, outcome: Outcome, instance: str = "") -> Outcome:
        partial = instance if self._unit.tracks_instances else ""
        self._run.record(outcome, self._unit.key, partial)
        return outcome


class ImportRun:
    """Imports every unit of ``source`` not finished before, with ``workers`` threads."""

    def __init__(
        self,
        source: Source,
        importer: InstanceImporter,
        checkpoint: ImportCheckpoint,
        workers: int = DEFAULT_WORKERS,
        on_outcome: OutcomeCallback | None = None,
    ) -> None:
        self.source = source
        self.importer = importer
        self.checkpoint = checkpoint
        self._workers = workers
        self._on_outcome = on_outcome
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self.this_run = RunCounts()

    def check_running(self) -> None:
        if self._stopping.is_set():
            raise ImportStopped

    def record(self, outcome: Outcome, unit: str, instance: str) -> None:
        self.checkpoint.count(outcome.result, outcome.size, unit, instance)
        with self._lock:
            self.this_run.add(outcome)
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def run(self, units: Iterable[Unit]) -> RunResult:
        """Import ``units``, in the source's order; raise a worker's first error or Ctrl-C's."""
        started = time.monotonic()
        slots = threading.BoundedSemaphore(self._workers * 2)
        pool = ThreadPoolExecutor(self._workers, thread_name_prefix="import")
        in_flight: set[Future[None]] = set()

        def done(future: Future[None]) -> None:
            in_flight.discard(future)
            slots.release()

        try:
            for unit in units:
                if self._stopping.is_set():
                    break
                if self.checkpoint.finished_before(unit.key):
                    self.this_run.skipped_units += 1
                    continue
                slots.acquire()
                if self._stopping.is_set():
                    slots.release()
                    break
                self.checkpoint.start(unit.key)
                future = pool.submit(self._import_unit, unit)
                in_flight.add(future)
                future.add_done_callback(done)
            wait(list(in_flight))
        except BaseException:
            self._stop()
            raise
        finally:
            # The units in flight stop at their next instance. Their futures are awaited, not
            # their threads: in CPython 3.11, a Thread.join that Ctrl-C interrupts marks the
            # thread as ended while it still runs, so a second join would return at once.
            for future in list(in_flight):
                future.cancel()
            wait(list(in_flight))
            pool.shutdown(wait=True)
            self.checkpoint.save()
        if self._error is not None:
            raise self._error
        return RunResult(self.this_run, True, time.monotonic() - started)

    def _import_unit(self, unit: Unit) -> None:
        try:
            self.source.import_unit(unit, _UnitImport(self, unit))
        except ImportStopped:
            return
        except BaseException as exc:  # noqa: BLE001 - run() raises it in the main thread
            with self._lock:
                if self._error is None:
                    self._error = exc
            self._stop()
            return
        self.checkpoint.finish(unit.key)

    def _stop(self) -> None:
        self._stopping.set()
        stop = getattr(self.source, "stop", None)
        if callable(stop):
            stop()
