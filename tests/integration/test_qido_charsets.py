"""QIDO-RS on pydicom's bundled character set files: stored, returned as UTF-8, matched as text.

Each file is ingested into a site of its own (several share their UIDs). The person name that
QIDO returns must equal what pydicom decodes, group by group, and a search by each group's
value, and by its first component with a wildcard, must find the study.
"""

from __future__ import annotations

import uuid
from io import BytesIO
from pathlib import Path

import pydicom
import pytest

from cirrus.archive import archive_instance
from cirrus.config import ResourceNames, Settings
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.moto_process import MotoProcess
from cirrus.local.resources import create_resources
from cirrus.services import Services
from tests.pydicom_files import TEST_FILES

BASE = "http://127.0.0.1/dicomweb"
# Every charset file that is a whole instance; the chrSQEncoding files hold only a sequence.
FILES = sorted(
    path
    for path in (TEST_FILES.parent / "charset_files").glob("chr*.dcm")
    if not path.name.startswith("chrSQEncoding")
)
GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


@pytest.fixture(scope="module")
def services(moto_server: MotoProcess) -> Services:
    names = ResourceNames(deployment=f"charset{uuid.uuid4().hex[:8]}")
    return Services(
        create_resources(Settings.for_names(names, endpoint_url=moto_server.endpoint_url))
    )


def _part10(path: Path) -> bytes:
    """Return the file, with a one-pixel image added when it has none (the archive needs one).

    Elements that are not changed keep their raw bytes, so the names stay in their encoding.
    """
    ds = pydicom.dcmread(path)
    if "PixelData" in ds:
        return path.read_bytes()
    ds.Rows = ds.Columns = 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = b"\x00\x00"
    ds["PixelData"].VR = "OB"
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _ingest(services: Services, path: Path) -> tuple[str, pydicom.Dataset]:
    site = f"cs{path.stem.lower()}"
    data = _part10(path)
    stored = archive_instance(services.store, site, data)
    event = ObjectEvent(stored.key.object_key, etag=stored.stored.etag)
    ingest_object(services.store, services.index_writer, event)
    return site, pydicom.dcmread(path, stop_before_pixels=True)


def _decoded_groups(ds: pydicom.Dataset) -> dict[str, str]:
    name = ds.PatientName
    values = {
        "Alphabetic": name.alphabetic,
        "Ideographic": name.ideographic,
        "Phonetic": name.phonetic,
    }
    return {group: value for group, value in values.items() if value}


def _search(services: Services, site: str, **params: str) -> list[dict[str, object]]:
    result = services.qido.search(
        site=site,
        level="STUDY",
        params={name: [value] for name, value in params.items()},
        base_url=BASE,
    )
    return result.matches


def test_charset_files_found() -> None:
    assert len(FILES) >= 15


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_charset_name_returned_and_matched(services: Services, path: Path) -> None:
    site, ds = _ingest(services, path)
    [match] = _search(services, site, StudyInstanceUID=ds.StudyInstanceUID)
    [returned] = match["00100010"]["Value"]  # type: ignore[index]
    expected = _decoded_groups(ds)
    assert returned == expected
    for group, value in expected.items():
        found = _search(services, site, PatientName=value)
        assert len(found) == 1, f"{group} {value!r}"
        first_component = value.split("^")[0]
        found = _search(services, site, PatientName=f"{first_component}*")
        assert len(found) == 1, f"{group} {first_component!r}*"
    missing = _search(services, site, PatientName="Nobody^Here")
    assert missing == []
