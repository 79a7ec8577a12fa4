"""``cirrus dev`` killed with SIGKILL while instances are in flight loses none it acknowledged.

Two associations send instances to a stack with two gateway worker processes. Once some have
been acknowledged, every process of the stack that writes the data folder (the stack and its
workers) gets SIGKILL at once. After a restart on the same data folder, which rebuilds the
index from the objects:

- every instance that got Success is stored whole and indexed;
- every other instance is absent, or stored whole and indexed (its write finished, but the
  response was lost);
- the index and the objects list the same instances, and no temporary file is left in the
  objects or the spool folder.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import _config
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cirrus.local.datadir import TAGS_FOLDER
from tests.e2e.conftest import RunningStack, start_stack
from tests.gateway.scu import CT_SMALL, associate, dataset_bytes, wait_until
from tests.gateway.test_workers import worker_pids

pytestmark = pytest.mark.timeout(300)

INSTANCES_PER_ASSOCIATION = 150
ASSOCIATIONS = 2
# The kill comes once this many instances have been acknowledged.
ACKNOWLEDGED_BEFORE_KILL = 40
SUCCESS = 0x0000


def write_series(folder: Path, count: int) -> tuple[str, dict[str, Path]]:
    """Write ``count`` copies of CT_small in one new series; return the study and each file."""
    template = pydicom.dcmread(CT_SMALL)
    template.StudyInstanceUID = generate_uid()
    template.SeriesInstanceUID = generate_uid()
    files: dict[str, Path] = {}
    for number in range(count):
        sop = generate_uid()
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = sop
        template.InstanceNumber = number + 1
        path = folder / f"{number:04d}.dcm"
        template.save_as(path, enforce_file_format=True)
        files[sop] = path
    return str(template.StudyInstanceUID), files


def send_until_cut(port: int, paths: list[Path], acknowledged: set[str]) -> None:
    """Send ``paths`` on one association; add each SOP Instance UID that gets Success."""
    with associate(port, [(CTImageStorage, ExplicitVRLittleEndian)]) as assoc:
        try:
            for path in paths:
                if not assoc.is_established:
                    return
                status = assoc.send_c_store(path)
                if "Status" not in status or status.Status != SUCCESS:
                    return
                acknowledged.add(path.stem.split("_", 1)[-1])
        except (RuntimeError, OSError):
            # The association ended under the send.
            return
        finally:
            # An abort, not a release, which would wait for a stack that may be killed.
            if assoc.is_established:
                assoc.abort()


def kill_stack(stack: RunningStack) -> None:
    """SIGKILL the stack and its gateway workers at once, by their process ids."""
    workers = worker_pids(stack.process.pid)
    assert len(workers) == 2, f"expected two gateway workers, found {workers}"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    stack.process.kill()
    stack.process.wait(timeout=30)


def object_files(objects: Path) -> dict[str, Path]:
    """Return the instance files of the data folder by SOP Instance UID."""
    return {path.stem: path for path in objects.rglob("*.dcm")}


def temporary_files(data_dir: Path) -> list[Path]:
    """Return the files of unfinished writes: the object tags under ``.tags`` are not such."""
    objects = data_dir / "objects"
    spool = data_dir / "spool"
    tags = objects / TAGS_FOLDER
    leftovers = [
        p
        for p in objects.rglob("*")
        if p.is_file() and p.suffix != ".dcm" and not p.is_relative_to(tags)
    ]
    return leftovers + [p for p in spool.rglob("*")] if spool.exists() else leftovers


def untagged_objects(objects: Path, stored: dict[str, Path]) -> list[Path]:
    """Return the stored objects without the tags file that their write puts first."""
    return [
        path
        for path in stored.values()
        if not (objects / TAGS_FOLDER / f"{path.relative_to(objects).as_posix()}.json").is_file()
    ]


def test_sigkill_mid_association_loses_nothing_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Send each file's data set as it is, so that the stored bytes can be compared.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    sources = tmp_path / "sources"
    sources.mkdir()
    study, files = write_series(sources, ASSOCIATIONS * INSTANCES_PER_ASSOCIATION)
    named = {}
    for sop, path in files.items():
        renamed = path.with_name(f"{path.stem}_{sop}.dcm")
        path.rename(renamed)
        named[sop] = renamed
    paths = list(named.values())
    data_dir = tmp_path / "data"
    acknowledged: set[str] = set()

    stack = start_stack(data_dir, "--gateway-workers", "2")
    try:
        senders = [
            threading.Thread(
                target=send_until_cut,
                args=(stack.dicom_port, paths[n::ASSOCIATIONS], acknowledged),
            )
            for n in range(ASSOCIATIONS)
        ]
        for sender in senders:
            sender.start()
        reached = wait_until(lambda: len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL, timeout=60)
        kill_stack(stack)
    finally:
        if stack.process.poll() is None:
            stack.process.kill()
            stack.process.wait()
    for sender in senders:
        sender.join(timeout=30)
    acknowledged_at_kill = set(acknowledged)
    stored_before_restart = object_files(data_dir / "objects")

    restarted = start_stack(data_dir, "--gateway-workers", "2")
    try:
        client = DICOMwebClient(url=restarted.dicomweb_url)
        indexed = {
            item["00080018"]["Value"][0]
            for item in client.search_for_instances(study_instance_uid=study)
        }
        stored = object_files(data_dir / "objects")
        leftovers = temporary_files(data_dir)
    finally:
        assert restarted.stop() == 0

    assert reached, f"only {len(acknowledged)} instances acknowledged before the kill"
    assert not any(sender.is_alive() for sender in senders)
    # The kill came while instances were still in flight.
    assert len(acknowledged_at_kill) < len(paths)
    assert acknowledged_at_kill <= stored_before_restart.keys()
    assert acknowledged_at_kill <= indexed
    assert indexed == stored.keys()
    assert leftovers == []
    assert untagged_objects(data_dir / "objects", stored) == []
    for sop, path in stored.items():
        part10 = path.read_bytes()
        assert dataset_bytes(part10) == dataset_bytes(named[sop].read_bytes()), sop
        assert pydicom.dcmread(path).pixel_array.shape == (128, 128), sop
