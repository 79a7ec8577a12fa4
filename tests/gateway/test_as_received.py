"""The gateway stores each data set byte for byte as pynetdicom sends it from a source file."""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    HTJ2K,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
)
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cirrus.config import Settings
from cirrus.gateway.server import STORAGE_TRANSFER_SYNTAXES, Gateway, build_ae
from cirrus.gateway.status import SUCCESS
from cirrus.services import Services
from cirrus.storage.objects import ObjectStore
from tests.gateway.gateways import OPEN_CONFIG
from tests.gateway.scu import (
    SITE,
    associate,
    dataset_bytes,
    fresh_ct,
    object_key,
    pydicom_file,
    send_file_as_is,
    write_part10,
)

# (pydicom test file, transfer syntax to send it in). None keeps the file's own syntax. The
# gateway never decodes Pixel Data, so an encapsulated data set relabelled with a related
# syntax replaces the syntaxes that no test file uses.
SOURCES = [
    ("CT_small.dcm", None),
    ("MR_small_implicit.dcm", None),
    ("MR_small_bigendian.dcm", None),
    ("image_dfl.dcm", None),
    ("SC_rgb_jpeg_dcmtk.dcm", None),
    ("JPEG-lossy.dcm", None),
    ("SC_rgb_jpeg_gdcm.dcm", None),
    ("SC_rgb_jpeg_gdcm.dcm", JPEGLossless),
    ("MR_small_jpeg_ls_lossless.dcm", None),
    ("MR_small_jpeg_ls_lossless.dcm", JPEGLSNearLossless),
    ("MR_small_jp2klossless.dcm", None),
    ("JPEG2000.dcm", None),
    ("JPEG2000-embedded-sequence-delimiter.dcm", None),
    ("MR_small_jp2klossless.dcm", HTJ2KLossless),
    ("MR_small_jp2klossless.dcm", HTJ2KLosslessRPCL),
    ("JPEG2000.dcm", HTJ2K),
    ("SC_rgb_rle.dcm", None),
    ("test-SR.dcm", None),
    ("waveform_ecg.dcm", None),
    ("MR_small_padded.dcm", None),
]


@pytest.mark.parametrize(("name", "transfer_syntax"), SOURCES)
def test_pynetdicom_stores_data_set_unchanged(
    gateway: Gateway,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str,
    transfer_syntax: str | None,
) -> None:
    source_path = pydicom_file(name)
    source = source_path.read_bytes()
    meta = pydicom.dcmread(source_path, stop_before_pixels=True).file_meta
    syntax = transfer_syntax or meta.TransferSyntaxUID
    sop_class = meta.MediaStorageSOPClassUID
    path = write_part10(
        tmp_path / name, sop_class, meta.MediaStorageSOPInstanceUID, syntax, dataset_bytes(source)
    )

    with associate(gateway.port, [(sop_class, syntax)]) as assoc:
        status = send_file_as_is(monkeypatch, assoc, path)

    assert status.Status == SUCCESS, status.get("ErrorComment")
    stored = archive.get(object_key(SITE, source_path))
    assert dataset_bytes(stored) == dataset_bytes(source)
    stored_meta = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored), stop_before_pixels=True)
    assert stored_meta.file_meta.TransferSyntaxUID == syntax


def test_all_transfer_syntaxes_accepted(gateway: Gateway) -> None:
    contexts = [(CTImageStorage, syntax) for syntax in STORAGE_TRANSFER_SYNTAXES]

    with associate(gateway.port, contexts) as assoc:
        accepted = {context.transfer_syntax[0] for context in assoc.accepted_contexts}

    assert len(STORAGE_TRANSFER_SYNTAXES) == 16
    assert accepted == set(STORAGE_TRANSFER_SYNTAXES)


def test_every_storage_class_supported(gateway_settings: Settings) -> None:
    ae = build_ae(Services(gateway_settings), OPEN_CONFIG)

    supported = {context.abstract_syntax: context for context in ae.supported_contexts}

    for storage in AllStoragePresentationContexts:
        context = supported[storage.abstract_syntax]
        assert context.transfer_syntax == list(STORAGE_TRANSFER_SYNTAXES), storage.abstract_syntax


def test_negotiation_prefers_lossless_and_avoids_lossy(gateway: Gateway) -> None:
    contexts = [
        (CTImageStorage, [ExplicitVRLittleEndian, JPEGLSLossless, JPEGBaseline8Bit]),
        (CTImageStorage, [JPEGBaseline8Bit, ExplicitVRLittleEndian]),
    ]

    with associate(gateway.port, contexts) as assoc:
        accepted = [context.transfer_syntax[0] for context in assoc.accepted_contexts]

    assert accepted == [JPEGLSLossless, ExplicitVRLittleEndian]


def test_concurrent_associations_all_stored(
    gateway: Gateway, archive: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    instances = [fresh_ct(tmp_path) for _ in range(12)]
    statuses: list[int] = []

    def send(batch: list[tuple[Path, str]]) -> None:
        with associate(gateway.port, [(CTImageStorage, ExplicitVRLittleEndian)]) as assoc:
            statuses.extend(send_file_as_is(monkeypatch, assoc, path).Status for path, _ in batch)

    senders = [threading.Thread(target=send, args=(instances[i::4],)) for i in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=30)

    assert statuses == [SUCCESS] * len(instances)
    for _, key in instances:
        assert archive.size(key) > 0
