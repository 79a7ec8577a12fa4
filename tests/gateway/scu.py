"""Senders for the gateway tests: dcmtk's echoscu and storescu, and pynetdicom as an SCU."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, _config
from pynetdicom.association import Association

from cirrus.config import DEFAULT_AE_TITLE
from cirrus.local.moto_process import LOOPBACK
from cirrus.storage.keys import InstanceKey, site_prefix
from cirrus.storage.objects import ObjectStore

# The site of every gateway in this suite.
SITE = "gateway-test"


def pydicom_file(name: str) -> Path:
    """Return the path of one of pydicom's test files."""
    path = get_testdata_file(name)
    assert isinstance(path, str), f"pydicom has no test file {name}"
    return Path(path)


CT_SMALL = pydicom_file("CT_small.dcm")
DCMTK_TIMEOUT_SECONDS = 30

# The storescu option that proposes each transfer syntax, so that storescu sends a file in its
# own syntax instead of converting it (dcmtk 3.6.7).
STORESCU_PROPOSE = {
    ExplicitVRLittleEndian: "-xe",
    ImplicitVRLittleEndian: "-xi",
    ExplicitVRBigEndian: "-xb",
    DeflatedExplicitVRLittleEndian: "-xd",
    JPEGBaseline8Bit: "-xy",
    JPEGExtended12Bit: "-xx",
    JPEGLosslessSV1: "-xs",
    JPEGLSLossless: "-xt",
    JPEGLSNearLossless: "-xu",
    JPEG2000Lossless: "-xv",
    JPEG2000: "-xw",
    RLELossless: "-xr",
}


def run_dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool with 10 s timeouts and with Nagle's algorithm off."""
    return subprocess.run(
        [tool, "-to", "10", "-ta", "10", "-td", "10", *args],
        capture_output=True,
        text=True,
        timeout=DCMTK_TIMEOUT_SECONDS,
        env={**os.environ, "TCP_NODELAY": "1"},
        check=False,
    )


def storescu(port: int, *paths: Path | str, options: tuple[str, ...] = ()) -> str:
    """Send ``paths`` with storescu to ``port`` and return storescu's output."""
    result = run_dcmtk(
        "storescu", *options, "-aec", DEFAULT_AE_TITLE, LOOPBACK, str(port), *map(str, paths)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"storescu failed with {result.returncode}: {output}"
    return output


def dataset_bytes(part10: bytes) -> bytes:
    """Return the encoded data set of a Part 10 object: everything after its file meta."""
    fp = BytesIO(part10)
    read_preamble(fp, False)
    read_dataset(fp, False, True, stop_when=lambda tag, vr, length: tag.group != 0x0002)
    return part10[fp.tell() :]


def object_key(site: str, path: Path | str) -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return InstanceKey(
        site, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    ).object_key


def write_part10(
    path: Path, sop_class: str, sop_instance: str, transfer_syntax: str, dataset: bytes
) -> Path:
    """Write ``dataset`` unchanged behind a file meta that names the given UIDs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    with path.open("wb") as fp:
        fp.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        fp.write(dataset)
    return path


def fresh_ct(tmp_path: Path, site: str = SITE) -> tuple[Path, str]:
    """Write CT_small with new UIDs and return its path and object key."""
    ds = pydicom.dcmread(CT_SMALL)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    key = InstanceKey(site, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    return path, key.object_key


def stored_objects(archive: ObjectStore, site: str = SITE) -> dict[str, str]:
    """Return the ETag of every object of ``site``, so that a replaced object shows too."""
    return {stored.key: stored.etag for stored in archive.list_keys(site_prefix(site))}


@contextmanager
def associate(
    port: int,
    contexts: Sequence[tuple[str, str | list[str]]],
    ae_title: str = DEFAULT_AE_TITLE,
    timeout: float = 10,
) -> Iterator[Association]:
    """Open an association that requests ``contexts`` (SOP class, transfer syntaxes).

    ``timeout`` sets the ACSE, DIMSE and network time-outs, in seconds.
    """
    ae = AE("TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, transfer_syntax in contexts:
        ae.add_requested_context(sop_class, transfer_syntax)
    assoc = ae.associate(LOOPBACK, port, ae_title=ae_title)
    assert assoc.is_established, "the gateway did not accept the association"
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def send_file_as_is(monkeypatch: pytest.MonkeyPatch, assoc: Association, path: Path) -> Dataset:
    """Send the data set of the Part 10 file ``path`` without decoding it, and return the status.

    With STORE_SEND_CHUNKED_DATASET, pynetdicom 3 takes the UIDs of the request from the file
    meta and sends the bytes after it as they are, so the data set may be anything.
    """
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    return assoc.send_c_store(path)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it returns true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
