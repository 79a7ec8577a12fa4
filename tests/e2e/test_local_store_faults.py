"""``cirrus dev`` whose data folder fails to write: senders get failures, and nothing is kept.

Two faults of the file system, each made from outside the running stack:

- the folder that contains every site's objects is replaced by a file, so that each write of an
  object fails with ENOTDIR before its temporary file exists;
- the stack's file size limit (RLIMIT_FSIZE, set with ``prlimit``) is lowered below the size
  of an instance, so that each write fails with EFBIG in the middle, as on a full disk. The
  gateway spools a C-STORE data set before it stores it, so there the spool write fails.

During each fault a C-STORE gets 0xA700 with an Error Comment and a STOW-RS gets 503 with
Retry-After and 0xA700. No object, temporary file or spool file is left, and QIDO finds
nothing. Once the fault is removed, the same requests store both instances.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.e2e.conftest import RunningStack, start_stack, wait_for_instances
from tests.gateway.scu import CT_SMALL, associate

pytestmark = pytest.mark.timeout(180)

OUT_OF_RESOURCES = 0xA700
SUCCESS = 0x0000
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
# Below the size of CT_small (about 39 kB), so that writes fail after their first bytes.
FILE_SIZE_LIMIT = 16 * 1024
# Where the objects of the sites wait while a file takes the place of their folder.
MOVED_SITES = "sites-moved-by-test"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # One gateway process, the stack's own, so that its file size limit applies to the gateway.
    running = start_stack(tmp_path_factory.mktemp("data"), "--gateway-workers", "1")
    yield running
    assert running.stop() == 0


def fresh_ct() -> Dataset:
    ds = pydicom.dcmread(CT_SMALL)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def c_store(port: int, ds: Dataset) -> Dataset:
    with associate(port, [(CTImageStorage, ExplicitVRLittleEndian)], timeout=30) as assoc:
        return assoc.send_c_store(ds)


def stow(url: str, ds: Dataset) -> requests.Response:
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds)
    body = b"--f\r\nContent-Type: application/dicom\r\n\r\n" + buffer.getvalue() + b"\r\n--f--"
    content_type = 'multipart/related; type="application/dicom"; boundary=f'
    return requests.post(
        f"{url}/studies", data=body, headers={"Content-Type": content_type}, timeout=60
    )


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def written_objects(stack: RunningStack) -> list[Path]:
    """Return the instance files and the temporary files of writes in the objects folder."""
    return [
        path
        for path in files_under(stack.data_dir / "objects")
        if (path.suffix == ".dcm" or path.name.startswith(".incoming-"))
        and MOVED_SITES not in path.parts
    ]


@contextmanager
def objects_folder_replaced_by_file(stack: RunningStack) -> Iterator[None]:
    """Replace the folder of every site's objects with a file for the duration."""
    sites = stack.data_dir / "objects" / "sites"
    moved = sites.with_name(MOVED_SITES)
    if sites.exists():
        sites.rename(moved)
    sites.write_bytes(b"")
    try:
        yield
    finally:
        sites.unlink()
        if moved.exists():
            moved.rename(sites)


@contextmanager
def file_size_limited(stack: RunningStack) -> Iterator[None]:
    """Lower the stack's RLIMIT_FSIZE below one instance for the duration."""
    pid = stack.process.pid
    before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, before[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, before)


# Each fault, and the Error Comment of the C-STORE that it fails.
FAULTS: dict[str, tuple[Callable[[RunningStack], AbstractContextManager[None]], str]] = {
    "objects folder not a folder": (
        objects_folder_replaced_by_file,
        "archive storage is unavailable; retry later",
    ),
    "file size limit": (
        file_size_limited,
        "the gateway could not spool the data set: File too large",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_write_fault_fails_then_recovers(stack: RunningStack, fault: str) -> None:
    stored_c_store, stored_stow = fresh_ct(), fresh_ct()
    objects_before = written_objects(stack)
    client = DICOMwebClient(url=stack.dicomweb_url)

    make_fault, comment = FAULTS[fault]

    with make_fault(stack):
        refused = c_store(stack.dicom_port, stored_c_store)
        rejected = stow(stack.dicomweb_url, stored_stow)
        objects_during = written_objects(stack)
        spool_during = files_under(stack.data_dir / "spool")
    found_after_fault = [
        client.search_for_instances(study_instance_uid=ds.StudyInstanceUID)
        for ds in (stored_c_store, stored_stow)
    ]
    stored = c_store(stack.dicom_port, stored_c_store)
    accepted = stow(stack.dicomweb_url, stored_stow)

    assert refused.Status == OUT_OF_RESOURCES
    assert refused.ErrorComment == comment
    assert rejected.status_code == 503, rejected.text
    assert int(rejected.headers["Retry-After"]) > 0
    body = rejected.json()
    if FAILED_SOP_SEQUENCE in body:
        (failed,) = body[FAILED_SOP_SEQUENCE]["Value"]
        assert failed[FAILURE_REASON]["Value"] == [OUT_OF_RESOURCES]
    else:
        # The file size limit also stops the audit journal once it reaches the limit, and a
        # request whose audit record cannot be written fails with 503 as a whole.
        assert fault == "file size limit", body
        assert "audit journal" in rejected.text, body
    assert objects_during == objects_before
    assert spool_during == []
    assert found_after_fault == [[], []]
    assert stored.Status == SUCCESS
    assert accepted.status_code == 200, accepted.text
    for ds in (stored_c_store, stored_stow):
        (found,) = wait_for_instances(client, ds.StudyInstanceUID, 1)
        assert found["00080018"]["Value"] == [ds.SOPInstanceUID]
