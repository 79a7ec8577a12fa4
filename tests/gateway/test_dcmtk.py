"""The gateway against dcmtk's echoscu and storescu over loopback associations.

storescu decodes each file and encodes it again for the network: it writes sequences with
defined lengths, encapsulated Pixel Data as OB, drops Data Set Trailing Padding and deflates
with its own settings. What it sends is therefore taken from dcmtk's storescp in bit-preserving
mode (+B), which writes the data set exactly as received. The comparison with the source files
themselves is in test_as_received.py, where pynetdicom sends the files' bytes unchanged.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from cirrus.config import DEFAULT_AE_TITLE
from cirrus.gateway.server import Gateway
from cirrus.local.moto_process import LOOPBACK
from cirrus.storage.objects import ObjectStore
from tests.gateway.scu import (
    SITE,
    STORESCU_PROPOSE,
    dataset_bytes,
    object_key,
    pydicom_file,
    run_dcmtk,
    storescu,
    wait_until,
)
from tests.peers.orthanc import build_shim

# pydicom test files, at least one for each transfer syntax that storescu can propose.
STORED_FILES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",
    "rtplan.dcm",  # implicit VR, no Pixel Data
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",  # deflated
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "JPEG-lossy.dcm",  # JPEG extended
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG2000.dcm",  # JPEG 2000, which may be lossy
    "SC_rgb_rle.dcm",
    "test-SR.dcm",
    "waveform_ecg.dcm",  # 291 KB, many PDUs
]


@dataclass
class ReferenceSCP:
    """dcmtk's storescp writing every received data set bit for bit into ``directory``."""

    port: int
    directory: Path

    def received(self) -> bytes:
        (path,) = self.directory.iterdir()
        return path.read_bytes()

    def clear(self) -> None:
        for path in self.directory.iterdir():
            path.unlink()


@pytest.fixture(scope="module")
def reference_scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceSCP]:
    directory = tmp_path_factory.mktemp("storescp")
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    # dcmtk 3.6.7 cannot choose its listening address, so the shim binds it to 127.0.0.1.
    shim = build_shim(tmp_path_factory.mktemp("shim"))
    process = subprocess.Popen(
        ["storescp", "+B", "+xa", "-aet", DEFAULT_AE_TITLE, "-od", str(directory), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "LD_PRELOAD": str(shim)},
    )
    try:
        echo = ("echoscu", "-aec", DEFAULT_AE_TITLE, LOOPBACK, str(port))
        assert wait_until(lambda: run_dcmtk(*echo).returncode == 0), "storescp did not start"
        yield ReferenceSCP(port, directory)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_echoscu_succeeds(gateway: Gateway) -> None:
    result = run_dcmtk("echoscu", "-aec", DEFAULT_AE_TITLE, LOOPBACK, str(gateway.port))

    assert result.returncode == 0, result.stderr


def test_echoscu_unknown_called_ae_rejected(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cirrus.gateway")

    result = run_dcmtk("echoscu", "-aec", "NOT-CIRRUS", LOOPBACK, str(gateway.port))

    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.stderr
    assert wait_until(lambda: bool(_records(caplog, "association from")))
    (record,) = _records(caplog, "association from")
    assert record.levelno == logging.WARNING
    assert record.called_ae == "NOT-CIRRUS"
    assert record.reason == "Called AE title not recognised"


@pytest.mark.parametrize("name", STORED_FILES)
def test_storescu_stores_data_set_as_sent(
    gateway: Gateway, archive: ObjectStore, reference_scp: ReferenceSCP, name: str
) -> None:
    path = pydicom_file(name)
    transfer_syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    options = (STORESCU_PROPOSE[transfer_syntax],)
    reference_scp.clear()
    storescu(reference_scp.port, path, options=options)

    storescu(gateway.port, path, options=options)

    stored = archive.get(object_key(SITE, path))
    assert dataset_bytes(stored) == dataset_bytes(reference_scp.received())
    stored_meta = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored), stop_before_pixels=True)
    assert stored_meta.file_meta.TransferSyntaxUID == transfer_syntax


def test_storescu_several_files_one_association(
    gateway: Gateway, archive: ObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cirrus")
    paths = [pydicom_file(name) for name in ("CT_small.dcm", "rtplan.dcm", "test-SR.dcm")]

    storescu(gateway.port, *paths)

    for path in paths:
        assert archive.size(object_key(SITE, path)) > 0
    assert wait_until(lambda: bool(_records(caplog, "association released")))
    (released,) = _records(caplog, "association released")
    assert released.stored == 3
    assert released.rejected == 0
    assert released.calling_ae == "STORESCU"
    assert len(_records(caplog, "instance stored")) == 3


def test_logs_contain_no_patient_data(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cirrus")
    caplog.set_level(logging.DEBUG, logger="pynetdicom")
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)

    storescu(gateway.port, path)

    assert wait_until(lambda: bool(_records(caplog, "association released")))
    logged = "\n".join(f"{record.getMessage()} {vars(record)}" for record in caplog.records)
    for keyword in ("PatientName", "PatientID"):
        value = str(ds.get(keyword, ""))
        assert value, f"the test file has no {keyword}"
        assert value not in logged, f"{keyword} appears in the log"


def _records(caplog: pytest.LogCaptureFixture, prefix: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage().startswith(prefix)]
