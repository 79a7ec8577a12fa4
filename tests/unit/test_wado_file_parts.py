"""Series retrieves staged from the local stack's archive files, against the buffered body.

Where the object store keeps instances as files, each part sent as stored goes to the transfer
store as its file, and only transcoded parts are read. The staged body must be the body that
``build_instances`` returns, byte for byte, with the same boundary.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from cirrus.dicomweb.delivery import stage_parts
from cirrus.dicomweb.multipart import (
    FilePart,
    Part,
    build_multipart_related,
    multipart_media_type,
    parse_multipart_related,
)
from cirrus.dicomweb.wado import DICOM_MEDIA_TYPE, InstancePlan, build_instances, plan_instances
from cirrus.index.reader import InstanceRef
from cirrus.local.datadir import FolderObjectStore
from cirrus.local.transfers import FolderTransferStore

SITE = "default"
ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
# Without a transfer-syntax parameter, Explicit VR Little Endian (PS3.18 8.7.3.3).
DEFAULT_SYNTAX = 'multipart/related; type="application/dicom"'
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRLittleEndian]


class SeriesReader:
    """The one call of ``IndexReader`` that ``plan_instances`` makes for a series."""

    def __init__(self, refs: list[InstanceRef]) -> None:
        self._refs = refs

    def instances(self, site: str, study: str, series: str | None = None) -> list[InstanceRef]:
        return self._refs


def encode(study: str, series: str, number: int, syntax: str) -> tuple[str, bytes]:
    """Return the SOP Instance UID and Part 10 bytes of a small CT image in ``syntax``."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.InstanceNumber = "CT", number
    ds.Rows, ds.Columns = 16, 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.arange(256, dtype="<u2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    with BytesIO() as buffer:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return ds.SOPInstanceUID, buffer.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> FolderObjectStore:
    return FolderObjectStore(tmp_path / "objects", "bucket")


@pytest.fixture
def transfers(tmp_path: Path) -> FolderTransferStore:
    return FolderTransferStore(tmp_path / "transfers", "bucket", "http://127.0.0.1:8080")


@pytest.fixture
def refs(store: FolderObjectStore) -> list[InstanceRef]:
    """Store a series of three instances, one of them in Implicit VR Little Endian."""
    study, series = generate_uid(), generate_uid()
    refs = []
    for number, syntax in enumerate(SYNTAXES, start=1):
        sop, part10 = encode(study, series, number, syntax)
        key = f"sites/{SITE}/studies/{study}/series/{series}/instances/{sop}.dcm"
        store.put(key, part10)
        refs.append(
            InstanceRef(
                site=SITE,
                study=study,
                series=series,
                sop=sop,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                object_key=key,
                transfer_syntax=str(syntax),
                size=len(part10),
                pixel_offset=None,
                pixel_length=None,
            )
        )
    return refs


def plan_of(refs: list[InstanceRef], accept: str) -> InstancePlan:
    reader = SeriesReader(refs)
    return plan_instances(reader, SITE, refs[0].study, refs[0].series, accept=accept)  # type: ignore[arg-type]


def staged_body(transfers: FolderTransferStore, parts: list[Part | FilePart]) -> tuple[bytes, str]:
    """Stage ``parts``; return the staged body and its Content-Type."""
    url, size = stage_parts(transfers, SITE, parts, DICOM_MEDIA_TYPE)
    file, stored_size, content_type = transfers.open(urlsplit(url).path.lstrip("/"))
    with file:
        body = file.read()
    assert stored_size == size == len(body)
    assert content_type is not None
    return body, content_type


def test_stored_syntax_sent_as_files(store: FolderObjectStore, refs: list[InstanceRef]) -> None:
    parts = list(plan_of(refs, ANY_SYNTAX).parts(store))

    assert [type(part) for part in parts] == [FilePart, FilePart, FilePart]
    assert [part.path for part in parts if isinstance(part, FilePart)] == [
        store.local_file(ref.object_key) for ref in refs
    ]
    assert [part.content_type for part in parts] == [
        f"application/dicom; transfer-syntax={syntax}" for syntax in SYNTAXES
    ]


def test_transcoded_part_read(store: FolderObjectStore, refs: list[InstanceRef]) -> None:
    parts = list(plan_of(refs, DEFAULT_SYNTAX).parts(store))

    assert [type(part) for part in parts] == [FilePart, Part, FilePart]
    transcoded = parts[1]
    assert isinstance(transcoded, Part)
    ds = pydicom.dcmread(BytesIO(transcoded.body))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPInstanceUID == refs[1].sop


@pytest.mark.parametrize("accept", [ANY_SYNTAX, DEFAULT_SYNTAX])
def test_staged_body_equals_buffered(
    store: FolderObjectStore,
    transfers: FolderTransferStore,
    refs: list[InstanceRef],
    accept: str,
) -> None:
    plan = plan_of(refs, accept)
    body, content_type = staged_body(transfers, list(plan.parts(store)))

    buffered = build_instances(store, plan)
    boundary = multipart_media_type(content_type).param("boundary")
    assert boundary is not None
    expected_parts = parse_multipart_related(buffered.content_type, buffered.body).parts
    expected = build_multipart_related(expected_parts, DICOM_MEDIA_TYPE, boundary)
    assert content_type == expected[1]
    assert body == expected[0]
    assert len(expected_parts) == len(refs)
