"""pydicom's bundled test files as a corpus for the end-to-end test.

Each file is either a storage instance to send, in its own transfer syntax, or skipped with
the reason it cannot be one. Files that share a SOP Instance UID would replace each other in
the archive, so the corpus is sent in rounds that each hold one file per instance key.
"""

from __future__ import annotations

import os
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from cirrus.gateway.server import STORAGE_TRANSFER_SYNTAXES
from tests.pydicom_files import TEST_FILES, all_bundled

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
REJECTED_WITHOUT_PIXELS = "an image without Pixel Data, which the archive rejects with 0xA900"


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    study: str
    series: str
    sop: str
    sop_class: str
    transfer_syntax: str
    patient_id: str | None
    modality: str | None

    @property
    def name(self) -> str:
        return self.path.relative_to(TEST_FILES).as_posix()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.study, self.series, self.sop)


def read_file(path: Path) -> pydicom.Dataset:
    """Read a file as pydicom does, and a data set without file meta as pydicom can with force.

    storescu sends both kinds: it detects the encoding of a data set without file meta itself.
    """
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, force=True)
        if "SOPClassUID" not in ds:
            raise
        return ds


def classify(path: Path) -> CorpusFile | str:
    """Return the file as a corpus entry, or the reason it is not a storage instance."""
    try:
        ds = read_file(path)
    except Exception as exc:  # pydicom raises many types for files it cannot read
        return f"pydicom cannot read it ({type(exc).__name__})"

    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY:
        return "a DICOMDIR, not an instance"

    uids = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = ds.get(keyword)
        if not value:
            return f"no {keyword}"
        uids[keyword] = str(value)

    if not isinstance(uid_to_service_class(uids["SOPClassUID"]), type) or not issubclass(
        uid_to_service_class(uids["SOPClassUID"]), StorageServiceClass
    ):
        return f"SOP Class {uids['SOPClassUID']} is not a storage SOP class"

    pixel_tags = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    if ds.SOPClassUID.name.endswith("Image Storage") and not any(t in ds for t in pixel_tags):
        return REJECTED_WITHOUT_PIXELS
    if "PixelData" in ds:
        pixel = ds.get_item("PixelData")
        if pixel.length != 0xFFFFFFFF and len(pixel.value or b"") < pixel.length:
            return "truncated inside Pixel Data"

    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not syntax:
        implicit, little = ds.original_encoding
        syntax = (
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little
            else ExplicitVRBigEndian
        )
    if syntax not in STORAGE_TRANSFER_SYNTAXES:
        return f"transfer syntax {syntax} is not one the gateway accepts"
    dcmtk = subprocess.run(
        ["dcmdump", "-q", "+P", "0008,0016", str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if b" UI " not in dcmtk.stdout:
        return "dcmtk does not read its SOPClassUID as a UID, so storescu cannot send it"
    errors = dcmtk.stderr.decode(errors="replace")
    if dcmtk.returncode != 0 or "E: " in errors:
        first_error = next((line for line in errors.splitlines() if "E: " in line), "")
        return f"dcmtk cannot read it, so storescu cannot send it ({first_error.strip()})"

    return CorpusFile(
        path=path,
        study=uids["StudyInstanceUID"],
        series=uids["SeriesInstanceUID"],
        sop=uids["SOPInstanceUID"],
        sop_class=uids["SOPClassUID"],
        transfer_syntax=syntax,
        patient_id=ds.get("PatientID"),
        modality=ds.get("Modality"),
    )


def load_corpus() -> tuple[list[CorpusFile], dict[str, str]]:
    """Return the sendable files and, by name, the reason each other file is skipped."""
    files: list[CorpusFile] = []
    skipped: dict[str, str] = {}
    for path in all_bundled():
        if path.suffix.lower() not in (".dcm", "") and path.name != "DICOMDIR":
            skipped[path.relative_to(TEST_FILES).as_posix()] = "not a DICOM file by its name"
            continue
        entry = classify(path)
        if isinstance(entry, str):
            skipped[path.relative_to(TEST_FILES).as_posix()] = entry
        else:
            files.append(entry)
    return files, skipped


def rounds(files: list[CorpusFile]) -> list[list[CorpusFile]]:
    """Split ``files`` into rounds in which no two files share an instance key."""
    by_key: dict[tuple[str, str, str], list[CorpusFile]] = defaultdict(list)
    for entry in files:
        by_key[entry.key].append(entry)
    depth = max((len(group) for group in by_key.values()), default=0)
    return [
        [group[index] for group in by_key.values() if index < len(group)] for index in range(depth)
    ]


def storescu_config(entry: CorpusFile, folder: Path) -> Path:
    """Write a storescu configuration that proposes only the file's SOP class and syntax."""
    path = folder / f"{entry.sop}.cfg"
    path.write_text(
        "[[TransferSyntaxes]]\n[Own]\n"
        f"TransferSyntax1 = {entry.transfer_syntax}\n"
        "[[PresentationContexts]]\n[Contexts]\n"
        f"PresentationContext1 = {entry.sop_class}\\Own\n"
        "[[Profiles]]\n[Corpus]\nPresentationContexts = Contexts\n"
    )
    return path


def send_with_storescu(
    entry: CorpusFile, port: int, folder: Path
) -> subprocess.CompletedProcess[str]:
    config = storescu_config(entry, folder)
    timeouts = ["-to", "10", "-ta", "10", "-td", "30"]
    profile = ["--config-file", str(config), "Corpus"]
    peer = ["-aec", "CIRRUS", "127.0.0.1", str(port)]
    return subprocess.run(
        ["storescu", *timeouts, *profile, *peer, str(entry.path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TCP_NODELAY": "1"},
        check=False,
    )
