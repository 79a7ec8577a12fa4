"""C-FIND on pydicom's bundled character set files: names matched and returned correctly encoded.

Each file is ingested into a site of its own, queried by a caller of that site (several files
share their UIDs). The index keeps names as Unicode, so a response must encode them again: in
UTF-8 when the request names no character set, and in the request's character set when it
names one that can encode them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from cirrus.config import Settings
from cirrus.gateway.aeconfig import AEConfig, SiteAEs
from cirrus.services import Services
from tests.gateway.find_archive import find, identifier, matches
from tests.gateway.gateways import start_gateway
from tests.gateway.retrieves import archive
from tests.pydicom_files import TEST_FILES

# Every charset file that is a whole instance; the chrSQEncoding files hold only a sequence.
FILES = sorted(
    path
    for path in (TEST_FILES.parent / "charset_files").glob("chr*.dcm")
    if not path.name.startswith("chrSQEncoding")
)
CALLERS = {path.name: f"CS{number:02d}" for number, path in enumerate(FILES)}
CONFIG = AEConfig(
    sites={
        f"find-cs{number:02d}": SiteAEs(callers={CALLERS[path.name]: frozenset({"query"})})
        for number, path in enumerate(FILES)
    }
)


def _instance(path: Path) -> Dataset:
    """Read a file, adding a one-pixel image when it has none (the archive needs one)."""
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        ds.Rows = ds.Columns = 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = b"\x00\x00"
        ds["PixelData"].VR = "OB"
    return ds


@pytest.fixture(scope="module")
def port(gateway_settings: Settings) -> Iterator[int]:
    services = Services(gateway_settings)
    for number, path in enumerate(FILES):
        archive(services, f"find-cs{number:02d}", _instance(path))
    with start_gateway(gateway_settings, config=CONFIG) as gateway:
        yield gateway.port


def _groups(name: object) -> tuple[str, str, str]:
    assert isinstance(name, pydicom.valuerep.PersonName)
    return (name.alphabetic, name.ideographic, name.phonetic)


def test_charset_files_found() -> None:
    assert len(FILES) >= 15


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_name_returned_in_utf8(port: int, path: Path) -> None:
    source = pydicom.dcmread(path, stop_before_pixels=True)
    query = identifier("STUDY", StudyInstanceUID=source.StudyInstanceUID, PatientName=None)
    [match] = matches(find(port, query, calling_ae=CALLERS[path.name]))
    assert _groups(match.PatientName) == _groups(source.PatientName)
    if str(source.PatientName).isascii():
        assert "SpecificCharacterSet" not in match
    else:
        assert match.SpecificCharacterSet == "ISO_IR 192"


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_name_matched_in_request_charset(port: int, path: Path) -> None:
    source = pydicom.dcmread(path, stop_before_pixels=True)
    name = source.PatientName
    # The ideographic group, where a file has one, is the part that needs its character set.
    value = name.ideographic or name.alphabetic
    query = Dataset()
    query.SpecificCharacterSet = source.SpecificCharacterSet
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = value
    query.StudyInstanceUID = ""
    [match] = matches(find(port, query, calling_ae=CALLERS[path.name]))
    assert match.StudyInstanceUID == source.StudyInstanceUID
    assert _groups(match.PatientName) == _groups(name)
    if not str(name).isascii():
        assert match.SpecificCharacterSet == source.SpecificCharacterSet
    query.PatientName = "Nobody^Here"
    assert matches(find(port, query, calling_ae=CALLERS[path.name])) == []


def test_unencodable_request_charset_falls_back(port: int) -> None:
    [path] = [path for path in FILES if path.name == "chrRuss.dcm"]
    source = pydicom.dcmread(path, stop_before_pixels=True)
    query = identifier("STUDY", StudyInstanceUID=source.StudyInstanceUID, PatientName=None)
    # Latin-1 has no Cyrillic letters, so the response is in UTF-8.
    query.SpecificCharacterSet = "ISO_IR 100"
    [match] = matches(find(port, query, calling_ae=CALLERS[path.name]))
    assert match.SpecificCharacterSet == "ISO_IR 192"
    assert _groups(match.PatientName) == _groups(source.PatientName)
