"""The local stack's rebuild of the index, at start, from the instances in its data folder.

moto keeps the index in memory, so each start indexes every saved instance again. Sent through
the ingest queue, each instance cost a message, a receive and a delete, and moto 5.2.5 counts
the queue's messages, walking all of them, in each send and receive, so the rate fell as the
folder grew. This rebuild calls ingest's ``BatchIngest`` directly instead. It indexes the
first instance of each series alone and the rest in groups of at most ``MAX_BATCH_INSTANCES``,
one transaction each. The records are the ones that the queue path writes: the ETag (the MD5
of the file), size, sequencer, claims, aggregates and refresh requests for the metadata
bundles. docs/benchmarks.md has the start times before and after.

An instance that this pass cannot index goes through the ingest queue as before, so it gets
the queue's retries and, when it fails every one, ingest logs it and the dead-letter queue
keeps its notification (``cirrus redrive``). The count names the instances that ingest
rejected as invalid, so that the start need not wait for their retries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cirrus.errors import InvalidInstanceError
from cirrus.index.writer import MAX_BATCH_INSTANCES, IndexWriter
from cirrus.ingest import BatchIngest, ObjectEvent
from cirrus.local.datadir import (
    QueueNotifier,
    md5_of_file,
    remove_partial_files,
    saved_objects,
)
from cirrus.storage.keys import InstanceKey
from cirrus.storage.objects import ObjectStore, StoredObject

if TYPE_CHECKING:
    from cirrus.dicomweb.bundle_refresh import BundleRefresher

logger = logging.getLogger(__name__)

# Studies indexed at once. Each thread spends most of its time waiting for moto, so a few
# overlap those waits. One study at a time per thread keeps the transactions of a study from
# competing for its study record.
REBUILD_THREADS: Final = 4


@dataclass(frozen=True)
class SavedInstance:
    """An instance file of the data folder, with the key that its path names."""

    key: InstanceKey
    object_key: str
    path: Path


@dataclass(frozen=True)
class RebuildCount:
    """Counts of a rebuild: instances indexed directly, and instances left to the ingest queue."""

    indexed: int
    queued: int
    # The object keys of the queued instances, which the queue may fail to index as well.
    queued_keys: tuple[str, ...] = ()
    # The queued instances that ingest rejected as invalid, which the queue rejects again.
    rejected_keys: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return self.indexed + self.queued


def rebuild_index(
    root: Path,
    store: ObjectStore,
    writer: IndexWriter,
    notifier: QueueNotifier,
    refresher: BundleRefresher | None = None,
    threads: int = REBUILD_THREADS,
) -> RebuildCount:
    """Index every instance saved under ``root``, and queue the notifications of the failed ones.

    Returns once every instance is indexed or queued. The caller waits for the queue to drain.
    Raises ``StoreUnavailableError`` when the notifications of failed instances cannot be sent.
    """
    remove_partial_files(root)
    studies = list(_saved_studies(root))
    rebuild = _Rebuild(store, writer, notifier, refresher, studies)
    workers = [
        threading.Thread(target=rebuild.run, name=f"index-rebuild-{number}", daemon=True)
        for number in range(1, min(threads, len(studies)) + 1)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queued = notifier.notify_all(rebuild.failed)
    keys = tuple(obj.key for obj in rebuild.failed)
    return RebuildCount(
        indexed=rebuild.indexed,
        queued=queued,
        queued_keys=keys,
        rejected_keys=tuple(rebuild.rejected),
    )


def _saved_studies(root: Path) -> Iterator[list[list[SavedInstance]]]:
    """Yield the saved instances of each study, as a list of its series' instances.

    ``saved_objects`` yields keys in sorted order, so the instances of one study, and of one
    series within it, come one after the other.
    """
    study: list[list[SavedInstance]] = []
    last_study: tuple[str, str] | None = None
    last_series: str | None = None
    for object_key, path in saved_objects(root):
        key = InstanceKey.parse(object_key)
        if (key.site, key.study) != last_study:
            if study:
                yield study
            study, last_study, last_series = [], (key.site, key.study), None
        if key.series != last_series:
            study.append([])
            last_series = key.series
        study[-1].append(SavedInstance(key, object_key, path))
    if study:
        yield study


class _Rebuild:
    """The work that the rebuild threads share: the studies left, and what they did."""

    def __init__(
        self,
        store: ObjectStore,
        writer: IndexWriter,
        notifier: QueueNotifier,
        refresher: BundleRefresher | None,
        studies: list[list[list[SavedInstance]]],
    ) -> None:
        self._store = store
        self._writer = writer
        self._notifier = notifier
        self._refresher = refresher
        self._studies = iter(studies)
        self._lock = threading.Lock()
        self.indexed = 0
        self.failed: list[StoredObject] = []
        self.rejected: list[str] = []

    def run(self) -> None:
        while True:
            with self._lock:
                study = next(self._studies, None)
            if study is None:
                return
            for series in study:
                # The first instance goes alone, because a series must be indexed before
                # ``BatchIngest`` can write its instances together. The index starts empty.
                self._index_group(series[:1])
                for start in range(1, len(series), MAX_BATCH_INSTANCES):
                    self._index_group(series[start : start + MAX_BATCH_INSTANCES])

    def _index_group(self, group: list[SavedInstance]) -> None:
        """Index the instances of one series in ``group`` as one ingest batch."""
        events: list[ObjectEvent] = []
        failed: list[StoredObject] = []
        for saved in group:
            try:
                size = saved.path.stat().st_size
                etag = md5_of_file(saved.path)
            except OSError as exc:
                # The queue path reads the file again, and ingest logs the error if it recurs.
                logger.warning(
                    "read of a saved instance failed; it goes through the ingest queue",
                    extra={"path": str(saved.path), "error": str(exc)},
                )
                failed.append(StoredObject(saved.object_key, 0, etag=""))
                continue
            sequencer = self._notifier.next_sequencer()
            events.append(ObjectEvent(saved.object_key, size, etag, sequencer))
        batch = BatchIngest(self._store, self._writer, self._refresher)
        batch.run(events)
        indexed = 0
        rejected: list[str] = []
        for event in events:
            try:
                batch.ingest(event)
            except Exception as exc:  # noqa: BLE001
                if isinstance(exc, InvalidInstanceError):
                    rejected.append(event.key)
                # The ingest handler fails a message on any error, and so the queue path below
                # retries the instance, logs its error and keeps it in the dead-letter queue.
                logger.debug(
                    "instance left to the ingest queue",
                    extra={"object_key": event.key, "error": type(exc).__name__},
                )
                failed.append(StoredObject(event.key, event.size or 0, etag=event.etag or ""))
                continue
            indexed += 1
        batch.send_refreshes()
        with self._lock:
            self.indexed += indexed
            self.failed += failed
            self.rejected += rejected
