"""The local stack's start-time rebuild of the index from the data folder.

The rebuild calls ingest directly instead of going through the ingest queue. Its index must
be the one that the queue path builds from the same files: the same records, counts, sets,
claims and ETags.
"""

from __future__ import annotations

import hashlib
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import MRImageStorage, generate_uid

from cirrus.archive import archive_instance
from cirrus.config import Settings
from cirrus.dicomweb.bundle_refresh import BundleRefresher
from cirrus.dicomweb.bundles import MetadataBundles
from cirrus.index.models import INSTANCE, SERIES, STUDY, get_record, series_sk, study_pk
from cirrus.index.writer import MAX_BATCH_INSTANCES, IndexWriter
from cirrus.local.datadir import FolderObjectStore, QueueNotifier
from cirrus.local.moto_process import MotoProcess
from cirrus.local.rebuild import rebuild_index
from cirrus.services import Services
from cirrus.storage.keys import InstanceKey
from tests.integration.index_snapshot import (
    RANDOM_ATTRIBUTES,
    index_snapshot,
    queue_url,
    queued_messages,
    running_poller,
    second_index,
    wait_for,
)
from tests.integration.test_ingest import _instance

# The sequencer is the time of the notification, which differs between the two builds.
_VARYING = (*RANDOM_ATTRIBUTES, "sequencer")
_LARGE_SERIES = MAX_BATCH_INSTANCES + 4


def _mr_instance(study: str, series: str) -> bytes:
    """Return a CT instance relabelled as MR, so its study attributes match the CT ones."""
    ds = pydicom.dcmread(BytesIO(_instance(study, series, "MR")))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _local_services(services: Services, objects: Path) -> Services:
    """Point ``services`` at the files in ``objects``, with the writer that a start uses."""
    notifier = QueueNotifier(services.clients.sqs, queue_url(services), services.settings.bucket)
    services.store = FolderObjectStore(objects, services.settings.bucket, notifier)
    # A start indexes without the change feed, which it completes from the files afterwards.
    services.index_writer = IndexWriter(services.index_model, services.store)
    return services


def _notifier(services: Services) -> QueueNotifier:
    return QueueNotifier(services.clients.sqs, queue_url(services), services.settings.bucket)


class _RecordingRefresher(BundleRefresher):
    """A refresher that also keeps the series of every refresh request that it sends."""

    def __init__(self, services: Services) -> None:
        bundles = MetadataBundles(services.index_model, services.store)
        super().__init__(bundles, services.clients.sqs, queue_url(services))
        self.series: set[tuple[str, str]] = set()

    def schedule(self, key: InstanceKey, version: str) -> None:
        self.series.add((key.study, key.series))
        super().schedule(key, version)


@pytest.fixture
def archived(settings: Settings, tmp_path: Path) -> tuple[Services, dict[str, list[str]]]:
    """Archive three series in two studies, and one file that is not DICOM, in a data folder.

    Returns the services whose queue was notified of each file, and the series of each study.
    """
    services = _local_services(Services(settings), tmp_path / "objects")
    first_study, second_study = generate_uid(), generate_uid()
    large, mr, small = generate_uid(), generate_uid(), generate_uid()
    for _ in range(_LARGE_SERIES):
        archive_instance(services.store, "default", _instance(first_study, large))
    for _ in range(2):
        archive_instance(services.store, "default", _mr_instance(first_study, mr))
    # Each series has one modality, because a series' attributes are those of the instance
    # indexed first, which differs between the two paths.
    for _ in range(3):
        archive_instance(services.store, "default", _instance(second_study, small))
    broken = f"sites/default/studies/{second_study}/series/{small}/instances/1.2.3.dcm"
    services.store.put(broken, b"not a DICOM file")
    return services, {first_study: [large, mr], second_study: [small]}


def _index_through_queue(services: Services) -> None:
    with running_poller(services):
        wait_for(lambda: queued_messages(services) == 0)


def test_rebuild_matches_queue_ingest(
    archived: tuple[Services, dict[str, list[str]]], moto_server: MotoProcess, tmp_path: Path
) -> None:
    through_queue, studies = archived
    _index_through_queue(through_queue)
    expected = index_snapshot(through_queue.index_model, _VARYING)

    rebuilt = _local_services(
        second_index(through_queue.settings, moto_server.endpoint_url), tmp_path / "objects"
    )
    refresher = _RecordingRefresher(rebuilt)
    count = rebuild_index(
        tmp_path / "objects",
        rebuilt.store,
        rebuilt.index_writer,
        _notifier(rebuilt),
        refresher,
    )
    assert count.indexed == _LARGE_SERIES + 2 + 3
    assert count.queued == 1
    _index_through_queue(rebuilt)

    assert index_snapshot(rebuilt.index_model, _VARYING) == expected
    # The file that is not DICOM failed every receive on both paths.
    assert queued_messages(through_queue, dead_letter=True) == 1
    assert queued_messages(rebuilt, dead_letter=True) == 1
    model = rebuilt.index_model
    first_study, second_study = studies
    study = get_record(model, study_pk("default", first_study), STUDY)
    assert study is not None
    assert study.instance_count == _LARGE_SERIES + 2
    assert study.series_count == 2
    assert study.modalities == {"CT", "MR"}
    assert len(study.sop_classes or ()) == 2
    large = get_record(model, study_pk("default", first_study), series_sk(studies[first_study][0]))
    assert large is not None
    assert large.level == SERIES
    assert large.instance_count == _LARGE_SERIES
    small = get_record(
        model, study_pk("default", second_study), series_sk(studies[second_study][0])
    )
    assert small is not None
    assert small.instance_count == 3
    assert small.modalities == {"CT"}
    assert refresher.series == {(s, uid) for s, uids in studies.items() for uid in uids}


def test_rebuild_keeps_etag_and_size(
    archived: tuple[Services, dict[str, list[str]]], tmp_path: Path
) -> None:
    services, _ = archived
    objects = tmp_path / "objects"
    rebuild_index(objects, services.store, services.index_writer, _notifier(services))
    records = [
        record
        for record in services.index_model.scan(consistent_read=True)
        if record.level == INSTANCE
    ]
    assert len(records) == _LARGE_SERIES + 2 + 3
    for record in records:
        body = (objects / str(record.object_key)).read_bytes()
        assert record.etag == hashlib.md5(body, usedforsecurity=False).hexdigest()
        assert record.size == len(body)
        assert record.sequencer
